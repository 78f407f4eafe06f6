"""Several training processes, for real: `accelerate launch` with the shipped launch/ddp.yaml starts two
`phi3lab train` processes on the CPU (gloo) training a tiny random Phi-3; one of them publishes; a killed
launcher takes its workers with it and a relaunch resumes. Plus the launch commands and the rank rules."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from evaluation_fixtures import make_tiny_phi3
from test_training import write_chat_files

from phi3lab.config import TrainConfig
from phi3lab.models import CACHE_FORMAT, MANIFEST, OFFLINE_MODEL
from phi3lab.runs import LAUNCH_NAME
from phi3lab.training import TrainingError
from phi3lab.training.checkpoints import complete_checkpoints
from phi3lab.training.distributed import (
    Ranks,
    _claim_device,
    check_same_processes,
    describe_launch,
    launch_record,
    on_main,
    ranks,
    single_process_cpu_launch,
)
from phi3lab.training.launch import LAUNCH_DIR, cluster_from_environment, first_host, launch_command
from phi3lab.training.trainer import train


# ----- a tiny model the launched processes load as the stand-in ------------------------------------------
@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    """A model cache whose stand-in is a 2-layer random Phi-3 (with the stand-in's tokenizer): seconds per run."""
    cache = tmp_path_factory.mktemp("cache")
    folder = make_tiny_phi3(cache / "models" / OFFLINE_MODEL)
    files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    (folder / MANIFEST).write_text(json.dumps({"format": CACHE_FORMAT, "source": "tiny test model", "files": files}))
    return cache


@pytest.fixture
def env(tiny_cache, tmp_path, monkeypatch) -> dict:
    monkeypatch.setenv("PHI3LAB_CACHE", str(tiny_cache))
    monkeypatch.setenv("PHI3LAB_RUNS", str(tmp_path / "runs"))
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def tiny_config(folder: Path, n_train: int, **overrides) -> TrainConfig:
    train_file, validation_file = write_chat_files(folder, n_train=n_train, n_validation=4)
    values = dict(model=OFFLINE_MODEL, train_file=str(train_file), validation_file=str(validation_file),
                  epochs=1, max_steps=-1, batch_size=2, max_seq_length=64, lora_r=4, lora_alpha=8,
                  learning_rate=1e-3, target_modules=["qkv_proj", "o_proj"], eval_steps=2, save_steps=2,
                  logging_steps=1, run_name="run")
    return TrainConfig.create(**{**values, **overrides})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(config_file: Path, env: dict, processes: int = 2, *extra: str) -> subprocess.Popen:
    """`accelerate launch --config_file launch/ddp.yaml --num_processes N ... -m phi3lab train`, as phi3lab builds it."""
    command = launch_command(config_file, processes, port=free_port())
    executable = str(Path(sys.executable).with_name(command[0]))
    return subprocess.Popen([executable, *command[1:], "--no-progress", *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        _kill_group(process)
    assert process.returncode == 0, out[-4000:]
    return out


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def train_steps(run) -> list[int]:
    return [r["step"] for r in json.loads(run.history_file.read_text())["records"] if r["split"] == "train"]


# ----- two processes, for real ---------------------------------------------------------------------------
def test_two_processes_write_one_run_with_the_steps_of_one_process(tmp_path, env):
    config = tiny_config(tmp_path, n_train=16)  # 16 conversations, global batch 2 × 2 processes: 4 steps
    run = config.run
    out = finish(launch(config.save(tmp_path / "config.yaml"), env, 2, "--adapter-out", str(tmp_path / "job-output")))

    assert out.count("adapter saved to") == 1 and out.count("adapter copied to") == 1 and out.count("steps: 4") == 1  # printed once, by the main process
    assert out.count("note: training on 2 processes: global batch 4 = 2 per device × 2 processes") == 1
    summary = json.loads(run.summary_file.read_text())
    assert (summary["steps"], summary["processes"], summary["global_batch_size"]) == (4, 2, 4)
    assert summary["trained_tokens"] > 0 and summary["non_pad_tokens_per_second"] > 0
    assert [p.name for p in run.folder.iterdir() if p.name.startswith("adapter")] == ["adapter"]
    copied = {p.name for p in (tmp_path / "job-output").iterdir()}  # what an Azure job registers as its model
    assert {"adapter_model.safetensors", "history.json", "summary.json"} <= copied
    assert train_steps(run) == [1, 2, 3, 4]  # one history, each step once (not one copy per process)
    records = json.loads(run.history_file.read_text())["records"]
    assert records and all(math.isfinite(r["loss"]) for r in records)
    assert complete_checkpoints(run) == run.checkpoint_dirs() != [] and not run.staging_dir.exists()
    for checkpoint in complete_checkpoints(run):
        names = {p.name for p in checkpoint.iterdir()}
        assert {"rng_state_0.pth", "rng_state_1.pth", LAUNCH_NAME} <= names
        assert json.loads((checkpoint / LAUNCH_NAME).read_text())["processes"] == 2

    one = train(config.update(batch_size=4, run_name="one-process"), progress=False)  # the same global batch
    assert one.summary["steps"] == summary["steps"] and one.summary["global_batch_size"] == 4
    assert one.summary["trained_tokens"] == summary["trained_tokens"]  # both processes' tokens are counted


def test_a_killed_launcher_takes_its_workers_along_and_a_relaunch_resumes(tmp_path, env):
    config = tiny_config(tmp_path, n_train=32, epochs=2, eval_steps=4)  # 16 steps
    config_file = config.save(tmp_path / "config.yaml")
    run = config.run
    first = launch(config_file, env)
    try:
        deadline = time.monotonic() + 240
        while not complete_checkpoints(run) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert complete_checkpoints(run), first.communicate()[0][-4000:]
        workers = psutil.Process(first.pid).children(recursive=True)
        first.send_signal(signal.SIGKILL)  # the launcher only, as an out-of-memory killer or a preemption would
        first.wait()
        _, alive = psutil.wait_procs(workers, timeout=20)
        assert not alive, f"workers outlived their launcher: {alive}"
    finally:
        _kill_group(first)
    killed_at = int(complete_checkpoints(run)[-1].name.split("-")[1])
    assert killed_at < 16 and not run.adapter_dir.exists()

    with pytest.raises(TrainingError, match=r"trained by 2 processes, and this launch has 1.*--num_processes 2"):
        train(config, progress=False)  # the wrong process count is refused before any model loads

    out = finish(launch(config_file, env))
    summary = json.loads(run.summary_file.read_text())
    assert (summary["steps"], summary["resumed_from_step"]) == (16, killed_at), out[-2000:]
    assert train_steps(run) == list(range(1, 17))  # nothing lost, nothing repeated
    validation_steps = [r["step"] for r in json.loads(run.history_file.read_text())["records"]
                        if r["split"] == "validation"]
    assert validation_steps.count(0) == 1 and validation_steps[-1] == 16
    assert len(complete_checkpoints(run)) <= 2 and not run.staging_dir.exists()


# ----- the rules, without launching -------------------------------------------------------------------
def test_ranks_come_from_the_launchers_environment():
    assert ranks({}) == Ranks(0, 0, 1, 1) and ranks({}).main and not ranks({}).distributed
    place = ranks({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"})
    assert place == Ranks(3, 1, 4, 2) and place.distributed and not place.main
    assert ranks({"RANK": "1", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}).local_world_size == 0  # Azure ML sets no count
    with pytest.raises(TrainingError, match="WORLD_SIZE='two', which is not a number"):
        ranks({"WORLD_SIZE": "two"})


def test_a_cpu_launch_that_started_one_process_is_named():
    started_by_accelerate_cpu = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert single_process_cpu_launch(started_by_accelerate_cpu)
    assert not single_process_cpu_launch({**started_by_accelerate_cpu, "WORLD_SIZE": "2"})
    assert not single_process_cpu_launch({**started_by_accelerate_cpu, "OMPI_COMM_WORLD_SIZE": "2"})  # mpirun
    assert not single_process_cpu_launch({"ACCELERATE_USE_CPU": "True"})  # --num_processes 1


def test_more_processes_than_gpus_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(TrainingError, match=r"2 training processes .* 1 GPU\(s\).*--num_processes 1"):
        _claim_device(Ranks(1, 1, 2, 2))
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    assert _claim_device(Ranks(1, 0, 2, 0)) == "cuda"  # two machines with one GPU each, as Azure ML launches them
    with pytest.raises(TrainingError, match=r"2 training processes .* 1 GPU\(s\)"):
        _claim_device(Ranks(3, 1, 4, 0))  # local rank 1 on a one-GPU machine


def test_fsdp_without_a_gpu_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(TrainingError, match="FSDP .* needs a GPU per process.*launch/ddp.yaml"):
        _claim_device(Ranks(0, 0, 2, 2))


def test_resume_needs_the_process_count_the_checkpoint_was_trained_with(tmp_path):
    checkpoint = tmp_path / "checkpoint-4"
    checkpoint.mkdir()
    check_same_processes(checkpoint, Ranks())  # no record: an older checkpoint, trained by one process
    (checkpoint / LAUNCH_NAME).write_text(json.dumps(launch_record(TrainConfig(), Ranks(0, 0, 4, 4))))
    check_same_processes(checkpoint, Ranks(2, 2, 4, 4))
    with pytest.raises(TrainingError, match=r"trained by 4 processes, and this launch has 2.*--fresh"):
        check_same_processes(checkpoint, Ranks(1, 1, 2, 2))


def test_the_global_batch_is_per_device_times_processes_times_accumulation():
    record = launch_record(TrainConfig(batch_size=4, grad_accum=2), Ranks(0, 0, 8, 4))
    assert record == {"processes": 8, "per_device_batch_size": 4, "grad_accum": 2, "global_batch_size": 64}
    assert describe_launch(record) == "global batch 64 = 4 per device × 8 processes × 2 accumulation steps"


def test_one_process_runs_main_only_work_itself():
    assert on_main(lambda a, b: a + b, 2, 3) == 5


def test_the_main_process_decides_and_every_process_gets_its_answer_or_its_error(tmp_path):
    """Two processes in a gloo group, without a model: on_main's result and error reach both, sums add up."""
    import torch.multiprocessing as mp

    mp.spawn(_group_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    seen = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
    assert seen[0]["main_pid"] == seen[1]["main_pid"] == seen[0]["pid"] != seen[1]["pid"]
    assert seen[0]["error"] == seen[1]["error"] == "refused on the main process"
    assert seen[0]["tokens"] == seen[1]["tokens"] == 3.0


def _group_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist

    from phi3lab.training.distributed import total_over_processes

    dist.init_process_group("gloo")
    seen = {"pid": os.getpid(), "main_pid": on_main(os.getpid)}
    try:
        on_main(_refuse)
    except TrainingError as exc:
        seen["error"] = str(exc)
    seen["tokens"] = total_over_processes(rank + 1)
    Path(out, f"{rank}.json").write_text(json.dumps(seen))
    dist.destroy_process_group()


def _refuse():
    raise TrainingError("refused on the main process")


def test_a_worker_dies_with_its_launcher(tmp_path):
    """The launcher (a parent process) is SIGKILLed; its worker asked Linux to follow it."""
    if sys.platform != "linux":
        pytest.skip("parent-death signals are Linux's")
    worker = ("import time; from phi3lab.training.distributed import stop_with_launcher; stop_with_launcher(); "
              "print('ready', flush=True); time.sleep(60)")
    launcher = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {worker!r}]); "
                f"print(p.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        child = psutil.Process(int(parent.stdout.readline()))
        assert parent.stdout.readline().strip() == "ready"  # the worker shares its launcher's stdout
        parent.kill()
        parent.wait()
        child.wait(timeout=10)  # psutil.TimeoutExpired here: the worker outlived its launcher
    finally:
        _kill_group(parent)


# ----- launch commands ------------------------------------------------------------------------------------
def test_one_machine_uses_the_shipped_ddp_config_and_one_gpu_needs_no_launcher():
    assert launch_command("c.yaml", 4, environ={}) == [
        "accelerate", "launch", "--config_file", str(LAUNCH_DIR / "ddp.yaml"), "--num_processes", "4",
        "--num_machines", "1", "-m", "phi3lab", "train", "--config", "c.yaml"]
    assert launch_command("c.yaml", 1, environ={}) == ["phi3lab", "train", "--config", "c.yaml"]
    assert str(LAUNCH_DIR / "fsdp.yaml") in launch_command("c.yaml", 2, strategy="fsdp", environ={})
    with pytest.raises(TrainingError, match="unknown strategy 'zero3'"):
        launch_command("c.yaml", 2, strategy="zero3", environ={})
    with pytest.raises(TrainingError, match="gpus=0"):
        launch_command("c.yaml", 0, environ={})


def test_several_machines_take_their_rank_and_the_main_address_from_slurm():
    slurm = {"SLURM_NNODES": "2", "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[03-04]"}
    command = launch_command("c.yaml", 4, environ=slurm)
    assert command[command.index("--num_processes") + 1] == "8" and command[command.index("--num_machines") + 1] == "2"
    assert command[command.index("--machine_rank") + 1] == "1"
    assert command[command.index("--main_process_ip") + 1] == "gpu03"
    assert command[command.index("--main_process_port") + 1] == "29500"
    assert cluster_from_environment({**slurm, "MASTER_ADDR": "10.0.0.4"}).main_address == "10.0.0.4"


def test_several_machines_under_azure_ml_per_node_launch():
    azure = {"NODE_RANK": "0", "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "6105", "AZUREML_NODE_COUNT": "2"}
    command = launch_command("c.yaml", 2, environ=azure)
    assert command[command.index("--main_process_ip") + 1: command.index("--main_process_port") + 2] == [
        "10.0.0.5", "--main_process_port", "6105"]
    with pytest.raises(TrainingError, match="2 machines need the main machine's address.*MASTER_ADDR"):
        launch_command("c.yaml", 2, environ={"NODE_RANK": "1", "NNODES": "2"})


def test_slurm_node_lists():
    assert first_host("gpu[03-04,07],cpu1") == "gpu03"
    assert first_host("node7") == "node7"
    assert first_host("a100-[1-2]") == "a100-1"


@pytest.mark.parametrize("name, kind", [("ddp.yaml", "MULTI_GPU"), ("fsdp.yaml", "FSDP")])
def test_the_shipped_launch_configs_load_in_accelerate(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file
    from transformers.models.phi3 import modeling_phi3

    config = load_config_from_file(str(LAUNCH_DIR / name))
    assert str(config.distributed_type).endswith(kind) and config.mixed_precision == "no"
    if kind == "FSDP":  # the layer it wraps exists, and checkpoints stay whole files that resume can check
        assert hasattr(modeling_phi3, config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"])
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
