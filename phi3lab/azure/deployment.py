"""Deploy the fine-tuned model as a serverless endpoint in Azure AI Foundry, with a money guard.

``deploy_serverless(...)`` checks the endpoint name against the service's rule before any call,
and, unless ``confirm=True``, only shows the exact PUT the real SDK would send. With
confirmation it creates the endpoint, waits for it with a timeout, fetches its key and returns
a ``Deployment`` whose ``.endpoint`` is a ``phi3lab.endpoints.AzureEndpoint`` (queried through
the ``openai`` client on the endpoint's ``/v1`` route). Keys are never shown: summaries mask them.

The REST body carries two settings the SDK's ``ServerlessEndpoint`` entity leaves out: the
required ``authMode`` (key authentication) and ``contentSafety``, the endpoint's content filter,
set explicitly (on unless ``content_filter=False``; ``facts.FACTS["content_filter"]``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

from ..errors import Phi3LabError
from ..secrets import mask
from .dryrun import RecordedRequest, dry_run, show_requests
from .finetuning import NAME_PREFIX
from .guard import confirmed
from .service import azure_errors
from .settings import PLACEHOLDER_SETTINGS, AzureSettings, load_settings
from .simulator import WORKSPACE_ID, service_routes

ENDPOINT_NAME_RULE = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{0,51}$")
DEFAULT_ENDPOINT = "phi3lab-chat"
COURSE_TAGS = {"course": "phi3lab"}  # how cleanup recognises what the course created
DEPLOY_TIMEOUT_S = 1800.0
AUTH_MODE = "Key"  # required by the REST body; the course queries the endpoint with its key
NEWEST_MODEL = f"{NAME_PREFIX}-<newest>"  # shown by a dry run: the real run deploys your newest fine-tuned model


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


def content_safety_status(content_filter) -> str:
    """``Enabled`` or ``Disabled`` for the REST body; only a plain bool is accepted (a typo must not turn it off)."""
    if content_filter is True or content_filter is False:
        return "Enabled" if content_filter else "Disabled"
    raise DeploymentError(f"content_filter must be True (screen prompts and completions, the default) or False, "
                          f"not a {type(content_filter).__name__}")


@cache
def _endpoint_class():
    from azure.ai.ml._restclient.arm_ml_service.models import ContentSafety
    from azure.ai.ml.entities import ServerlessEndpoint

    class CourseEndpoint(ServerlessEndpoint):
        """The SDK's entity plus the two REST properties it leaves out: ``authMode`` and ``contentSafety``."""

        def _to_rest_object(self):
            rest = super()._to_rest_object()
            rest.properties.auth_mode = AUTH_MODE
            rest.properties.content_safety = ContentSafety(content_safety_status=self.content_safety_status)
            return rest

    return CourseEndpoint


def endpoint_entity(name: str, model_id: str, location: str, content_filter: bool = True):
    """The serverless endpoint to create, with the course's tags, key auth and an explicit content filter."""
    endpoint = _endpoint_class()(name=name, model_id=model_id, tags=dict(COURSE_TAGS))
    endpoint.location = location
    endpoint.content_safety_status = content_safety_status(content_filter)
    return endpoint


@dataclass
class Deployment:
    """What deploy_serverless did: the endpoint's name, model, state, URL and (hidden) key."""

    dry_run: bool
    name: str
    model_id: str
    content_safety: str
    state: str | None = None
    scoring_uri: str | None = None
    key: str | None = field(default=None, repr=False)
    requests: list[RecordedRequest] = field(default_factory=list, repr=False)

    @property
    def endpoint(self):
        """The endpoint for ``query_endpoint`` (the ``openai`` client on ``<scoring URI>/v1`` with the key)."""
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
        lines = [head, f"model: {self.model_id}", f"auth: {AUTH_MODE}; content filtering: {self.content_safety}"]
        if self.content_safety == "Disabled":
            lines.append("  prompts and completions are not screened for harmful content: you are responsible")
        if self.scoring_uri:
            lines += [f"scoring URI: {self.scoring_uri}", f"key: {mask(self.key)} (masked)"]
        if self.requests:
            lines += ["", show_requests(self.requests, "Requests that would be sent" if self.dry_run else "Requests")]
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
        raise DeploymentError(f"{action} did not finish within {timeout:.0f} s. It continues in Azure: check it in "
                              "the portal (for an endpoint: endpoint_state(name) or Models + endpoints) and run the "
                              "cell again later; cleanup_azure(confirm=True) removes what you no longer need.")
    return poller.result()


