"""The course's quality bar, measured end to end on the course validation set.

    python benchmarks/quality_bar.py [--preset "workshop default"] [--adapter DIR] [--json out.json]

1. Trains the chat adapter with the preset the learner gets in notebook 02 (or takes ``--adapter``),
   and records its wall time and validation-loss curve: the learner default must finish within
   15 minutes on 2 cores with a visible drop in validation loss.
2. Compares base and fine-tuned on every validation conversation (notebook 04's ``compare``):
   perplexity at least 30% lower, token F1 higher.
3. Trains the intent classifier with notebook 04's settings for each ``--seeds``: macro-F1 >= 0.85.

Quality numbers are not timed tests: this script is for maintainers, and its JSON goes in the note.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from phi3lab import classifier, evaluation
from phi3lab.config import default_config
from phi3lab.runs import RUNS_ENV, run_folder
from phi3lab.training.artifacts import load_trained
from phi3lab.training.trainer import train

BAR = {"training_minutes": 15.0, "perplexity_drop": 0.30, "macro_f1": 0.85}


def chat_quality(adapter_dir: Path) -> dict:
    model, tokenizer = load_trained(adapter_dir)
    started = time.perf_counter()
    comparison = evaluation.compare(model, tokenizer, evaluation.load_validation())
    scores = comparison.to_dict()
    base, tuned = scores["base"], scores["fine-tuned"]
    return {"base": base, "fine-tuned": tuned, "seconds": round(time.perf_counter() - started, 1),
            "perplexity_drop": round(1 - tuned["perplexity"] / base["perplexity"], 4),
            "table": comparison.table()}


def training_record(adapter_dir: Path) -> dict:
    run = run_folder(adapter_dir)
    summary = run.summary()
    steps, losses = run.history().series("validation")
    curve = [(step, round(loss, 4)) for step, loss in zip(steps, losses, strict=True)]
    return {"steps": summary["steps"], "wall_minutes": round(summary["wall_seconds"] / 60, 2),
            "non_pad_tokens_per_second": summary["non_pad_tokens_per_second"], "validation_curve": curve}


def intent_quality(seeds: list[int]) -> dict:
    runs = {}
    for seed in seeds:
        run = classifier.train_classifier(classifier.classifier_config(seed=seed, run_name=f"intent-s{seed}"),
                                          progress=False)
        runs[seed] = {"macro_f1": round(run.report.macro_f1, 4), "accuracy": round(run.report.accuracy, 4),
                      "seconds": round(run.seconds, 1)}
    f1 = [r["macro_f1"] for r in runs.values()]
    return {"runs": runs, "macro_f1_mean": round(statistics.mean(f1), 4), "macro_f1_min": min(f1)}


@contextlib.contextmanager
def scratch_runs_root():
    """Runs of this measurement go to a temporary runs root, so the learner's runs/ is left alone."""
    before = os.environ.get(RUNS_ENV)
    with tempfile.TemporaryDirectory(prefix="phi3lab-quality-") as scratch:
        os.environ[RUNS_ENV] = scratch
        try:
            yield Path(scratch)
        finally:
            if before is None:
                os.environ.pop(RUNS_ENV, None)
            else:
                os.environ[RUNS_ENV] = before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="workshop default")
    parser.add_argument("--adapter", type=Path, help="score this trained adapter instead of training one")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 123], help="classifier seeds")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    adapter = args.adapter.resolve() if args.adapter else None
    with scratch_runs_root():
        adapter = adapter or train(default_config(args.preset, run_name="chat"), progress=False).adapter_dir
        results = {"preset": args.preset, "training": training_record(adapter), "chat": chat_quality(adapter),
                   "intent": intent_quality(args.seeds), "bar": BAR}
    curve = results["training"]["validation_curve"]
    results["verdict"] = {
        "training_within_time": results["training"]["wall_minutes"] <= BAR["training_minutes"],
        "validation_loss_drops": curve[-1][1] < curve[0][1],
        "perplexity_drop_met": results["chat"]["perplexity_drop"] >= BAR["perplexity_drop"],
        "token_f1_higher": results["chat"]["fine-tuned"]["token F1"] > results["chat"]["base"]["token F1"],
        "macro_f1_met": results["intent"]["macro_f1_min"] >= BAR["macro_f1"],
    }
    print(results["chat"].pop("table"))
    print(json.dumps(results, indent=2))
    if args.json:
        from phi3lab.io import atomic_write_json

        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
