"""One error type for everything a learner can fix, shown as a short message, never a traceback."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


class Phi3LabError(Exception):
    """A problem with the learner's input or environment, with the fix in the message."""


class ConfigError(Phi3LabError, ValueError):
    """A configuration value is missing, unknown or out of its allowed range."""


class ModelUnavailableError(Phi3LabError):
    """A model could not be loaded or fetched."""


class FileAccessError(Phi3LabError, OSError):
    """A file or folder could not be read or written; still an OSError for callers that catch those."""


def _blocking_file(path: Path) -> Path:
    """The first part of ``path`` that exists as a file where a folder is needed (``path`` when none does)."""
    for part in reversed(path.parents):
        if part.exists() and not part.is_dir():
            return part
    return path


def describe_file_error(exc: OSError | UnicodeDecodeError, path: str | os.PathLike | None = None,
                        action: str = "read") -> str:
    """One line naming the path, what is wrong with it and the fix, for an OS or decoding error."""
    path = Path(path if path is not None else getattr(exc, "filename", None) or "the file")
    if isinstance(exc, UnicodeDecodeError):
        return (f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); is it a "
                f"binary file? Fix: point at the text file, saved as UTF-8")
    if isinstance(exc, FileNotFoundError):
        return f"{path} does not exist. Fix: check the path, or create the folder it should be in"
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a folder, where a file is needed. Fix: give a file name, e.g. {path / 'name'}"
    if isinstance(exc, FileExistsError) and path.is_dir():
        return f"{path} already exists. Fix: choose another name, or remove it first"
    if isinstance(exc, NotADirectoryError | FileExistsError):
        blocking = _blocking_file(path)
        purpose = f" (to {action} {path})" if blocking != path else ""
        return (f"{blocking} is a file, where a folder is needed{purpose}. Fix: rename or remove that file, or "
                f"choose another location")
    if isinstance(exc, PermissionError):
        return (f"no permission to {action} {path}. Fix: choose a location you may {action}, or change the "
                f"permissions")
    return f"could not {action} {path}: {exc.strerror or exc}. Fix: check the path and the disk"


@contextlib.contextmanager
def file_errors(path: str | os.PathLike, action: str = "read", error: type[Exception] = FileAccessError
                ) -> Iterator[None]:
    """Turn an OS or decoding error inside the block into ``error`` naming ``path`` and the fix."""
    try:
        yield
    except Phi3LabError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise error(describe_file_error(exc, path, action)) from None


def _show_in_notebook(shell, etype, value, tb, tb_offset=None):
    # Learners see the problem and the fix; the traceback is noise for errors we raise on purpose.
    print(f"{etype.__name__}: {value}")


def install_notebook_handler() -> None:
    """Inside IPython/Jupyter, show Phi3LabError as its message alone."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.set_custom_exc((Phi3LabError,), _show_in_notebook)
