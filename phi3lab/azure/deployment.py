"""Deploy the fine-tuned model as a serverless endpoint in Azure AI Foundry, with a money guard.

``deploy_serverless(...)`` checks the endpoint name against the service's rule before any call,
and, unless ``confirm=True``, only shows the exact PUT the real SDK would send. With
confirmation it creates the endpoint, waits for it with a timeout, fetches its key and returns
a ``Deployment`` whose ``.endpoint`` is a ``phi3lab.endpoints.AzureEndpoint`` (queried through
azure-ai-inference). Keys are never shown: every summary masks them.

Content safety: the REST model of a serverless endpoint has a ``contentSafety`` property, the
SDK's ``ServerlessEndpoint`` entity does not, so the request leaves it out and the service
applies its default: Azure AI Content Safety filters prompts and completions of serverless
(pay-as-you-go) deployments. Opting out is offered only for models deployed to managed compute
(real-time endpoints), not here.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from ..errors import Phi3LabError
from ..secrets import mask
from .dryrun import RecordedRequest, accepting, dry_run, show_requests
from .guard import confirmed
from .service import azure_errors
from .settings import PLACEHOLDER_SETTINGS, AzureSettings, load_settings

ENDPOINT_NAME_RULE = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{0,51}$")
DEFAULT_ENDPOINT = "phi3lab-chat"
FINETUNED_MODEL = "phi3lab-ft"  # the registered-model name the course's fine-tuning job writes
COURSE_TAGS = {"course": "phi3lab"}  # how cleanup recognises what the course created
DEPLOY_TIMEOUT_S = 1800.0
ENDPOINT_TYPE = "Microsoft.MachineLearningServices/workspaces/serverlessEndpoints"

# The serverless-endpoint API is marked experimental in the pinned SDK; its notice is noise here.
logging.getLogger("azure.ai.ml._utils._experimental").setLevel(logging.ERROR)


class DeploymentError(Phi3LabError):
    """The endpoint name is invalid, or creating, waiting for or deleting the endpoint failed."""


def validate_endpoint_name(name: str) -> str:
    """The name when it matches ``^[a-zA-Z][a-zA-Z0-9-]{0,51}$``; otherwise an error with a fixed suggestion."""
    if isinstance(name, str) and ENDPOINT_NAME_RULE.match(name):
        return name
    suggestion = re.sub(r"[^a-zA-Z0-9-]+", "-", str(name)).strip("-")
    suggestion = ("ep-" + suggestion if not suggestion[:1].isalpha() else suggestion)[:52].rstrip("-") or DEFAULT_ENDPOINT
    raise DeploymentError(f"endpoint name {name!r} is not allowed: it must start with a letter and contain only "
                          f"letters, digits and '-', at most 52 characters. Try {suggestion!r}.")


def workspace_model_id(region: str, workspace_id: str, model: str, version: str | int) -> str:
    """The id a serverless endpoint needs for a model registered in a workspace (a fine-tuned model)."""
    return f"azureml://locations/{region}/workspaces/{workspace_id}/models/{model}/versions/{version}"


@dataclass
class Deployment:
    """What deploy_serverless did: the endpoint's name, model, state, URL and (hidden) key."""

    dry_run: bool
    name: str
    model_id: str
    state: str | None = None
    scoring_uri: str | None = None
    key: str | None = field(default=None, repr=False)
    requests: list[RecordedRequest] = field(default_factory=list, repr=False)

    @property
    def endpoint(self):
        """The endpoint for ``query_endpoint`` (azure-ai-inference with the key)."""
        from ..endpoints import AzureEndpoint

        if self.dry_run or not (self.scoring_uri and self.key):
            raise DeploymentError("a dry run deploys nothing, so there is no endpoint to query; "
                                  "run deploy_serverless(..., confirm=True) first")
        return AzureEndpoint(self.scoring_uri, self.key, name=self.name)

    def summary(self) -> str:
        if self.dry_run:
            head = ("DRY RUN: nothing was sent and nothing is billed. Run again with confirm=True to create the "
                    "endpoint (a fine-tuned model's endpoint is billed per hour while it exists, even when idle).")
        else:
            head = f"Endpoint {self.name}: {self.state}"
        lines = [head, f"model: {self.model_id}"]
        if self.scoring_uri:
            lines += [f"scoring URI: {self.scoring_uri}", f"key: {mask(self.key)} (masked)"]
        if self.requests:
            lines += ["", show_requests(self.requests, "Request that would be sent" if self.dry_run else "Requests")]
        return "\n".join(lines)

    __str__ = summary

    def __repr__(self) -> str:
        return f"Deployment(name={self.name!r}, dry_run={self.dry_run}, state={self.state!r}, key='***')"

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.summary())


