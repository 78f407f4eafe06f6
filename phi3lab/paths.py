"""The repository's root and data, the one rule for relative paths, and the per-user model cache.

Where runs live is ``phi3lab.runs``'s business."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"


def repo_path(path: str | os.PathLike) -> Path:
    """``path`` with ``~`` expanded; a relative one is taken from the repository root, not the working
    directory (notebooks run in ``notebooks/``, the CLI wherever the learner is)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def cache_dir() -> Path:
    """Per-user cache for converted models (``PHI3LAB_CACHE`` overrides, then ``XDG_CACHE_HOME``)."""
    if os.environ.get("PHI3LAB_CACHE"):
        return Path(os.environ["PHI3LAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "phi3lab"
