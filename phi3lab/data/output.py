"""Streaming atomic writes for data files, which may be too large for ``io.atomic_write_text``."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from .report import DataError


def refuse_overwrite(source: str | os.PathLike, *targets: str | os.PathLike | None) -> None:
    """Outputs must never replace the input: the learner's original file stays untouched."""
    source = Path(source).resolve()
    for target in targets:
        if target is not None and Path(target).resolve() == source:
            raise DataError(f"the output {target} is the input file; phi3lab never modifies input files. "
                            f"Fix: choose another output name, e.g. {source.stem}.clean{source.suffix}.")


@contextlib.contextmanager
def atomic_lines(path: str | os.PathLike) -> Iterator[TextIO]:
    """A text handle into a temp file beside ``path``, renamed over it only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
