"""``phi3lab launch``: start ``phi3lab train`` once per GPU (DDP or FSDP), on one machine or several."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def register(commands) -> None:
    launch = commands.add_parser(
        "launch", help="`phi3lab train` on several GPUs or machines (accelerate launch with launch/*.yaml)",
        description="Start one `phi3lab train` process per GPU with the accelerate configs in launch/. On several "
                    "machines run it once per machine: the machine rank and the main address come from the "
                    "environment (SLURM, or NODE_RANK/MASTER_ADDR/MASTER_PORT as Azure ML and torchrun set them).")
    launch.add_argument("--config", required=True, metavar="FILE", help="TrainConfig as YAML/JSON")
    launch.add_argument("--gpus", type=int, help="GPUs (processes) per machine (default: all GPUs of this machine)")
    launch.add_argument("--nodes", type=int, help="machines (default: from the environment, else 1)")
    launch.add_argument("--strategy", choices=("ddp", "fsdp"), default="ddp",
                        help="ddp: a full copy per GPU (default); fsdp: weights sharded across the GPUs")
    launch.add_argument("--port", type=int, help="the main process's port (default: MASTER_PORT, else 29500)")
    launch.add_argument("--print-only", action="store_true", help="print the command instead of running it")
    launch.set_defaults(handler=run_launch)


def run_launch(args) -> int:
    from ..config import TrainConfig
    from ..training.launch import launch_command

    TrainConfig.load(args.config)  # a bad config fails here, once, with the field named
    command = launch_command(args.config, args.gpus or _gpus_here(), args.nodes, args.strategy, port=args.port)
    print(shlex.join(command), flush=True)
    if args.print_only:
        return 0
    executable = shutil.which(command[0]) or str(Path(sys.executable).with_name(command[0]))
    os.execv(executable, [executable, *command[1:]])  # the launcher replaces this process: its exit code is ours
    return 0  # not reached


def _gpus_here() -> int:
    import torch

    from ..errors import Phi3LabError

    if torch.cuda.is_available():
        return torch.cuda.device_count()
    raise Phi3LabError("this machine has no CUDA GPU. Fix: pass --gpus N; without GPUs the N processes train on the "
                       "CPU and talk over gloo (slow, but a way to try the multi-process path)")
