"""Notebook hygiene: clean committed notebooks, a teaching shape, working links, no secrets.

Every test is parametrised over ``notebooks/*.ipynb``, so new notebooks are checked as they land.
Executed notebooks are scanned for secrets in two places: ``make nbval`` (in CI) through the hook
in ``conftest.py``, which checks each cell's fresh outputs, and here over the newest
``course-runs/`` folder when ``make course`` has been run on this machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

import nbformat
import pytest
import yaml

from phi3lab.course import latest_run_dir, secret_findings
from phi3lab.notebook_tools import CHECK_MARK, keeps_output, strip_notebook
from phi3lab.paths import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
COURSE_PARTS = ["00", "01", "02", "03", "04", "05"]
MAX_NOTEBOOK_BYTES = 1_500_000  # kept figures are small PNGs; more means stray outputs
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "course-runs", "runs", "test-artifacts", ".pytest_cache",
             ".ruff_cache", ".ipynb_checkpoints", "build", "dist"}
CLEAN_FIX = "run: python -m phi3lab.notebook_tools {path}"


def ids(paths):
    return [p.name for p in paths]


def markdown_of(nb) -> str:
    return "\n\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")


def read(path: Path):
    return nbformat.read(path, as_version=4)


def test_all_course_notebooks_exist():
    numbers = [nb.name[:2] for nb in NOTEBOOKS]
    missing = [n for n in COURSE_PARTS if n not in numbers]
    assert not missing, f"course notebooks missing: {missing} (expected notebooks/NN_name.ipynb for {COURSE_PARTS})"


# ----- clean committed notebooks ---------------------------------------------------------------
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_committed_notebook_is_clean(path):
    nb = read(path)
    nbformat.validate(nb)
    problems = []
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    if kernel != "python3":
        problems.append(f"kernelspec is {kernel!r}; set it to python3 (else JupyterLab asks learners to pick one)")
    for number, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code":
            continue
        if not keeps_output(cell) and cell.execution_count is not None:
            problems.append(f"cell {number}: execution count {cell.execution_count}")
        if cell.outputs and not keeps_output(cell):
            problems.append(f"cell {number}: {len(cell.outputs)} output(s) in an unmarked cell")
        if cell.outputs and cell.execution_count is None:
            problems.append(f"cell {number}: kept outputs without an execution count (nbval fails such a cell)")
        if any(out.output_type == "error" for out in cell.outputs):
            problems.append(f"cell {number}: a committed error output")
    if "widgets" in nb.metadata:
        problems.append("saved widget state in the notebook metadata")
    assert not problems, f"{path.name} is not clean ({CLEAN_FIX.format(path=path)}):\n  " + "\n  ".join(problems)
    text = path.read_text(encoding="utf-8")
    assert nbformat.writes(strip_notebook(read(path))) + "\n" == text, \
        f"{path.name} differs from its cleaned form; {CLEAN_FIX.format(path=path)}"
    assert len(text.encode()) <= MAX_NOTEBOOK_BYTES, f"{path.name} is {len(text.encode())} bytes; strip stray outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_nbval_checks_outputs_and_skips_nothing(path):
    """CI runs every cell; each notebook pins at least one deterministic output (counts, reports, summaries)."""
    code = [cell for cell in read(path).cells if cell.cell_type == "code"]
    skipped = [n for n, cell in enumerate(code, start=1)
               if "NBVAL_SKIP" in cell.source or "nbval-skip" in cell.metadata.get("tags", [])]
    assert not skipped, f"{path.name}: code cells {skipped} are skipped under nbval; make them run under the CI profile"
    assert any(cell.source.lstrip().startswith(CHECK_MARK) for cell in code), \
        f"{path.name}: mark at least one deterministic output with '{CHECK_MARK}' (a count, a report, a summary)"


# ----- the teaching shape ----------------------------------------------------------------------
TIME_ESTIMATE = re.compile(r"(?i)\b\d+\s*(?:(?:–|-|to)\s*\d+\s*)?(?:min(?:ute)?s?|h|hours?)\b")
GOALS = re.compile(r"(?i)\blearning goals?\b|\bgoals\b|\byou(?:'ll|’ll| will) learn\b")
WHAT_YOU_DID = re.compile(r"(?im)^#+\s.*\bwhat you did\b")
WHATS_NEXT = re.compile(r"(?i)\bwhat(?:'|’| i)s next\b")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_has_the_teaching_shape(path):
    nb = read(path)
    first = nb.cells[0] if nb.cells else None
    title = next((line for line in (first.source.splitlines() if first else []) if line.strip()), "")
    assert first is not None and first.cell_type == "markdown" and re.match(r"#\s+\S", title), \
        f"{path.name}: the first cell must be markdown starting with a '# Title' line"
    markdown = markdown_of(nb)
    opening = "\n".join(c.source for c in nb.cells[:3] if c.cell_type == "markdown")
    missing = [what for what, ok in [
        ("learning goals ('Learning goals' / 'You will learn')", GOALS.search(markdown)),
        ("a time estimate in the first cells (e.g. '≈ 20 minutes')", TIME_ESTIMATE.search(opening)),
        ("a closing '## What you did' heading", WHAT_YOU_DID.search(markdown)),
        ("a 'What's next' section", WHATS_NEXT.search(markdown)),
    ] if not ok]
    assert not missing, f"{path.name} lacks: " + "; ".join(missing)


# ----- links and images ------------------------------------------------------------------------
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
REFERENCE_LINK = re.compile(r"(?m)^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
HTML_LINK = re.compile(r"(?i)\b(?:src|href)\s*=\s*[\"']([^\"']+)[\"']")
URL_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def relative_targets(markdown: str) -> list[str]:
    """Link and image targets that point into the repository (no URL scheme, not a bare #anchor)."""
    targets = [m.group(1) for pattern in (MARKDOWN_LINK, REFERENCE_LINK, HTML_LINK) for m in pattern.finditer(markdown)]
    return [t for t in targets if not URL_SCHEME.match(t) and not t.startswith("#")]


def broken_links(markdown: str, folder: Path) -> list[str]:
    broken = []
    for target in relative_targets(markdown):
        local = urllib.parse.unquote(target.split("#")[0].split("?")[0])
        if local and not (folder / local).exists():
            broken.append(target)
    return broken


def markdown_files() -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        found += [Path(folder) / f for f in files if f.endswith(".md")]
    return sorted(found)


DOCUMENTS = NOTEBOOKS + markdown_files()
# The README draft is written to be merged into README.md, so its links start at the repository root.
LINK_BASE = {REPO_ROOT / "docs" / "README-sections.md": REPO_ROOT}


@pytest.mark.parametrize("path", DOCUMENTS, ids=[str(p.relative_to(REPO_ROOT)) for p in DOCUMENTS])
def test_relative_links_and_images_resolve(path):
    text = markdown_of(read(path)) if path.suffix == ".ipynb" else path.read_text(encoding="utf-8")
    broken = broken_links(text, LINK_BASE.get(path, path.parent))
    assert not broken, f"{path.relative_to(REPO_ROOT)}: links/images that do not resolve: {broken}"


def test_link_checker_finds_broken_links(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "ok.svg").write_text("<svg/>")
    text = ("![fine](images/ok.svg) [gone](missing.md#part) <img src='images/nope.png'> [web](https://example.org) "
            "[anchor](#top) ![spaced](<images/ok.svg>)\n[ref]: docs/absent.md")
    assert broken_links(text, tmp_path) == ["missing.md#part", "docs/absent.md", "images/nope.png"]


# ----- secrets -----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_no_secrets_in_committed_notebook(path):
    findings = secret_findings(read(path))
    assert not findings, f"{path.name} shows secret-looking strings: {findings}"


LATEST_RUN = latest_run_dir()
EXECUTED = sorted(LATEST_RUN.glob("*.ipynb")) if LATEST_RUN else []


@pytest.mark.skipif(not EXECUTED, reason="no course-runs/ folder on this machine (make course); in CI the nbval "
                                         "hook in conftest.py scans every executed cell instead")
@pytest.mark.parametrize("path", EXECUTED or [None], ids=ids(EXECUTED) or ["none"])
def test_no_secrets_in_latest_course_run(path):
    findings = secret_findings(read(path))
    assert not findings, f"{path} (executed by make course) shows secret-looking strings: {findings}"


# The patterns themselves (every format masked and detected, harmless text left alone) are tested in
# test_secrets.py; here they are applied to notebooks.


def new_notebook(*sources: str):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    return nb


def test_nbval_hook_fails_a_cell_that_prints_a_secret(tmp_path):
    """The CI check of executed outputs: nbval with conftest.py fails the leaking cell only."""
    leak = "print('/subscriptions/' + '3f2b8c1e-9a4d-4e6f-b1c2-' + '7d8e9f0a1b2c')"  # built at run time
    nbformat.write(new_notebook("print('subscription: ****1b2c')", leak), tmp_path / "leak.ipynb")
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "--nbval-lax", "--nbval-current-env",
                          "-p", "no:cacheprovider", "-q", str(tmp_path / "leak.ipynb")],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout and "secret-looking" in run.stdout, run.stdout


