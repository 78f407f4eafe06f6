"""Turn Azure failures into one-line problems with the fix (login, role, region, quota), always masked.

Every ``AzureError`` (HTTP refusals, network failures, the SDK's own validation errors) leaves
``azure_errors`` as a ``Phi3LabError`` whose text went through ``mask_secrets``: SDK messages
may quote request URLs with subscription IDs, SAS signatures or keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..errors import Phi3LabError
from ..secrets import mask_secrets
from .auth import LOGIN_HINT, AzureLoginError
from .roles import AZURE_AI_DEVELOPER

RBAC_HINT = (f"ask an Owner of the resource group to assign you the Azure AI Developer role "
             f"(role id {AZURE_AI_DEVELOPER}): portal → resource group → Access control (IAM) → "
             f"Add role assignment")


class AzurePermissionError(Phi3LabError):
    """The signed-in account lacks a role (403)."""


class AzureNotFoundError(Phi3LabError):
    """A resource, model or region does not exist (404)."""


class AzureServiceError(Phi3LabError):
    """Any other refusal by the service, with its own message."""


def service_message(exc: Exception) -> str:
    """The service's own error code and message, masked, on one line."""
    error = getattr(exc, "error", None)
    code, message = getattr(error, "code", None), getattr(error, "message", None)
    text = f"{code}: {message}" if code and message else (message or str(exc))
    return mask_secrets(" ".join(str(text).split()))


@contextlib.contextmanager
def azure_errors(action: str) -> Iterator[None]:
    """Run an Azure call; a 401/403/404/429/other failure becomes a masked Phi3LabError naming the fix."""
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
    )

    try:
        yield
    except Phi3LabError:
        raise
    except ResourceNotFoundError as exc:
        raise AzureNotFoundError(f"{action}: not found ({service_message(exc)}). Check the name, the "
                                 f"resource group and the region in your Azure settings") from None
    except ClientAuthenticationError as exc:
        status = getattr(exc, "status_code", None)
        if status == 403:
            raise AzurePermissionError(f"{action}: permission denied (HTTP 403: {service_message(exc)}); "
                                       f"{RBAC_HINT}") from None
        raise AzureLoginError(f"{action}: {LOGIN_HINT} [{service_message(exc)}]") from None
    except HttpResponseError as exc:
        status = getattr(exc, "status_code", None)
        if status == 403:
            raise AzurePermissionError(f"{action}: permission denied (HTTP 403: {service_message(exc)}); "
                                       f"{RBAC_HINT}") from None
        if status == 429:
            raise AzureServiceError(f"{action}: throttled by Azure (HTTP 429) even after retries; wait a "
                                    f"minute and run the cell again, or check quotas in the portal") from None
        raise AzureServiceError(f"{action} failed (HTTP {status}): {service_message(exc)}") from None
    except ServiceRequestError as exc:
        raise AzureServiceError(f"{action}: could not reach Azure ({service_message(exc)}); check the network "
                                f"connection and run the cell again") from None
    except AzureError as exc:  # the SDK's own errors (validation, serialisation) may quote URLs and bodies too
        raise AzureServiceError(f"{action} failed ({type(exc).__name__}): {service_message(exc)}") from None
