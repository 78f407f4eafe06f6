"""Azure settings (subscription, resource group, project, region) and masking of secrets.

Settings come from environment variables or the git-ignored file ``azure-settings.yaml`` at the
repository root; environment variables win field by field. Nothing here ever prints a
subscription ID, key or token in full.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import Phi3LabError
from ..io import read_yaml_mapping
from ..paths import REPO_ROOT

SETTINGS_FILE = REPO_ROOT / "azure-settings.yaml"
ENV_NAMES = {
    "subscription_id": "AZURE_SUBSCRIPTION_ID",
    "resource_group": "AZURE_RESOURCE_GROUP",
    "project": "AZURE_AI_PROJECT",
    "region": "AZURE_LOCATION",
}
REQUIRED = ("subscription_id", "resource_group", "project")


class AzureSettingsError(Phi3LabError):
    """The Azure settings file or variables are incomplete or malformed."""


@dataclass(frozen=True)
class AzureSettings:
    """Where the course's Azure work happens. ``project`` is the AI Foundry project (an Azure ML workspace)."""

    subscription_id: str
    resource_group: str
    project: str
    region: str | None = None

    def __repr__(self) -> str:
        return (f"AzureSettings(subscription_id={mask(self.subscription_id)!r}, "
                f"resource_group={self.resource_group!r}, project={self.project!r}, region={self.region!r})")

    __str__ = __repr__


def load_settings(path: str | os.PathLike | None = None, environ: dict | None = None) -> AzureSettings | None:
    """Settings from the environment and ``azure-settings.yaml``; None when there are none at all.

    Partial settings are an error naming the missing fields, because a half-configured learner
    would otherwise silently fall back to dry runs.
    """
    environ = os.environ if environ is None else environ
    values = _read_file(Path(path) if path else SETTINGS_FILE)
    for name, env in ENV_NAMES.items():
        if environ.get(env):
            values[name] = environ[env].strip()
    values = {k: v for k, v in values.items() if v}
    if not values:
        return None
    missing = [name for name in REQUIRED if name not in values]
    if missing:
        hints = ", ".join(f"{name} (env {ENV_NAMES[name]})" for name in missing)
        raise AzureSettingsError(f"Azure settings are incomplete: missing {hints}. "
                                 f"Set them in {SETTINGS_FILE.name} or as environment variables.")
    return AzureSettings(**values)


def _read_file(path: Path) -> dict:
    if not path.is_file():
        return {}
    data = read_yaml_mapping(path, AzureSettingsError, redact=mask_secrets)
    known = {f.name for f in fields(AzureSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise AzureSettingsError(f"{path.name}: unknown setting(s) {', '.join(map(str, unknown))}; "
                                 f"known: {', '.join(sorted(known))}")
    return {k: str(v).strip() for k, v in data.items() if v is not None}


def settings_state(environ: dict | None = None) -> str:
    """One line for the doctor report: whether settings exist and where from, no values."""
    environ = os.environ if environ is None else environ
    try:
        settings = load_settings(environ=environ)
    except AzureSettingsError as exc:
        return f"invalid: {exc}"
    if settings is None:
        return "absent: Azure cells run as dry runs"
    source = "environment variables" if all(environ.get(ENV_NAMES[n]) for n in REQUIRED) else SETTINGS_FILE.name
    return f"present ({source}); Azure cells make real calls after confirmation"


# ----- masking --------------------------------------------------------------------------------
_GUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_KEY_VALUE = re.compile(
    r"(?i)\b(api[-_]?key|primary[-_]?key|secondary[-_]?key|account[-_]?key|key|token|secret|password|"
    r"sig|client[-_]?secret|access[-_]?token)(\"?\s*[:=]\s*\"?)([^\s\"'&,;}]{6,})")
# Role definition IDs are public constants, not secrets; keep them readable.
_PUBLIC_GUIDS = {
    "64702f94-c441-49e6-a78b-ef80e0188fee",  # Azure AI Developer
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",  # Owner
    "b24988ac-6180-42a0-ab88-20f7382dd24c",  # Contributor
}


def mask(value: str | None, keep: int = 4) -> str:
    """``"12345678-...-cdef"`` → ``"1234…"``: at most ``keep`` leading characters stay visible."""
    if not value:
        return ""
    value = str(value)
    if len(value) <= keep:
        return "…"
    return value[:keep] + "…"


def mask_secrets(text: str) -> str:
    """Hide GUIDs (subscription/tenant IDs), bearer tokens, JWTs and key=value secrets in ``text``."""
    text = _BEARER.sub(lambda m: f"{m.group(1)} ***", text)
    text = _JWT.sub("***", text)
    text = _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    return _GUID.sub(lambda m: m.group(0) if m.group(0).lower() in _PUBLIC_GUIDS else mask(m.group(0)), text)
