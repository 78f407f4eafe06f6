"""Which process am I? Rank-aware training under ``accelerate launch``, torchrun, SLURM and Azure ML.

Every launcher starts the same ``phi3lab train`` once per process and tells each one its place in the
environment: ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and ``LOCAL_WORLD_SIZE`` (torchrun and
``accelerate launch`` set them, and so does Azure ML's PyTorch distribution). From them:

- each process takes its device from its local rank before the model loads (local rank k: GPU k);
  on a machine without GPUs the processes train on the CPU and talk over gloo;
- the processes join one group at once, so the main process (rank 0) alone prepares the run folder
  and decides where to resume while the others wait, and every process gets its decision (``on_main``);
- only the main process writes what the processes share (checkpoints, adapter, history, summary);
- a process whose launcher died stops too, instead of training on as an orphan that races a relaunch;
- a resume needs the process count its checkpoint was trained with (``LAUNCH_NAME`` records it):
  the data is split by process, so another count would skip or repeat examples.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from ..runs import LAUNCH_NAME
from .errors import TrainingError, notice

TRAINER_DDP_TIMEOUT_S = 1800
USE_CPU_ENV = "ACCELERATE_USE_CPU"  # accelerate and Trainer read it: processes on the CPU talk over gloo
_MPI_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (one process: all zeros and ones)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1  # processes on this machine; 0: the launcher did not say (Azure ML does not)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def ranks(environ=None) -> Ranks:
    """The ranks the launcher put in the environment (a plain ``python -m phi3lab train`` is process 0 of 1)."""
    environ = os.environ if environ is None else environ

    def number(name: str, default: int) -> int:
        try:
            return int(environ.get(name, default))
        except ValueError:
            raise TrainingError(f"the launcher set {name}={environ[name]!r}, which is not a number. Fix: launch "
                                f"with `accelerate launch` or torchrun, which set it for each process.") from None

    world = number("WORLD_SIZE", 1)
    return Ranks(number("RANK", 0), number("LOCAL_RANK", 0), world, number("LOCAL_WORLD_SIZE", 1 if world == 1 else 0))


def is_main_process() -> bool:
    """True in a single process and in rank 0: the one process that prints and writes shared files."""
    return ranks().main


def single_process_cpu_launch(environ=None) -> bool:
    """``accelerate launch --cpu --num_processes N``: without MPI, accelerate starts ONE process for it (it sets
    the main address for N processes but no ranks), so the learner would silently train alone."""
    environ = os.environ if environ is None else environ
    return (environ.get(USE_CPU_ENV, "").lower() == "true" and "MASTER_PORT" in environ
            and "WORLD_SIZE" not in environ and not any(name in environ for name in _MPI_SIZE_VARIABLES))


SINGLE_CPU_LAUNCH_NOTE = (
    "`accelerate launch --cpu --num_processes N` started a single process: without MPI, accelerate starts several "
    "CPU processes only through torchrun. Training on one process; for several, run `accelerate launch --multi_gpu "
    "--num_processes N ...` (on a machine without GPUs phi3lab trains them on the CPU over gloo) or `phi3lab launch`")


# ----- joining: the device and the process group, before the model loads ------------------------------
def join(place: Ranks) -> str:
    """This process's device ("cuda", "mps" or "cpu"), chosen before the model loads. With several processes,
    also: die with the launcher, claim GPU ``local_rank`` (or the CPU), and join the process group now."""
    from ..models import pick_device

    if not place.distributed:
        return pick_device()
    stop_with_launcher()
    device = _claim_device(place)
    from accelerate import PartialState

    # Trainer later builds its own state on this same group (PartialState reuses an initialised group), so the
    # group gets the timeout Trainer would give it (TrainingArguments.ddp_timeout's default).
    PartialState(cpu=device == "cpu", timeout=timedelta(seconds=TRAINER_DDP_TIMEOUT_S))
    return device


def _claim_device(place: Ranks) -> str:
    import torch

    if not torch.cuda.is_available():
        if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
            raise TrainingError("FSDP (launch/fsdp.yaml) needs a GPU per process, and this machine has none. Fix: "
                                "launch with launch/ddp.yaml (`phi3lab launch --strategy ddp`), which also runs on "
                                "the CPU, or on a machine with GPUs.")
        os.environ[USE_CPU_ENV] = "true"
        return "cpu"
    gpus = torch.cuda.device_count()
    here = place.local_world_size or place.local_rank + 1  # at least this many processes run on this machine
    if here > gpus:
        raise TrainingError(
            f"{here} training processes were started on this machine, but it has {gpus} GPU(s): "
            f"each process needs its own GPU. Fix: start one process per GPU (`accelerate launch --num_processes "
            f"{gpus} ...` on one machine, or `phi3lab launch --gpus {gpus}`).")
    torch.cuda.set_device(place.local_rank)  # every later "cuda" (model, device map, NCCL) means this GPU
    return "cuda"


def stop_with_launcher() -> None:
    """Ask Linux to kill this process when its launcher dies (a SIGKILLed launcher cannot stop its workers)."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    parent = os.getppid()
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the launcher died before the request was in place
        os.kill(os.getpid(), signal.SIGKILL)


