"""One error type for everything a learner can fix, shown as a short message, never a traceback."""

from __future__ import annotations


class Phi3LabError(Exception):
    """A problem with the learner's input or environment, with the fix in the message."""


class ConfigError(Phi3LabError, ValueError):
    """A configuration value is missing, unknown or out of its allowed range."""


class ModelUnavailableError(Phi3LabError):
    """A model could not be loaded or fetched."""


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
