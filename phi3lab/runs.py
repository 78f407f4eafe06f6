"""Where runs live and what a run folder holds: the one owner of these locations.

Every training run is a folder under the runs root (``PHI3LAB_RUNS``, default ``<repo>/runs``)::

    runs/<run name>/
        config.yaml          the run's TrainConfig, written before the first step (the hand-off to notebooks 03-05)
        checkpoint-N/        complete checkpoints (published by one rename from .staging/), with launch.json
        .staging/            where Trainer writes a checkpoint until it is whole
        adapter/             the final LoRA adapter, with config.yaml, history.json and summary.json
    runs/azure/history.json  the Azure job's metrics (notebook 03)
    runs/serving/            one record and one log per local server (read by cleanup)
    runs/monitoring/         the endpoint call log (notebook 05)

Nothing else in phi3lab builds these paths; it asks this module. The root is read from the environment
on every call, so ``PHI3LAB_RUNS`` set after import (a test, a notebook cell) is honoured everywhere.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import Phi3LabError
from .paths import REPO_ROOT, repo_path

RUNS_ENV = "PHI3LAB_RUNS"
CONFIG_NAME, HISTORY_NAME, SUMMARY_NAME = "config.yaml", "history.json", "summary.json"
LAUNCH_NAME = "launch.json"  # in each checkpoint: how many processes trained it, and the global batch
ADAPTER_NAME, STAGING_NAME = "adapter", ".staging"
CLASSIFIER_LABELS_NAME = "labels.json"  # an intent classifier's label map; marks a run as not a chat run
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# Folders under the runs root that hold services' records, not training runs.
SERVICE_FOLDERS = ("azure", "serving", "monitoring", "benchmarks")
RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class RunNotFoundError(Phi3LabError):
    """No run folder (or no finished adapter) where one was expected."""


def runs_root() -> Path:
    """The folder that holds every run: ``PHI3LAB_RUNS`` when set (relative to the repository root), else ``runs/``."""
    value = os.environ.get(RUNS_ENV)
    if not value:
        return REPO_ROOT / "runs"
    path = Path(value).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def azure_history_file() -> Path:
    return runs_root() / "azure" / HISTORY_NAME


def azure_job_config_file() -> Path:
    """The config a managed-compute training job uploads (a service record, never mistaken for a local run)."""
    return runs_root() / "azure" / "train-job" / CONFIG_NAME


def server_dir() -> Path:
    return runs_root() / "serving"


def call_log_file() -> Path:
    return runs_root() / "monitoring" / "endpoint_calls.jsonl"


def benchmark_dir() -> Path:
    return runs_root() / "benchmarks"


@dataclass(frozen=True)
class RunFolder:
    """The paths inside one run folder (nothing is read or created by building one)."""

    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def config_file(self) -> Path:
        return self.folder / CONFIG_NAME

    @property
    def staging_dir(self) -> Path:
        return self.folder / STAGING_NAME

    @property
    def adapter_dir(self) -> Path:
        return self.folder / ADAPTER_NAME

    @property
    def merged_dir(self) -> Path:
        """Where ``merge_and_save`` puts the standalone model (base weights with the adapter folded in)."""
        return self.folder / "merged"

    @property
    def exports_dir(self) -> Path:
        """Where ``phi3lab.export`` writes the run's exports."""
        return self.folder / "exports"

    def export_dir(self, variant: str) -> Path:
        """One export of the run: ``exports/<variant>`` (e.g. ``onnx-int4-cpu``)."""
        return self.exports_dir / variant

    @property
    def history_file(self) -> Path:
        return self.adapter_dir / HISTORY_NAME

    @property
    def summary_file(self) -> Path:
        return self.adapter_dir / SUMMARY_NAME

    def checkpoint_dir(self, step: int) -> Path:
        return self.folder / f"checkpoint-{step}"

    def checkpoint_dirs(self) -> list[Path]:
        """Published ``checkpoint-N`` folders, oldest first (whether complete or not)."""
        found = []
        if self.folder.is_dir():
            for path in self.folder.iterdir():
                match = CHECKPOINT_RE.match(path.name)
                if match and path.is_dir():
                    found.append((int(match.group(1)), path))
        return [path for _, path in sorted(found)]

    @property
    def finished(self) -> bool:
        return (self.adapter_dir / "adapter_config.json").is_file() and (self.adapter_dir / CONFIG_NAME).is_file()

    def config(self):
        """The run's ``TrainConfig`` (from the finished adapter, else the one written when it started)."""
        from .config import TrainConfig

        for path in (self.adapter_dir / CONFIG_NAME, self.config_file):
            if path.is_file():
                return TrainConfig.load(path)
        raise RunNotFoundError(f"{self.folder} holds no {CONFIG_NAME}: it is not a training run. "
                               f"Fix: train first (notebook 02 or `phi3lab train`).")

    def history(self):
        from .history import MetricsHistory

        return MetricsHistory.load(self.history_file)

    def summary(self) -> dict:
        import json

        return json.loads(self.summary_file.read_text(encoding="utf-8"))


def run_folder(run: str | os.PathLike | RunFolder) -> RunFolder:
    """A run by name (``"lora"``: a folder under the runs root), or by path (a ``Path``, an absolute path or one
    starting with ``runs/``, relative ones taken from the repository root); an adapter folder means its run."""
    if isinstance(run, RunFolder):
        return run
    text = os.fspath(run)
    if isinstance(run, str) and RUN_NAME_RE.match(text) and not text.startswith("runs/"):
        path = runs_root() / text
    else:
        path = repo_path(text)
    if path.name == ADAPTER_NAME and (path / "adapter_config.json").is_file():
        path = path.parent
    return RunFolder(path)