def wait_for(poller, timeout: float, action: str):
    """The poller's result, or DeploymentError after ``timeout`` seconds (the operation goes on in Azure)."""
    poller.wait(timeout)
    if not poller.done():
        raise DeploymentError(f"{action} did not finish within {timeout:.0f} s. It continues in Azure: check "
                              "endpoint_state(name) or the portal's Models + endpoints page, and delete it with "
                              "cleanup_azure(confirm=True) if you no longer need it.")
    return poller.result()


def deploy_serverless(model: str = FINETUNED_MODEL, version: str | int | None = None,
                      endpoint_name: str = DEFAULT_ENDPOINT, settings: AzureSettings | None = None, *,
                      confirm: bool = False, timeout: float = DEPLOY_TIMEOUT_S, credential=None,
                      transport=None) -> Deployment:
    """Create a serverless endpoint for a fine-tuned workspace model (only with ``confirm=True``).

    ``version=None`` deploys the model's latest version. Without confirmation (or settings) the
    real SDK builds the request against a recording transport and nothing leaves this machine.
    """
    settings = settings or load_settings()
    send = confirmed(confirm, settings)
    validate_endpoint_name(endpoint_name)
    if not send:
        return _dry_run(model, version, endpoint_name, settings)
    from azure.ai.ml.entities import ServerlessEndpoint

    from .auth import ml_client

    ml = ml_client(settings, credential=credential, transport=transport)
    with azure_errors(f"looking up project {settings.project}"):
        workspace = ml.workspaces.get(settings.project)
    with azure_errors(f"looking up the fine-tuned model {model}"):
        found = ml.models.get(model, version=str(version)) if version else ml.models.get(model, label="latest")
    # The SDK keeps the workspace GUID in a private attribute; it is the only place that has it.
    model_id = workspace_model_id(workspace.location, workspace._workspace_id, found.name, found.version)
    endpoint = ServerlessEndpoint(name=endpoint_name, model_id=model_id, tags=dict(COURSE_TAGS))
    endpoint.location = workspace.location
    with azure_errors(f"creating serverless endpoint {endpoint_name}"):
        poller = ml.serverless_endpoints.begin_create_or_update(endpoint)
        created = wait_for(poller, timeout, f"creating endpoint {endpoint_name}")
    if (created.provisioning_state or "").lower() != "succeeded":
        raise DeploymentError(f"endpoint {endpoint_name} ended in state {created.provisioning_state!r}; see the "
                              "portal's Models + endpoints page for the reason, then delete it with cleanup_azure")
    with azure_errors(f"reading the keys of {endpoint_name}"):
        keys = ml.serverless_endpoints.get_keys(endpoint_name)
    return Deployment(False, endpoint_name, model_id, created.provisioning_state, created.scoring_uri,
                      keys.primary_key)


def endpoint_state(name: str, settings: AzureSettings | None = None, credential=None, transport=None) -> str:
    """The provisioning state of an existing endpoint (a free read)."""
    from .auth import ml_client

    ml = ml_client(settings, credential=credential, transport=transport)
    with azure_errors(f"reading endpoint {validate_endpoint_name(name)}"):
        return str(ml.serverless_endpoints.get(name).provisioning_state)


def connect_endpoint(name: str = DEFAULT_ENDPOINT, settings: AzureSettings | None = None, credential=None,
                     transport=None):
    """An ``AzureEndpoint`` for an endpoint that already exists: its URL and key, read from Azure."""
    from ..endpoints import AzureEndpoint
    from .auth import ml_client

    ml = ml_client(settings, credential=credential, transport=transport)
    with azure_errors(f"reading endpoint {validate_endpoint_name(name)}"):
        found = ml.serverless_endpoints.get(name)
        keys = ml.serverless_endpoints.get_keys(name)
    return AzureEndpoint(found.scoring_uri, keys.primary_key, name=name)


def _dry_run(model: str, version, endpoint_name: str, settings: AzureSettings | None) -> Deployment:
    from azure.ai.ml.entities import ServerlessEndpoint

    accept = accepting(200, ENDPOINT_TYPE, provisioningState="Succeeded", authMode="Key")
    run = dry_run([("PUT", r"/serverlessEndpoints/[^/?]+\?", accept)], settings)
    region = run.settings.region or PLACEHOLDER_SETTINGS.region
    model_id = workspace_model_id(region, "<workspace-id>", model, version or "<latest>")
    endpoint = ServerlessEndpoint(name=endpoint_name, model_id=model_id, tags=dict(COURSE_TAGS))
    endpoint.location = region
    created = run.ml_client().serverless_endpoints.begin_create_or_update(endpoint).result()
    return Deployment(True, endpoint_name, model_id, created.provisioning_state, requests=run.requests)
