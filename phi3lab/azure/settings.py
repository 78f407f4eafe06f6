"""Azure settings (subscription, resource group, project, region).

Settings come from environment variables or the git-ignored file ``azure-settings.yaml`` at the
repository root; environment variables win field by field. Nothing here ever prints a
subscription ID, key or token in full, and an error about the file names the line, never its
content. ``mask`` and ``mask_secrets`` live in ``phi3lab.secrets`` and are re-exported here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import Phi3LabError
from ..io import read_yaml_mapping
from ..paths import REPO_ROOT
from ..secrets import ZERO_GUID, mask, mask_secrets

SETTINGS_FILE = REPO_ROOT / "azure-settings.yaml"
ENV_NAMES = {
    "subscription_id": "AZURE_SUBSCRIPTION_ID",
    "resource_group": "AZURE_RESOURCE_GROUP",
    "project": "AZURE_AI_PROJECT",
    "region": "AZURE_LOCATION",
}
REQUIRED = ("subscription_id", "resource_group", "project")
SETTINGS_HINT = ("set AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and AZURE_AI_PROJECT (or write azure-settings.yaml "
                 "at the repository root)")
__all__ = ["AzureSettings", "AzureSettingsError", "PLACEHOLDER_SETTINGS", "SETTINGS_HINT", "load_settings", "mask", "mask_secrets",
           "settings_state"]


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


# Shown in dry runs without settings: obviously placeholders, and a valid URL.
PLACEHOLDER_SETTINGS = AzureSettings(ZERO_GUID, "your-resource-group", "your-ai-project", "eastus2")


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
    data = read_yaml_mapping(path, AzureSettingsError, redact=_where_only)
    known = {f.name for f in fields(AzureSettings)}
    unknown = sorted(mask_secrets(str(key)) for key in set(data) - known)  # a pasted secret may sit in a key
    if unknown:
        raise AzureSettingsError(f"{path.name}: unknown setting(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(known))}")
    return {k: str(v).strip() for k, v in data.items() if v is not None}


def _where_only(parser_message: str) -> str:
    """The position of a YAML error without the quoted line: that line may hold the subscription ID or a key."""
    places = re.findall(r"line (\d+), column (\d+)", parser_message)
    where = f"line {places[-1][0]}, column {places[-1][1]}" if places else "an unknown line"
    return (f"syntax error at {where} (the line is not shown: it may hold a secret). Write one "
            f"'name: value' per line, e.g. 'resource_group: rg-phi3lab'")


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