def training_runs(finished_only: bool = True, nested: bool = True) -> list[RunFolder]:
    """Chat-training runs under the runs root, oldest first (by when they finished, else started).

    ``nested=False`` keeps only runs directly under the root: the learner's own runs, not the experiment
    runs that notebook 04 keeps in sub-folders. Intent-classifier runs are not chat runs and are left out.
    """
    root = runs_root()
    if not root.is_dir():
        return []
    found = []
    for config in root.rglob(CONFIG_NAME):
        run = RunFolder(config.parent)
        parts = run.folder.relative_to(root).parts
        if not parts:  # a config.yaml lying in the runs root itself is no run
            continue
        if run.name == ADAPTER_NAME or CHECKPOINT_RE.match(run.name) or STAGING_NAME in parts:
            continue
        if parts[0] in SERVICE_FOLDERS or (not nested and len(parts) > 1):
            continue
        if (run.adapter_dir / CLASSIFIER_LABELS_NAME).is_file():
            continue
        if run.finished or not finished_only:
            found.append(run)
    return sorted(found, key=_finished_at)


def _finished_at(run: RunFolder) -> float:
    marker = run.summary_file if run.summary_file.is_file() else run.config_file
    return marker.stat().st_mtime if marker.exists() else 0.0


def latest_run() -> RunFolder | None:
    """The learner's most recently finished chat run (experiments in sub-folders aside), or None."""
    runs = training_runs(nested=False)
    return runs[-1] if runs else None


def find_run(run: str | os.PathLike | RunFolder | None = None) -> RunFolder:
    """The named run, or the latest finished one; a clear error when there is none."""
    if run is None:
        latest = latest_run()
        if latest is None:
            raise RunNotFoundError(f"no finished training run under {runs_root()}. Fix: train one first "
                                   f"(notebook 02 or `phi3lab train`).")
        return latest
    folder = run_folder(run)
    if not folder.finished:
        raise RunNotFoundError(f"{folder.folder} holds no finished adapter (no {ADAPTER_NAME}/adapter_config.json). "
                               f"Fix: train it to the end (notebook 02 or `phi3lab train`), or name another run.")
    return folder


def config_for(run: str | os.PathLike | RunFolder | None = None):
    """The ``TrainConfig`` a later notebook continues with: the named run's, else the latest run's, else the
    course default (said so), so notebooks 03-05 use the data and settings notebook 02 trained with."""
    if run is not None:
        return find_run(run).config()
    latest = latest_run()
    if latest is not None:
        print(f"using the settings of run '{latest.name}' ({latest.config_file.parent})")
        return latest.config()
    from .config import default_config

    print("no finished training run yet (notebook 02): using the course's default settings")
    return default_config()


# ----- runs you can compare: named from what they changed, listed with how they ended ----------------
SHORT_NAMES = {"learning_rate": "lr", "batch_size": "batch", "grad_accum": "accum", "max_seq_length": "seq",
               "max_steps": "steps", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout",
               "warmup_ratio": "warmup", "train_file": "train", "validation_file": "val", "target_modules": "targets"}


def changed_settings(config, defaults=None) -> dict:
    """The settings that shape what a run learns (``training.checkpoints.RUN_FIELDS``) and differ from
    ``defaults`` (the course defaults, ``TrainConfig()``, unless given)."""
    from .config import TrainConfig
    from .training.checkpoints import RUN_FIELDS

    defaults = defaults or TrainConfig()
    return {name: getattr(config, name) for name in RUN_FIELDS if getattr(config, name) != getattr(defaults, name)}


def suggest_run_name(config, defaults=None, prefix: str = "lora") -> str:
    """A run name from what differs from the defaults: ``lora`` at the defaults, ``lora-lr5e-4-r8`` otherwise."""
    parts = [prefix, *(_name_part(name, value) for name, value in changed_settings(config, defaults).items())]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts))


def _name_part(name: str, value) -> str:
    """``lr5e-4``, ``r8``, ``val-auto``, ``train-mydata``, ``packing-off``, ``targets-qkv_proj.o_proj``."""
    short = SHORT_NAMES.get(name, name)
    if name == "learning_rate":
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{short}{mantissa.removesuffix('.0')}e{int(exponent)}"
    if name.endswith("_file"):
        return f"{short}-{Path(value).stem if value else 'auto'}"
    if isinstance(value, bool):
        return f"{short}-{'on' if value else 'off'}"
    if isinstance(value, (list, str)):
        return f"{short}-{value if isinstance(value, str) else '.'.join(value)}"
    return f"{short}{value}"


def run_record(run: str | os.PathLike | RunFolder) -> dict:
    """One finished run's name (relative to the runs root), the settings it changed from the defaults, its
    final losses (from its history) and its steps and wall time (from ``summary.json``)."""
    run = find_run(run)
    summary = run.summary() if run.summary_file.is_file() else {}
    history = run.history() if run.history_file.is_file() else None
    name = run.folder.relative_to(runs_root()).as_posix() if run.folder.is_relative_to(runs_root()) else str(run.folder)
    return {"run": name, "changed": changed_settings(run.config()), "steps": summary.get("steps"),
            "train_loss": history and history.last("train"), "validation_loss": history and history.last("validation"),
            "minutes": round(summary.get("wall_seconds", 0) / 60, 1)}


def run_records(under: str | None = None) -> list[dict]:
    """``run_record`` of every finished chat run under the runs root (or only inside its folder ``under``),
    oldest first."""
    records = [run_record(run) for run in training_runs(nested=True)]
    return [r for r in records if not under or r["run"].startswith(under.rstrip("/") + "/")]
