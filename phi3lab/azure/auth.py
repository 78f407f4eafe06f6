"""Login choices that suit JupyterLab, and the Azure ML client built from the course settings."""

from __future__ import annotations

import logging
from typing import Literal

from ..errors import Phi3LabError
from .settings import SETTINGS_HINT, AzureSettings, AzureSettingsError, load_settings

CredentialKind = Literal["auto", "cli", "device_code", "environment"]

# Fine-tuning jobs and serverless endpoints are "experimental" classes in the pinned SDK; its notice is noise here.
logging.getLogger("azure.ai.ml._utils._experimental").setLevel(logging.ERROR)

LOGIN_HINT = ("not signed in to Azure (HTTP 401). Run `az login` in a terminal (add "
              "`--use-device-code` on a remote kernel), or use get_credential('device_code') in the notebook")


class AzureLoginError(Phi3LabError):
    """No usable Azure credential, or the service rejected it (401)."""


def get_credential(kind: CredentialKind = "auto"):
    """An azure-identity credential.

    - ``"cli"``: the account of ``az login`` (laptops, a kernel on your own machine).
    - ``"device_code"``: prints a code to enter at https://microsoft.com/devicelogin (remote kernels).
    - ``"environment"``: a service principal from ``AZURE_CLIENT_ID``/``AZURE_TENANT_ID``/``AZURE_CLIENT_SECRET``
      (automation, CI).
    - ``"auto"``: environment, then managed identity, then the Azure CLI, never a browser pop-up.
    """
    from azure import identity

    if kind == "cli":
        return identity.AzureCliCredential()
    if kind == "device_code":
        return identity.DeviceCodeCredential()
    if kind == "environment":
        return identity.EnvironmentCredential()
    if kind == "auto":
        return identity.DefaultAzureCredential(exclude_interactive_browser_credential=True)
    raise AzureLoginError(f"unknown credential kind {kind!r}; choose auto, cli, device_code or environment")


def require_settings(settings: AzureSettings | None = None) -> AzureSettings:
    settings = settings or load_settings()
    if settings is None:
        raise AzureSettingsError(f"no Azure settings: {SETTINGS_HINT}")
    return settings


def ml_client(settings: AzureSettings | None = None, credential=None, transport=None, **kwargs):
    """An ``azure.ai.ml.MLClient`` for the course's project (workspace).

    ``transport`` replaces the HTTP layer: tests and dry runs pass a recording transport, so
    the real SDK builds every request without a network.
    """
    from azure.ai.ml import MLClient

    settings = require_settings(settings)
    if transport is not None:
        kwargs["transport"] = transport
    return MLClient(credential or get_credential(), settings.subscription_id, settings.resource_group,
                    settings.project, enable_telemetry=False, **kwargs)


def registry_client(registry: str = "azureml", credential=None, transport=None, **kwargs):
    """An ``MLClient`` for a model registry (``azureml`` holds Microsoft's Phi models)."""
    from azure.ai.ml import MLClient

    if transport is not None:
        kwargs["transport"] = transport
    return MLClient(credential or get_credential(), registry_name=registry, enable_telemetry=False, **kwargs)
