"""The money guard: one check of ``confirm`` for every call that spends money or removes something.

``confirm`` must be exactly ``True`` to act; ``False`` or ``None`` mean a dry run. Anything else
(``"no"``, ``"False"``, ``1``, ``[0]``, ``numpy.True_``) is refused, because Python would read
most of them as true and a typo must never start a billed job.
"""

from __future__ import annotations

from ..errors import Phi3LabError
from ..secrets import mask_secrets
from .settings import SETTINGS_HINT, AzureSettings, AzureSettingsError


class ConfirmError(Phi3LabError, TypeError):
    """``confirm`` (or a flag like it) was not a plain True/False."""


def strict_confirm(confirm, name: str = "confirm") -> bool:
    """True only for ``True``; False for ``False``/``None``; ConfirmError (a TypeError) for anything else."""
    if confirm is True:
        return True
    if confirm is False or confirm is None:
        return False
    shown = mask_secrets(repr(confirm))[:40]
    raise ConfirmError(f"{name} must be True (act, which may cost money) or False (dry run), not {shown} "
                       f"({type(confirm).__name__}). Fix: pass {name}=True only when you mean it.")


def confirmed(confirm, settings: AzureSettings | None, name: str = "confirm") -> bool:
    """Whether to really send: ``confirm`` is True and Azure settings exist (True without settings is an error)."""
    if not strict_confirm(confirm, name):
        return False
    if settings is None:
        raise AzureSettingsError(f"{name}=True needs Azure settings, and there are none: {SETTINGS_HINT}. "
                                 f"Without them only a dry run is possible.")
    return True
