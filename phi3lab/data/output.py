"""Output rules for data files: never overwrite the input."""

from __future__ import annotations

import os
from pathlib import Path

from .report import DataError


def refuse_overwrite(source: str | os.PathLike, *targets: str | os.PathLike | None) -> None:
    """Outputs must never replace the input: the learner's original file stays untouched."""
    source = Path(source).resolve()
    for target in targets:
        if target is not None and Path(target).resolve() == source:
            raise DataError(f"the output {target} is the input file; phi3lab never modifies input files. "
                            f"Fix: choose another output name, e.g. {source.stem}.clean{source.suffix}.")
