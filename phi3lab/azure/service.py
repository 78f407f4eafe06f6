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

RBAC_HINT = (f"ask an Owner of the resource group (or of the subscription) to assign you the Azure AI Developer "
             f"role (role id {AZURE_AI_DEVELOPER}) on the resource group, or Owner/Contributor on the subscription to "
             f"fine-tune catalog models: portal → Access control (IAM) → Add role assignment")


class AzurePermissionError(Phi3LabError):
    """The signed-in account lacks a role (403)."""


class AzureNotFoundError(Phi3LabError):
    """A resource, model or region does not exist (404)."""


class AzureConflictError(Phi3LabError):
    """The service refused a change because of the resource's state (409)."""


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
        raise _http_error(action, exc) from None
    except ClientAuthenticationError as exc:
        status = getattr(exc, "status_code", None)
        if status == 403:
            raise AzurePermissionError(f"{action}: permission denied (HTTP 403: {service_message(exc)}); "
                                       f"{RBAC_HINT}") from None
        raise AzureLoginError(f"{action}: {LOGIN_HINT} [{service_message(exc)}]") from None
    except HttpResponseError as exc:
        raise _http_error(action, exc) from None
    except ServiceRequestError as exc:
        raise AzureServiceError(f"{action}: could not reach Azure ({service_message(exc)}); check the network "
                                f"connection and run the cell again") from None
    except AzureError as exc:  # the SDK's own errors (validation, serialisation) may quote URLs and bodies too
        raise AzureServiceError(f"{action} failed ({type(exc).__name__}): {service_message(exc)}") from None


def _http_error(action: str, exc) -> Phi3LabError:
    """One masked sentence per HTTP status, with what to do about it."""
    status, message = getattr(exc, "status_code", None), service_message(exc)
    if status == 404 or status is None and type(exc).__name__ == "ResourceNotFoundError":
        return AzureNotFoundError(f"{action}: not found ({message}). Check the name, the resource group and the "
                                  f"region in your Azure settings")
    if status == 403:
        return AzurePermissionError(f"{action}: permission denied (HTTP 403: {message}); {RBAC_HINT}")
    if status == 409:
        return AzureConflictError(f"{action}: refused because of the resource's current state (HTTP 409: {message}). "
                                  f"Something still uses it or another operation is running; finish or remove "
                                  f"that first (a model's deployment goes before the model), then run the cell again")
    if status == 429:
        return AzureServiceError(f"{action}: throttled by Azure (HTTP 429) even after retries; wait a minute and run "
                                 f"the cell again, or check quotas in the portal")
    if status and status >= 500:
        return AzureServiceError(f"{action}: Azure had an internal error (HTTP {status}) even after retries: "
                                 f"{message}. Nothing to fix on your side; run the cell again in a few minutes")
    return AzureServiceError(f"{action} failed (HTTP {status}): {message}")
