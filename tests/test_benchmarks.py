"""Benchmarks are not run in CI (speed is measured, not asserted), but each must still start:
a broken import or argument parser would only show up when a maintainer needs the numbers."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).parent.parent / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_script_starts_and_documents_itself(script):
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:")


def test_every_benchmark_is_found():
    assert {"train_throughput.py", "eval_perplexity.py", "quality_bar.py"} <= {p.name for p in SCRIPTS}