# ----- working together ---------------------------------------------------------------------------
def _group_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in a single process)."""
    if ranks().distributed and _group_ready():
        import torch.distributed as dist

        dist.barrier()


def on_main(function, *args):
    """Run ``function`` on the main process only, while the others wait; every process gets its result, or
    raises its error (so a refusal stops all processes with the same message, not with a hang)."""
    if not (ranks().distributed and _group_ready()):
        return function(*args)
    import torch.distributed as dist

    outcome = [None]
    if is_main_process():
        try:
            outcome[0] = (True, function(*args))
        except Exception as exc:  # handed to every process below, then raised everywhere
            outcome[0] = (False, exc)
    dist.broadcast_object_list(outcome, src=0)
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def total_over_processes(value: float) -> float:
    """The sum of ``value`` over all processes (each process counts only the tokens it trained on)."""
    if not (ranks().distributed and _group_ready()):
        return value
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item())


# ----- the global batch, recorded with the run ----------------------------------------------------------
def launch_record(config, place: Ranks) -> dict:
    """How the run is launched: processes and the global batch (per-device batch × processes × accumulation)."""
    return {"processes": place.world_size, "per_device_batch_size": config.batch_size,
            "grad_accum": config.grad_accum,
            "global_batch_size": config.batch_size * place.world_size * config.grad_accum}


def announce_launch(record: dict, notices: list[str] | None = None) -> dict:
    """Say once how the run is launched (and when a CPU launch silently started a single process)."""
    if single_process_cpu_launch():
        notice(SINGLE_CPU_LAUNCH_NOTE, notices)
    if record["processes"] > 1:
        notice(f"training on {record['processes']} processes: {describe_launch(record)}", notices)
    return record


def launch_summary(launch: dict, summary: dict) -> dict:
    """The launch and the tokens of all processes (each process's meter counts only its own share); every
    process must call this."""
    tokens = total_over_processes(summary["trained_tokens"])
    seconds = summary["train_seconds"]
    return {**launch, "trained_tokens": int(tokens),
            "non_pad_tokens_per_second": round(tokens / seconds, 1) if seconds else 0.0}


def describe_launch(record: dict) -> str:
    processes = record["processes"]
    return (f"global batch {record['global_batch_size']} = {record['per_device_batch_size']} per device × "
            f"{processes} process{'es' if processes != 1 else ''} × {record['grad_accum']} accumulation "
            f"step{'s' if record['grad_accum'] != 1 else ''}")


def saved_launch(checkpoint: Path) -> dict:
    """The launch a checkpoint was trained with (checkpoints from before this record: one process)."""
    path = Path(checkpoint) / LAUNCH_NAME
    if not path.is_file():
        return {"processes": 1}
    return json.loads(path.read_text(encoding="utf-8"))


def check_same_processes(checkpoint: Path, place: Ranks) -> None:
    """Refuse to resume ``checkpoint`` with another number of processes, saying how to go on."""
    saved = saved_launch(checkpoint)["processes"]
    if saved == place.world_size:
        return
    raise TrainingError(
        f"{checkpoint.name} in {checkpoint.parent} was trained by {saved} process{'es' if saved != 1 else ''}, "
        f"and this launch has {place.world_size}. Resuming needs the same number: the training data is split "
        f"by process, so another count would skip or repeat examples. Fix: launch again with {saved} "
        f"process{'es' if saved != 1 else ''} (`accelerate launch --num_processes {saved} ...`; "
        f"{'a plain `phi3lab train`' if saved == 1 else f'`phi3lab launch --gpus {saved}`'}), or start over "
        f"(`phi3lab train --fresh`, or train(config, resume=False)).")


def adapter_state_dict(trainer):
    """The full adapter weights when FSDP shards them (every process must call this), else None.

    Under FSDP each process holds only a shard, so the main process alone could not save the adapter.
    """
    accelerator = getattr(trainer, "accelerator", None)
    if accelerator is None or not getattr(trainer, "is_fsdp_enabled", False):
        return None
    return accelerator.get_state_dict(trainer.model)
