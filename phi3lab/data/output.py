"""Output rules for data files: never overwrite an input, never write two outputs to one file."""

from __future__ import annotations

import os
from pathlib import Path

from .report import DataError


def refuse_collisions(inputs: list[str | os.PathLike | None], outputs: list[str | os.PathLike | None]) -> None:
    """Outputs must never replace an input (the learner's files stay untouched), nor each other (one
    output would silently hold only the last write)."""
    sources = {Path(s).resolve(): s for s in inputs if s is not None}
    seen: dict[Path, str | os.PathLike] = {}
    for target in (t for t in outputs if t is not None):
        resolved = Path(target).resolve()
        if resolved in sources:
            raise DataError(f"the output {target} is an input file; phi3lab never modifies input files. "
                            f"Fix: choose another output name, e.g. {resolved.stem}.new{resolved.suffix}.")
        if resolved in seen:
            raise DataError(f"two outputs are the same file ({seen[resolved]} and {target}), so one would be lost. "
                            f"Fix: give each output its own name.")
        seen[resolved] = target
