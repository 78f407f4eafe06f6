"""Runs as experiments: which run to evaluate, its training curves, and short runs to compare.

Where runs live is ``phi3lab.runs``'s business; this module decides which runs a notebook looks at and
trains the short ones notebook 04 compares.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass

from .config import default_config, is_ci_profile
from .io import atomic_write_text
from .runs import RunFolder, azure_history_file, find_run, latest_run, run_folder

FALLBACK_RUN = "lora-short"  # the short run notebook 04 trains for itself when notebook 02 has not run
EXPERIMENTS = "experiments"  # sub-folder of the runs root for experiment runs (kept out of "the latest run")


def run_to_evaluate(run: str | os.PathLike | RunFolder | None = None, preset: str = "quick look") -> RunFolder:
    """The named run, else the latest finished one (notebook 02's), else a short run trained now (and said so).

    The short run has its own folder, so a notebook-02 run in progress (checkpoints, no adapter yet) is
    never touched; once trained it is reused.
    """
    if run is not None:
        return find_run(run)
    latest = latest_run()
    if latest is not None:
        print(f"Evaluating run '{latest.name}' (the latest finished run; its adapter is in {latest.adapter_dir})")
        return latest
    from .training.trainer import train

    config = default_config(preset, run_name=FALLBACK_RUN)
    print(f"No finished run yet (notebook 02 not run): training a short one now in run '{FALLBACK_RUN}' "
          f"({preset!r} preset, {config.max_steps} steps). Its results will be modest; run notebook 02 for a real one.")
    train(config, progress=False)
    return config.run


def training_histories(run: str | os.PathLike | RunFolder | None = None) -> dict:
    """The run's metrics history, plus the Azure job's when notebook 03 fetched one."""
    from .history import MetricsHistory

    histories = {"local": find_run(run).history()}
    azure = azure_history_file()
    if azure.is_file():
        histories["Azure"] = MetricsHistory.load(azure)
    else:
        print(f"No Azure job metrics yet (notebook 03 saves them to {azure} after a real job).")
    return histories


# ----- iterate: compare two settings ---------------------------------------------------------------
@dataclass
class Experiment:
    """Short training runs that differ in one or two settings, scored on the validation loss."""

    variants: dict[str, dict]
    results: dict  # name -> phi3lab.training.TrainResult

    def histories(self) -> dict:
        return {name: result.history for name, result in self.results.items()}

    def rows(self) -> list[tuple[str, str, int, float, float]]:
        rows = []
        for name, result in self.results.items():
            changed = ", ".join(f"{k}={v}" for k, v in self.variants[name].items())
            loss = result.history.last("validation")
            rows.append((name, changed, result.summary.get("steps", 0), loss, math.exp(loss)))
        return rows

    def table(self) -> str:
        lines = [f"{'run':<14}{'settings':<36}{'steps':>6}{'val loss':>10}{'perplexity':>12}"]
        lines += [f"{n:<14}{c:<36}{s:>6}{loss:>10.3f}{ppl:>12.2f}" for n, c, s, loss, ppl in self.rows()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def best(self) -> str:
        return min(self.rows(), key=lambda row: row[3])[0]


def run_experiment(variants: dict[str, dict], preset: str = "quick look", root: str = EXPERIMENTS) -> Experiment:
    """Train one short run per variant (``{name: {setting: value}}``, changes to the preset) and
    collect their validation losses. Each run starts fresh in the run ``<root>/<name>``."""
    from .evaluation import load_validation
    from .training.trainer import train

    scoring = {}
    if is_ci_profile():  # score on the same few conversations load_validation() gives under CI
        subset = run_folder(root).folder / "validation-ci.jsonl"
        atomic_write_text(subset, "".join(json.dumps({"messages": c}) + "\n" for c in load_validation()))
        scoring = {"validation_file": str(subset)}
    results = {}
    for name, changes in variants.items():
        folder = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"
        # one validation pass at the end is enough to compare runs (train() always ends with one)
        config = default_config(preset, run_name=f"{root}/{folder}", **{**scoring, **changes})
        config = config.update(eval_steps=max(config.eval_steps, config.max_steps if config.max_steps > 0 else 1))
        print(f"training {name!r} ({', '.join(f'{k}={v}' for k, v in changes.items())}) ...")
        results[name] = train(config, resume=False, progress=False)
    return Experiment(variants, results)
