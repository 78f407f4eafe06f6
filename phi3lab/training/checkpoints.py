"""Atomic checkpoints and resume: a run killed at any moment restarts from its last complete checkpoint.

Trainer writes ``checkpoint-N`` piece by piece; a crash in between would leave a folder that looks
complete but is not. Trainer therefore writes into the run's staging folder, and once a checkpoint is
whole it gets the config and history and is published into the run folder with one rename.

A checkpoint can still be damaged afterwards (a full disk, a copy cut short). Before resuming, each
one is checked without loading it; a damaged newest one is removed with a note, and the run resumes
from the newest intact one instead of failing on every rerun.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

from ..config import TrainConfig
from ..errors import ConfigError
from ..history import MetricsHistory
from ..io import atomic_write_json, safetensors_complete
from ..runs import CHECKPOINT_RE, CONFIG_NAME, HISTORY_NAME, LAUNCH_NAME, RunFolder
from .distributed import barrier, is_main_process
from .errors import notice

KEEP_CHECKPOINTS = 2
# What resume needs in a checkpoint: Trainer's state, the adapter, the optimiser, and our config and history.
CHECKPOINT_FILES = ("trainer_state.json", "adapter_model.safetensors", CONFIG_NAME, HISTORY_NAME)
OPTIMIZER_FILES = ("optimizer.pt", "optimizer.bin")  # one of them: FSDP (full state dict) writes optimizer.bin
# Fields whose change makes an old checkpoint a different run (bookkeeping fields may change).
RUN_FIELDS = ("model", "train_file", "validation_file", "learning_rate", "epochs", "batch_size", "grad_accum",
              "max_seq_length", "max_steps", "warmup_ratio", "seed", "lora_r", "lora_alpha", "lora_dropout",
              "target_modules", "packing")


def checkpoint_publisher(config: TrainConfig, run: RunFolder, history: MetricsHistory, launch: dict | None = None):
    """A TrainerCallback that records the metrics history and publishes each finished checkpoint.

    With several processes each one writes its part (its RNG state) into the staged checkpoint; all wait
    until every part is there, then the main process alone completes and publishes it.
    """
    from transformers import TrainerCallback

    class CheckpointPublisher(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            history.add_trainer_log(state.global_step, logs or {})

        def on_save(self, args, state, control, **kwargs):
            barrier()
            if is_main_process():
                publish_checkpoint(config, run, history, Path(args.output_dir), state.global_step, launch)

    return CheckpointPublisher()


def publish_checkpoint(config: TrainConfig, run: RunFolder, history: MetricsHistory, staging: Path, step: int,
                       launch: dict | None = None) -> None:
    """Complete the staged checkpoint of ``step``, rename it into the run folder, drop the oldest ones."""
    final = run.checkpoint_dir(step)
    staged = staging / final.name  # Trainer names its folder as the run does
    config.save(staged / CONFIG_NAME)
    history.save(staged / HISTORY_NAME)
    if launch is not None:
        atomic_write_json(staged / LAUNCH_NAME, launch)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staged, final)
    for old in complete_checkpoints(run)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)


def complete_checkpoints(run: RunFolder) -> list[Path]:
    """Published checkpoints holding everything resume needs, oldest first."""
    return [path for path in run.checkpoint_dirs() if all((path / name).is_file() for name in CHECKPOINT_FILES)
            and any((path / name).is_file() for name in OPTIMIZER_FILES)]


def checkpoint_problem(checkpoint: Path) -> str | None:
    """What makes a published checkpoint unusable for resuming, or None when it is intact.

    Cheap checks, no weights loaded: the safetensors header matches the file's length, the JSON files
    parse, each torch file's zip directory is whole (a truncated file has none), the config loads.
    """
    if not safetensors_complete(checkpoint / "adapter_model.safetensors"):
        return "adapter_model.safetensors is truncated or corrupt"
    for name in ("trainer_state.json", HISTORY_NAME):
        try:
            json.loads((checkpoint / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return f"{name} is not readable JSON"
    for torch_file in sorted(checkpoint.glob("*.pt")) + sorted(checkpoint.glob("*.pth")):
        try:
            zipfile.ZipFile(torch_file).close()
        except (OSError, zipfile.BadZipFile):
            return f"{torch_file.name} is truncated or corrupt"
    try:
        TrainConfig.load(checkpoint / CONFIG_NAME)
    except ConfigError as exc:
        return str(exc)
    return None


def intact_checkpoints(run: RunFolder, notices: list[str] | None = None) -> list[Path]:
    """``complete_checkpoints`` that pass ``checkpoint_problem``, oldest first; damaged ones are removed with a note."""
    intact = []
    for path in complete_checkpoints(run):
        problem = checkpoint_problem(path)
        if problem is None:
            intact.append(path)
            continue
        notice(f"{path.name} is damaged ({problem}); removed it, so the run resumes from the previous intact "
               f"checkpoint (or starts over)", notices)
        shutil.rmtree(path, ignore_errors=True)
    return intact


def changed_fields(config: TrainConfig, saved_config: Path) -> list[str]:
    """The run-defining fields in which ``config`` differs from the config saved at ``saved_config``."""
    saved = TrainConfig.load(saved_config)
    return [f for f in RUN_FIELDS if getattr(saved, f) != getattr(config, f)]


def resume_point(config: TrainConfig, run: RunFolder, resume: bool, notices: list[str] | None = None) -> Path | None:
    """The last intact checkpoint of this same run, or None to start fresh (old checkpoints removed)."""
    checkpoints = intact_checkpoints(run, notices) if resume else []
    changed = changed_fields(config, checkpoints[-1] / CONFIG_NAME) if checkpoints else []
    if changed and resume:
        notice(f"the checkpoints in {run.folder} are from a run with other {', '.join(changed)}; starting a new run",
               notices)
    if not resume or not checkpoints or changed:
        for path in run.checkpoint_dirs():
            shutil.rmtree(path, ignore_errors=True)
        return None
    return checkpoints[-1]


def step_of(checkpoint: Path | None) -> int:
    """The optimiser step a checkpoint was saved at (0 for none)."""
    return int(CHECKPOINT_RE.match(checkpoint.name).group(1)) if checkpoint else 0