def deploy_serverless(model: str | None = None, version: str | int | None = None,
                      endpoint_name: str = DEFAULT_ENDPOINT, settings: AzureSettings | None = None, *,
                      confirm: bool = False, content_filter: bool = True, timeout: float = DEPLOY_TIMEOUT_S,
                      credential=None, transport=None) -> Deployment:
    """Create a serverless endpoint for a fine-tuned workspace model (only with ``confirm=True``).

    ``model=None`` deploys your newest fine-tuned course model (``phi3lab-ft-…``), ``version=None``
    its latest version. ``content_filter`` is written into the request either way (default on).
    Without confirmation (or settings) the real SDK builds the request against a recording
    transport and nothing leaves this machine.
    """
    settings = settings or load_settings()
    send = confirmed(confirm, settings)
    validate_endpoint_name(endpoint_name)
    safety = content_safety_status(content_filter)
    if not send:
        return _dry_run(model or NEWEST_MODEL, version, endpoint_name, settings, content_filter)
    from .auth import ml_client

    ml = ml_client(settings, credential=credential, **({"transport": transport} if transport is not None else {}))
    with azure_errors(f"looking up project {settings.project}"):
        workspace = ml.workspaces.get(settings.project)
    found = _fine_tuned_model(ml, model, version)
    # The SDK keeps the workspace GUID in a private attribute (pinned azure-ai-ml 1.35.2); only it has it.
    model_id = workspace_model_id(workspace.location, workspace._workspace_id, found.name, found.version)
    endpoint = endpoint_entity(endpoint_name, model_id, workspace.location, content_filter)
    with azure_errors(f"creating serverless endpoint {endpoint_name}"):
        created = wait_for(ml.serverless_endpoints.begin_create_or_update(endpoint), timeout,
                           f"creating endpoint {endpoint_name}")
    if (created.provisioning_state or "").lower() != "succeeded":
        raise DeploymentError(f"endpoint {endpoint_name} ended in state {created.provisioning_state!r}; see the "
                              "portal's Models + endpoints page for the reason, then delete it with cleanup_azure")
    with azure_errors(f"reading the keys of {endpoint_name}"):
        keys = ml.serverless_endpoints.get_keys(endpoint_name)
    return Deployment(False, endpoint_name, model_id, safety, created.provisioning_state, created.scoring_uri,
                      keys.primary_key)


def _fine_tuned_model(ml, model: str | None, version):
    """The model to deploy: the named one (latest version unless given), else the newest ``phi3lab-ft-…`` model."""
    if model is None:
        with azure_errors("listing your fine-tuned models"):
            ours = [m for m in ml.models.list() if m.name.startswith(f"{NAME_PREFIX}-")]
        if not ours:
            raise DeploymentError(f"no fine-tuned course model ({NAME_PREFIX}-…) in this project yet: run the "
                                  f"fine-tuning job of notebook 03 until Completed, or pass model=<its name>")
        model = max(ours, key=_created_at).name
    with azure_errors(f"looking up the fine-tuned model {model}"):
        return ml.models.get(model, version=str(version)) if version else ml.models.get(model, label="latest")


def _created_at(model) -> str:
    context = getattr(model, "creation_context", None)
    return str(getattr(context, "created_at", "") or "")


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


def _dry_run(model: str, version, endpoint_name: str, settings: AzureSettings | None, content_filter) -> Deployment:
    run = dry_run(service_routes(settings), settings)
    region = run.settings.region or PLACEHOLDER_SETTINGS.region
    model_id = workspace_model_id(region, WORKSPACE_ID, model, version or "<latest>")
    endpoint = endpoint_entity(endpoint_name, model_id, region, content_filter)
    created = run.ml_client().serverless_endpoints.begin_create_or_update(endpoint).result()
    return Deployment(True, endpoint_name, model_id, endpoint.content_safety_status, created.provisioning_state,
                      requests=run.requests)
