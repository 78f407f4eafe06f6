"""The metrics history of a fine-tuning run, one format for local training and Azure jobs.

Stored as JSON: ``{"source": "local"|"azure", "run": str, "records": [{"step", "epoch", "split",
"loss", ...extra}]}`` where ``split`` is ``"train"`` or ``"validation"``. Plots and evaluation
read this, whichever side trained the model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Phi3LabError
from .io import atomic_write_json

SPLITS = ("train", "validation")


@dataclass
class MetricsHistory:
    source: str = "local"
    run: str = ""
    records: list[dict] = field(default_factory=list)

    def add(self, step: int, split: str, loss: float, epoch: float | None = None, **extra) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.records.append({"step": int(step), "epoch": epoch, "split": split, "loss": float(loss), **extra})

    def add_trainer_log(self, step: int, logs: dict) -> None:
        """Record one transformers Trainer log entry (its ``loss`` and/or ``eval_loss``).

        A non-finite training loss is left out: JSON cannot hold it and the plots cannot draw it
        (the Trainer's own progress log still shows it)."""
        if "loss" in logs and math.isfinite(logs["loss"]):
            self.add(step, "train", logs["loss"], epoch=logs.get("epoch"), learning_rate=logs.get("learning_rate"))
        if "eval_loss" in logs:
            self.add(step, "validation", logs["eval_loss"], epoch=logs.get("epoch"))

    @classmethod
    def from_trainer_log(cls, log_history: list[dict], run: str = "") -> MetricsHistory:
        """A finished Trainer's ``state.log_history`` in the shared format."""
        history = cls(source="local", run=run)
        for entry in log_history:
            history.add_trainer_log(entry["step"], entry)
        return history

    def series(self, split: str, metric: str = "loss") -> tuple[list[int], list[float]]:
        """Steps and values of one metric for one split, in step order."""
        rows = sorted((r for r in self.records if r["split"] == split and metric in r), key=lambda r: r["step"])
        return [r["step"] for r in rows], [r[metric] for r in rows]

    def last(self, split: str, metric: str = "loss") -> float | None:
        _, values = self.series(split, metric)
        return values[-1] if values else None

    def to_dict(self) -> dict:
        return {"source": self.source, "run": self.run, "records": self.records}

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> MetricsHistory:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(source=data.get("source", "local"), run=data.get("run", ""), records=list(data["records"]))
        except FileNotFoundError:
            raise Phi3LabError(f"no metrics history at {path}; train a model first (notebook 02)") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise Phi3LabError(f"{path} is not a phi3lab metrics history ({exc})") from None
