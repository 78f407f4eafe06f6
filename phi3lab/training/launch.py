"""The command that starts ``phi3lab train`` once per GPU: one machine (DDP), FSDP, or several machines.

What stays the same lives in the accelerate config files shipped in ``launch/`` (``ddp.yaml``,
``fsdp.yaml``); the command adds what changes: the number of processes and, for several machines,
this machine's rank and the main machine's address, read from the environment as the cluster sets
them. SLURM sets ``SLURM_NNODES``, ``SLURM_NODEID`` and ``SLURM_JOB_NODELIST``; Azure ML (one launcher
per node) and torchrun-style schedulers set ``NODE_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
A single process needs no launcher: the command is then plain ``phi3lab train``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..paths import REPO_ROOT
from .errors import TrainingError

LAUNCH_DIR = REPO_ROOT / "launch"
STRATEGIES = {"ddp": "ddp.yaml", "fsdp": "fsdp.yaml"}
DEFAULT_PORT = 29500


@dataclass(frozen=True)
class Cluster:
    """Where this machine stands among the machines of one training run."""

    nodes: int = 1
    machine_rank: int = 0
    main_address: str | None = None
    main_port: int = DEFAULT_PORT
    source: str = "one machine"


def cluster_from_environment(environ=None) -> Cluster:
    """The machine count, this machine's rank and the main machine's address, as SLURM or Azure ML set them."""
    environ = os.environ if environ is None else environ
    port = _number(environ, "MASTER_PORT", DEFAULT_PORT)
    if "SLURM_NNODES" in environ:
        nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST") or ""
        address = environ.get("MASTER_ADDR") or (first_host(nodelist) if nodelist else None)
        return Cluster(_number(environ, "SLURM_NNODES", 1), _number(environ, "SLURM_NODEID", 0), address, port,
                       "SLURM")
    if "NODE_RANK" in environ or "MACHINE_RANK" in environ:
        rank = _number(environ, "NODE_RANK", _number(environ, "MACHINE_RANK", 0))
        nodes = _number(environ, "NNODES", _number(environ, "AZUREML_NODE_COUNT", 1))
        return Cluster(nodes, rank, environ.get("MASTER_ADDR"), port, "NODE_RANK/MASTER_ADDR (Azure ML, torchrun)")
    return Cluster(main_port=port)


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[03-04,07],cpu1`` gives ``gpu03``."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise TrainingError(f"cannot read the SLURM node list {nodelist!r}. Fix: set MASTER_ADDR to the first "
                            f"node's host name (`scontrol show hostnames $SLURM_JOB_NODELIST | head -n1`).")
    prefix, ranges = match.groups()
    return prefix + (ranges.split(",")[0].split("-")[0] if ranges else "")


def launch_command(config_path: str | Path, gpus: int, nodes: int | None = None, strategy: str = "ddp",
                   environ=None, port: int | None = None) -> list[str]:
    """``accelerate launch`` with the shipped config for ``strategy``, ``gpus`` processes on each of ``nodes``
    machines (default: as the environment says), running ``phi3lab train --config config_path``."""
    cluster = cluster_from_environment(environ)
    nodes = cluster.nodes if nodes is None else nodes
    _check(gpus, nodes, strategy)
    train = ["-m", "phi3lab", "train", "--config", str(config_path)]
    if gpus * nodes == 1:
        return ["phi3lab", *train[2:]]
    command = ["accelerate", "launch", "--config_file", str(LAUNCH_DIR / STRATEGIES[strategy]),
               "--num_processes", str(gpus * nodes), "--num_machines", str(nodes)]
    if nodes > 1:
        if not cluster.main_address:
            raise TrainingError(
                f"{nodes} machines need the main machine's address, and the environment names none ({cluster.source})."
                f" Fix: set MASTER_ADDR (and MASTER_PORT) on every machine; under SLURM phi3lab reads the first host "
                f"of SLURM_JOB_NODELIST, and Azure ML sets MASTER_ADDR and NODE_RANK itself.")
        command += ["--machine_rank", str(cluster.machine_rank), "--main_process_ip", cluster.main_address,
                    "--main_process_port", str(port or cluster.main_port)]
    elif port:
        command += ["--main_process_port", str(port)]
    return [*command, *train]


def _check(gpus: int, nodes: int, strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise TrainingError(f"unknown strategy {strategy!r}. Choose one of: {', '.join(STRATEGIES)} "
                            f"(their accelerate configs are in {LAUNCH_DIR.relative_to(REPO_ROOT)}/)")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise TrainingError(f"gpus={gpus!r}: give the number of GPUs (training processes) on each machine, at least 1")
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise TrainingError(f"nodes={nodes!r}: give the number of machines, at least 1")


def _number(environ, name: str, default: int) -> int:
    value = environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise TrainingError(f"{name}={value!r} in the environment is not a number. Fix: unset it, or set it as "
                            f"the cluster documents (a whole number)") from None
