"""Keep committed notebooks clean and their checked outputs fresh.

Convention: a committed notebook has no execution counts and no outputs, except in cells that
start with ``# NBVAL_CHECK_OUTPUT`` (deterministic text that nbval compares, run with
``--nbval-lax``) and intentional figures in cells marked ``# KEEP_OUTPUT``.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat

CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
KEEP_MARK = "# KEEP_OUTPUT"


def keeps_output(cell) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith((CHECK_MARK, KEEP_MARK))


def strip_notebook(nb):
    """Drop execution counts and every output not marked to be kept, in place.

    A marked cell keeps its outputs and gets a fixed execution count (its position among the code
    cells, so refreshing never changes the diff): nbval rejects a cell that has outputs but no
    count ("Unrun reference cell has outputs").
    """
    code_number = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        code_number += 1
        kept = keeps_output(cell) and bool(cell.outputs)
        cell.execution_count = code_number if kept else None
        if not kept:
            cell.outputs = []
        for out in cell.outputs:
            if "execution_count" in out:
                out["execution_count"] = code_number
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    return nb


def execute(path: str | Path, timeout: int = 1800, profile: str | None = "ci"):
    """Run a notebook top to bottom in its own folder and return the executed node."""
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    env_backup = os.environ.get("PHI3LAB_PROFILE")
    if profile:
        os.environ["PHI3LAB_PROFILE"] = profile
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        if env_backup is None:
            os.environ.pop("PHI3LAB_PROFILE", None)
        else:
            os.environ["PHI3LAB_PROFILE"] = env_backup
    return nb


def refresh_checked_outputs(path: str | Path) -> None:
    """Execute with the CI profile, then save the notebook keeping only marked outputs."""
    from .io import atomic_write_text

    nb = strip_notebook(execute(path))
    atomic_write_text(path, nbformat.writes(nb) + "\n")


def clean_file(path: str | Path) -> bool:
    """Strip one notebook file; True when it changed."""
    from .io import atomic_write_text

    path = Path(path)
    before = path.read_text(encoding="utf-8")
    after = nbformat.writes(strip_notebook(nbformat.reads(before, as_version=4))) + "\n"
    if after != before:
        atomic_write_text(path, after)
    return after != before


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m phi3lab.notebook_tools",
                                     description="Strip notebook outputs, keeping the checked (NBVAL_CHECK_OUTPUT) ones.")
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--refresh", action="store_true", help="execute and store fresh checked outputs")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.notebooks if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    for path in args.notebooks:
        if args.refresh:
            refresh_checked_outputs(path)
            print(f"refreshed {path}")
        else:
            print(f"{'cleaned' if clean_file(path) else 'clean'} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