# ----- pre-commit --------------------------------------------------------------------------------
def test_precommit_hook_strips_outputs_and_keeps_marked_ones(tmp_path):
    config = yaml.safe_load((REPO_ROOT / ".pre-commit-config.yaml").read_text())
    hook = next(h for repo in config["repos"] for h in repo["hooks"] if h["id"] == "strip-notebook-outputs")
    assert re.search(hook["files"], "notebooks/02_local_lora_training.ipynb")
    nb = new_notebook("print('scratch')", "# NBVAL_CHECK_OUTPUT\nprint('42 conversations')")
    for cell in nb.cells:
        cell.execution_count = 7
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="text\n")]
    path = tmp_path / "dirty.ipynb"
    nbformat.write(nb, path)
    program, *args = hook["entry"].split()
    assert program == "python", "the hook runs the course's python (activated .venv)"
    subprocess.run([sys.executable, *args, str(path)], cwd=REPO_ROOT, check=True, capture_output=True)
    cleaned = read(path)
    assert [c.execution_count for c in cleaned.cells] == [None, 2]  # nbval needs a count beside kept outputs
    assert [len(c.outputs) for c in cleaned.cells] == [0, 1]


# ----- diagrams ----------------------------------------------------------------------------------
DIAGRAM_SCRIPTS = sorted((REPO_ROOT / "images" / "src").glob("*.py"))


@pytest.mark.parametrize("script", DIAGRAM_SCRIPTS, ids=ids(DIAGRAM_SCRIPTS))
def test_committed_diagrams_match_their_scripts(script, tmp_path):
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, capture_output=True, timeout=120)
    made = sorted(tmp_path.glob("*.svg"))
    assert made, f"{script.name} wrote no SVG"
    for svg in made:
        committed = REPO_ROOT / "images" / svg.name
        assert committed.is_file() and committed.read_text() == svg.read_text(), \
            f"images/{svg.name} is stale; regenerate it: python {script.relative_to(REPO_ROOT)} images"
