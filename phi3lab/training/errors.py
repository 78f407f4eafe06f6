"""What training tells the learner: an error that stops it, or a one-line notice about a fallback."""

from __future__ import annotations

from ..errors import Phi3LabError


class TrainingError(Phi3LabError):
    """Training cannot start or could not finish; the message says what to change."""


def notice(message: str, notices: list[str] | None = None) -> None:
    """A one-line note about a fallback (shown to the learner once, by the main process; kept in the run summary)."""
    from .distributed import is_main_process

    if is_main_process():
        print(f"note: {message}")
    if notices is not None:
        notices.append(message)
