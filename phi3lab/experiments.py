"""Runs as experiments: which run to evaluate, its training curves, and short runs to compare.

Where runs live is ``phi3lab.runs``'s business; this module decides which runs a notebook looks at and
trains the short ones notebook 04 compares.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from .config import CI_PROFILE, default_config, is_ci_profile
from .io import atomic_write_text
from .paths import REPO_ROOT, repo_path
from .runs import RunFolder, azure_history_file, find_run, latest_run, run_folder, run_record, run_records

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


# ----- runs side by side ---------------------------------------------------------------------------
@dataclass
class RunTable:
    """Runs with what each changed and how it ended (rows from ``phi3lab.runs.run_record``): plain text in a
    terminal, a table in a notebook."""

    rows: list[dict]
    changed_from: str = "the defaults"

    HEADINGS = ("run", "steps", "train loss", "val loss", "perplexity", "minutes")

    def cells(self, row: dict) -> list[str]:
        def number(value, fmt):
            return "-" if value is None else format(value, fmt)

        loss = row["validation_loss"]
        return [row["run"], number(row["steps"], "d"), number(row["train_loss"], ".3f"), number(loss, ".3f"),
                number(None if loss is None else math.exp(loss), ".2f"), number(row["minutes"], ".1f"),
                describe_settings(row["changed"])]

    def __str__(self) -> str:
        if not self.rows:
            return "no finished runs yet"
        table = [[*self.HEADINGS, f"changed from {self.changed_from}"], *map(self.cells, self.rows)]
        widths = [max(len(r[i]) for r in table) for i in range(len(self.HEADINGS))]
        return "\n".join("  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:-1], widths[1:],
                                                                                       strict=True)), r[-1]])
                         for r in table)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in (*self.HEADINGS, f"changed from {self.changed_from}"))
        body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in self.cells(r))
                       + "</tr>" for r in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def describe_settings(changed: dict) -> str:
    """``learning_rate=0.01, lora_r=8``; data files by their file name."""
    shown = {k: Path(v).name if k.endswith("_file") and v else v for k, v in changed.items()}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "nothing"


def compare_runs(under: str | None = None) -> RunTable:
    """Every finished run (or those inside the runs-root folder ``under``, e.g. ``experiments``) with the
    settings it changed from the course defaults and its final losses."""
    return RunTable(run_records(under))


# ----- reading a loss curve ---------------------------------------------------------------------------
PATTERNS = ("healthy", "overfitting", "unstable", "too slow")


@dataclass(frozen=True)
class Diagnosis:
    pattern: str  # one of PATTERNS, or "unknown" when the history is too short to tell
    evidence: str

    def __str__(self) -> str:
        return f"{self.pattern}: {self.evidence}"


def diagnose(history) -> Diagnosis:
    """Name a run's loss pattern from its curves, with the numbers behind it.

    overfitting: the validation loss rose clearly after its lowest point while the training loss fell well
    below its start (the model memorises); unstable: the validation loss ends above where the untrained
    model started, or rose without the training loss falling (the updates overshoot); too slow: the
    validation loss fell by less than 3% of its start; healthy: it fell and ends at (or near) its lowest.
    """
    steps, values = history.series("validation")
    if len(values) < 2:
        return Diagnosis("unknown", "needs the validation loss at the start and at least once later")
    start, end, best = values[0], values[-1], min(values)
    summary = f"validation loss {start:.2f} at step {steps[0]}, lowest {best:.2f} at step " \
              f"{steps[values.index(best)]}, {end:.2f} at step {steps[-1]}"
    _, train = history.series("train")
    memorising = len(train) >= 2 and min(train[len(train) // 2:]) < 0.8 * train[0]
    if end > best + max(0.03, 0.02 * best):
        if memorising:
            return Diagnosis("overfitting", f"{summary}: rose again after its lowest point while the training "
                                            f"loss fell to {min(train):.2f}")
        return Diagnosis("unstable", f"{summary}: rose again without the training loss falling")
    if end > start:
        return Diagnosis("unstable", f"{summary}: worse than the untrained model")
    if start - end < 0.03 * start:
        return Diagnosis("too slow", f"{summary}: fell by {100 * (start - end) / start:.1f}% only")
    return Diagnosis("healthy", f"{summary}: fell by {100 * (start - end) / start:.0f}% and ends near its lowest")


# ----- iterate: short runs that differ in one setting --------------------------------------------------
@dataclass
class Experiment:
    """Short training runs that differ in one or two settings, scored on the validation loss."""

    variants: dict[str, dict]
    results: dict  # name -> phi3lab.training.TrainResult

    def histories(self) -> dict:
        return {name: result.history for name, result in self.results.items()}

    def table(self) -> RunTable:
        """Each variant with the settings it changed and its final losses."""
        rows = [{**run_record(result.run), "run": name, "changed": self.variants[name]}
                for name, result in self.results.items()]
        return RunTable(rows, changed_from="the experiment's base")

    def __str__(self) -> str:
        return str(self.table())

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()

    def best(self) -> str:
        """The variant with the lowest final validation loss."""
        return min(self.results, key=lambda name: self.results[name].history.last("validation"))

    def diagnoses(self) -> dict[str, Diagnosis]:
        return {name: diagnose(result.history) for name, result in self.results.items()}

    def diagnosis(self) -> str:
        """One line per run: its pattern and the numbers behind it."""
        return "\n".join(f"{name}: {d}" for name, d in self.diagnoses().items())


def run_experiment(variants: dict[str, dict], preset: str = "quick look", root: str = EXPERIMENTS,
                   base: dict | None = None, validation_limit: int | None = None, eval_every: int | None = None,
                   fresh: bool = False) -> Experiment:
    """Train one short run per variant and collect their losses.

    Each variant (``{name: {setting: value}}``) changes ``base`` (changes to the preset); the special setting
    ``train_subset: n`` trains on the first n conversations only. Every run has its own folder
    ``<root>/<name>``; a run that already finished with the same settings is reused unless ``fresh``.
    The validation loss is scored on the first ``validation_limit`` conversations (``CI_LIMIT`` under the CI
    profile) at the start, every ``eval_every`` steps (default: only at the end) and at the end. Under the
    CI profile its step limits win over the variants' (a few steps each).
    """
    from .evaluation import CI_LIMIT
    from .training.trainer import train

    limit = CI_LIMIT if is_ci_profile() else validation_limit
    folder = run_folder(root).folder
    results = {}
    for name, variant in variants.items():
        changes = {**(base or {}), **variant}
        if is_ci_profile():
            changes = {k: v for k, v in changes.items() if k not in CI_PROFILE}
        subset = changes.pop("train_subset", None)
        config = default_config(preset, run_name=f"{root}/{_folder_name(name)}", **changes)
        if subset:
            config = config.update(train_file=_first_conversations(config.train_file, subset, folder, "train"))
        if limit:
            config = config.update(validation_file=_first_conversations(config.validation_file, limit, folder,
                                                                        "validation"))
        steps = config.max_steps if config.max_steps > 0 else 1
        config = config.update(eval_steps=eval_every or max(config.eval_steps, steps))
        print(f"training {name!r} ({describe_settings(variant)}) ...")
        results[name] = train(config, resume=not fresh, progress=False)
    return Experiment(variants, results)


def _folder_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


def _first_conversations(source: str, n: int, folder: Path, stem: str) -> str:
    """The first ``n`` conversations of ``source`` in ``<folder>/<stem>-first<n>.jsonl`` (repo-relative when
    inside the repository), written when missing."""
    from .data import read_conversations

    path = folder / f"{stem}-first{n}.jsonl"
    if not path.is_file():
        conversations = list(islice(read_conversations(repo_path(source)), n))
        atomic_write_text(path, "".join(json.dumps({"messages": c}) + "\n" for c in conversations))
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


# ----- the loss-diagnosis lab (notebook 04) ----------------------------------------------------------------
LAB_ROOT = f"{EXPERIMENTS}/loss-lab"
LAB_BASE = {"batch_size": 2, "max_steps": 30, "max_seq_length": 256}  # on top of "quick look": short and cheap
LOSS_LAB = {  # named by letter, so the name gives nothing away before the learner predicts
    "A": {},
    "B": {"train_subset": 8, "epochs": 10, "max_steps": -1},
    "C": {"learning_rate": 1e-5},
}
LAB_VALIDATION = 8  # conversations the lab's validation loss is scored on
LAB_EVAL_EVERY = 10


def loss_lab(variants: dict[str, dict] | None = None, fresh: bool = False) -> Experiment:
    """The lab's runs (``LOSS_LAB`` unless given): same base, validation subset and evaluation cadence."""
    return run_experiment(variants or LOSS_LAB, root=LAB_ROOT, base=LAB_BASE, validation_limit=LAB_VALIDATION,
                          eval_every=LAB_EVAL_EVERY, fresh=fresh)


def try_change(changes: dict, baseline: str = "A") -> Experiment:
    """The lab's ``baseline`` run next to the same run with ``changes``: one change, one comparison."""
    if not changes or not isinstance(changes, dict):
        raise ValueError("try_change needs the settings to change, e.g. {'learning_rate': 5e-5}")
    name = f"{baseline} + " + ", ".join(f"{k} {v}" for k, v in changes.items())
    return loss_lab({baseline: LOSS_LAB[baseline], name: {**LOSS_LAB[baseline], **changes}})
