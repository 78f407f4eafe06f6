"""Run the whole course headless, and check that what the notebooks show leaks no secrets.

``run_course`` executes every notebook in order in a fresh kernel each (the learner's defaults
unless a profile such as ``"ci"`` is given) and writes an executed copy plus an HTML page per
notebook into ``course-runs/<timestamp>/``. ``secret_findings`` scans a notebook's sources and
outputs for keys, tokens and subscription IDs with the patterns of ``phi3lab.secrets`` (the same
ones that mask runtime output); the course run, the nbval run and the hygiene tests all use it.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import nbformat

from .errors import Phi3LabError
from .io import atomic_write_json, atomic_write_text
from .paths import REPO_ROOT
from .secrets import find_secrets

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
COURSE_RUNS_DIR = REPO_ROOT / "course-runs"


class CourseError(Phi3LabError):
    """The course run cannot start (no notebooks, unknown notebook name)."""


# ----- secrets -------------------------------------------------------------------------------
# Output formats that carry text a reader sees; images and widget references are skipped
# (base64 and widget model IDs are long random strings that would look like keys).
_TEXT_MIMES = ("text/plain", "text/html", "text/markdown", "text/latex", "application/json")


def _output_texts(output) -> Iterator[str]:
    if output.get("output_type") == "stream":
        yield output.get("text", "")
    elif output.get("output_type") == "error":
        yield "\n".join([output.get("evalue", ""), *output.get("traceback", [])])
    else:
        for mime, value in output.get("data", {}).items():
            if mime in _TEXT_MIMES:
                yield value if isinstance(value, str) else json.dumps(value)


def cell_texts(cell) -> Iterator[str]:
    """The source of a cell and the text of each of its outputs."""
    yield cell.get("source", "")
    for output in cell.get("outputs", []):
        yield from _output_texts(output)


def secret_findings(nb) -> list[str]:
    """One line per secret-looking string in a notebook: cell number, kind, masked start."""
    lines = []
    for number, cell in enumerate(nb.cells, start=1):
        for text in cell_texts(cell):
            lines += [f"cell {number}: {kind} '{masked}'" for kind, masked in find_secrets(text)]
    return lines


# ----- running the course ----------------------------------------------------------------------
@dataclass
class NotebookResult:
    name: str
    seconds: float
    executed: str
    html: str
    error: str | None = None
    secrets: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.secrets


def course_notebooks(folder: Path | None = None, names: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in course order, or the ones named (by file name or number prefix)."""
    folder = folder or NOTEBOOKS_DIR
    notebooks = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise CourseError(f"no notebooks (NN_name.ipynb) found in {folder}")
    if not names:
        return notebooks
    chosen = []
    for name in names:
        matches = [nb for nb in notebooks if nb.name == name or nb.stem == name or nb.name.startswith(f"{name}_")]
        if not matches:
            known = ", ".join(nb.name for nb in notebooks)
            raise CourseError(f"no notebook matches '{name}'. Known notebooks: {known}")
        chosen += matches
    return chosen


def kernel_env(profile: str | None) -> dict[str, str]:
    """The kernel's environment: the learner's defaults, or the named profile, never an inherited one."""
    env = {k: v for k, v in os.environ.items() if k != "PHI3LAB_PROFILE"}
    if profile:
        env["PHI3LAB_PROFILE"] = profile
    return env


def describe_failure(nb) -> str:
    """Name the first cell that raised, as the learner sees it in JupyterLab (cell number, first line)."""
    for number, cell in enumerate(nb.cells, start=1):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                first_line = next((line for line in cell.source.splitlines() if line.strip()), "")
                return f"cell {number} ({first_line.strip()[:60]}): {output.ename}: {output.evalue}"
    return "the kernel stopped before a cell reported an error"


_RELATIVE_IMG = re.compile(r'(<img\b[^>]*?\bsrc=")([^":?#]+)(")')


def embed_relative_images(html: str, folder: Path) -> str:
    """Inline images linked relatively (the diagrams in ../images), so an HTML page stands alone.

    nbconvert's ``embed_images`` only reads files below the notebook's own folder.
    """
    def inline(match):
        file = folder / urllib.parse.unquote(match.group(2))
        if not file.is_file():
            return match.group(0)
        mime = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        return f"{match.group(1)}data:{mime};base64,{base64.b64encode(file.read_bytes()).decode()}{match.group(3)}"

    return _RELATIVE_IMG.sub(inline, html)


def run_notebook(path: Path, run_dir: Path, profile: str | None, timeout: int) -> NotebookResult:
    """Execute one notebook in its own folder; always write the executed copy and its HTML."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    error = None
    start = time.perf_counter()
    # The kernel's own log lines go to a file in the run folder instead of between the result lines.
    with open(run_dir / "kernel-stderr.log", "a", encoding="utf-8") as kernel_log:
        try:
            client.execute(env=kernel_env(profile), stderr=kernel_log)
        except CellExecutionError:
            error = describe_failure(nb)
        except (CellTimeoutError, DeadKernelError) as exc:
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    seconds = time.perf_counter() - start

    executed = atomic_write_text(run_dir / path.name, nbformat.writes(nb) + "\n")
    html, _ = HTMLExporter(embed_images=True).from_notebook_node(
        nb, resources={"metadata": {"path": str(path.parent), "name": path.stem}})
    html_path = atomic_write_text(run_dir / f"{path.stem}.html", embed_relative_images(html, path.parent))
    return NotebookResult(path.name, round(seconds, 1), str(executed), str(html_path), error, secret_findings(nb))


def new_run_dir(root: Path = COURSE_RUNS_DIR) -> Path:
    run_dir = root / datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    suffix = 1
    while run_dir.exists():  # two runs started in the same second
        run_dir = root / f"{run_dir.name.split('.')[0]}.{suffix}"
        suffix += 1
    run_dir.mkdir(parents=True)
    return run_dir


def run_course(notebooks: list[Path], run_dir: Path, profile: str | None = None, timeout: int = 3600,
               on_start: Callable[[Path], None] | None = None,
               on_result: Callable[[NotebookResult], None] | None = None) -> list[NotebookResult]:
    """Run notebooks in order, stopping at the first failure (later notebooks build on earlier ones).

    ``summary.json`` in ``run_dir`` records the profile and each notebook's result.
    """
    results: list[NotebookResult] = []
    for path in notebooks:
        if on_start:
            on_start(path)
        result = run_notebook(path, run_dir, profile, timeout)
        results.append(result)
        atomic_write_json(run_dir / "summary.json",
                          {"profile": profile or "learner defaults", "notebooks": [asdict(r) for r in results]})
        if on_result:
            on_result(result)
        if not result.ok:
            break
    return results


def latest_run_dir(root: Path = COURSE_RUNS_DIR) -> Path | None:
    """The newest course run folder that holds executed notebooks, if any."""
    runs = [d for d in root.glob("*") if d.is_dir() and any(d.glob("*.ipynb"))] if root.is_dir() else []
    return max(runs, key=lambda d: d.stat().st_mtime, default=None)
