"""Find and remove what the course created in Azure, in the order the service accepts, and say what remains.

``cleanup_azure()`` lists the course's resources (fine-tuning jobs, serverless endpoints,
fine-tuned models, data assets) with their state. Only with ``confirm=True`` does it act:

1. cancel fine-tuning and training jobs that are still running (compute is billed while they run);
2. delete the course's GPU compute clusters (which also releases their quota), once no job runs on them;
3. delete serverless endpoints and wait for each (hourly hosting of a fine-tuned model);
4. delete fine-tuned model versions through the REST API (the service refuses while an endpoint
   still uses one, hence step 3 first); archive one only where the service refuses the delete;
5. delete data asset versions and the files they uploaded to the workspace's blob storage.

Running it twice is fine: "already gone" counts as done. What stays (finished jobs' history, the
project itself) is listed with how to remove it in the portal. ``delete_course_resource_group``
is the last, separately confirmed step: it deletes a resource group the course created for itself
(tagged ``course: phi3lab``), with everything in it.
Resources are recognised by the course's tag (``course: phi3lab``) or the ``phi3lab`` name prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import Phi3LabError
from .deployment import COURSE_TAGS, wait_for
from .dryrun import Reply, dry_run, show_requests
from .guard import confirmed, strict_confirm
from .service import AzureNotFoundError, azure_errors, service_message
from .settings import AzureSettings, load_settings

PREFIX = "phi3lab"
RUNNING_JOB_STATES = {"NotStarted", "Queued", "Preparing", "Provisioning", "Starting", "Running", "Finalizing",
                      "CancelRequested"}
ORDER = ("job", "compute", "endpoint", "model", "data")
WHY_BILLED = {
    "job": "compute while running",
    "compute": "node-hours while nodes run; holds quota",
    "endpoint": "hourly hosting, even when idle",
    "model": "storage; must outlive its endpoint",
    "data": "blob storage",
}
PORTAL = {
    "job": "Foundry portal → your project → Fine-tuning (or Jobs) → select the job → Archive",
    "compute": "Azure ML studio → your workspace → Compute → Compute clusters → select the cluster → Delete",
    "endpoint": "Foundry portal → your project → Models + endpoints → select the endpoint → Delete",
    "model": "Foundry portal → your project → Models → select the version → Delete",
    "data": "Foundry portal → your project → Data → select the version → Delete (and its file in the storage "
            "account's azureml-blobstore container)",
}
DELETE_REFUSED = (400, 405)  # the service does not allow a REST delete of this version: archive it instead


@dataclass
class CourseResource:
    kind: str  # one of ORDER
    name: str
    version: str | None
    state: str
    action: str  # what cleanup does with it: cancel, delete, keep
    outcome: str = ""
    path: str | None = None  # a data version's uploaded file (azureml://datastores/<store>/paths/<path>)

    def line(self) -> str:
        label = f"{self.name}:{self.version}" if self.version else self.name
        done = f" -> {self.outcome}" if self.outcome else ""
        return f"  {self.kind:<8} {label:<40} {self.state:<12} {self.action:<8} ({WHY_BILLED[self.kind]}){done}"

    def remains(self) -> str | None:
        """What is left of this resource after cleanup, and how to remove it in the portal (None: nothing)."""
        if self.action == "keep":
            return f"job {self.name}: its history stays in the project (no charge); to hide it: {PORTAL['job']}"
        if self.outcome.startswith("archived"):
            return f"{self.kind} {self.name}:{self.version} is archived, not deleted; to delete it: {PORTAL[self.kind]}"
        if self.outcome.startswith("FAILED"):
            return f"{self.kind} {self.name}: still there; run cleanup again, or {PORTAL[self.kind]}"
        return None


@dataclass
class CleanupReport:
    dry_run: bool
    resources: list[CourseResource] = field(default_factory=list)
    note: str = ""

    @property
    def remaining(self) -> list[str]:
        left = [line for line in (r.remains() for r in self.resources) if line]
        if not self.dry_run:
            left.append("the project, its hub and their storage account, key vault and container registry: not "
                        "touched; delete them in the Azure portal, or run delete_course_resource_group(confirm=True) "
                        "if the course created the resource group for itself")
        return left

    def summary(self) -> str:
        if self.dry_run:
            head = "DRY RUN: nothing was changed." + (
                " Run cleanup_azure(confirm=True) to act on the list below." if self.resources else "")
        else:
            head = "Cleanup done."
        lines = [head] + ([self.note] if self.note else [])
        if self.resources:
            lines.append(f"  {'kind':<8} {'name':<40} {'state':<12} {'action':<8}")
            lines += [r.line() for r in self.resources]
        elif not self.note:
            lines.append("No course resources found: nothing is billed by the course.")
        if self.remaining and not self.dry_run:
            lines += ["What remains:", *(f"  - {line}" for line in self.remaining)]
        return "\n".join(lines)

    __str__ = summary

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.summary())


def _is_course(name: str, tags: dict | None) -> bool:
    return name.startswith(PREFIX) or any((tags or {}).get(k) == v for k, v in COURSE_TAGS.items())


def list_course_resources(ml) -> list[CourseResource]:
    """The course's resources in cleanup order, each with its state and planned action (reads only)."""
    found: list[CourseResource] = []
    with azure_errors("listing fine-tuning jobs"):
        for job in ml.jobs.list():
            if _is_course(job.name, job.tags):
                running = job.status in RUNNING_JOB_STATES
                found.append(CourseResource("job", job.name, None, str(job.status), "cancel" if running else "keep"))
    with azure_errors("listing compute clusters"):
        for compute in ml.compute.list(compute_type="AmlCompute"):
            if _is_course(compute.name, compute.tags):
                found.append(CourseResource("compute", compute.name, None, str(compute.provisioning_state),
                                            "delete"))
    with azure_errors("listing serverless endpoints"):
        for endpoint in ml.serverless_endpoints.list():
            if _is_course(endpoint.name, endpoint.tags):
                found.append(CourseResource("endpoint", endpoint.name, None, str(endpoint.provisioning_state),
                                            "delete"))
    for kind, operations in (("model", ml.models), ("data", ml.data)):
        with azure_errors(f"listing {kind} assets"):
            for container in operations.list():
                if _is_course(container.name, getattr(container, "tags", None)):
                    found += [CourseResource(kind, item.name, str(item.version), "active", "delete",
                                             path=getattr(item, "path", None) if kind == "data" else None)
                              for item in operations.list(name=container.name)]
    return found


def cleanup_azure(settings: AzureSettings | None = None, *, confirm: bool = False, timeout: float = 900.0,
                  credential=None, transport=None) -> CleanupReport:
    """List the course's Azure resources; with ``confirm=True`` cancel, delete (or archive) them in order.

    Without settings there is nothing the course could have created, so even ``confirm=True`` only explains.
    """
    act = strict_confirm(confirm)
    settings = settings or load_settings()
    if settings is None:
        return CleanupReport(True, note=(
            "No Azure settings, so nothing to list (and nothing the course could have created). With settings, "
            "this lists the course's jobs, compute clusters, endpoints, fine-tuned models and data assets, and with "
            "confirm=True handles them in this order: cancel running jobs, delete compute clusters (releasing their "
            "quota), delete endpoints (waiting for each), delete fine-tuned models (archive where the service "
            "refuses a delete), delete data assets and their files. "
            "A resource group the course created for itself goes last, with delete_course_resource_group()."))
    from .auth import ml_client

    ml = ml_client(settings, credential=credential, **({"transport": transport} if transport is not None else {}))
    resources = list_course_resources(ml)
    if not act:
        return CleanupReport(True, resources)
    for resource in resources:
        resource.outcome = _act(ml, resource, timeout, transport)
    return CleanupReport(False, resources)


def _act(ml, resource: CourseResource, timeout: float, transport) -> str:
    name, version = resource.name, resource.version
    try:
        if resource.action == "cancel":
            with azure_errors(f"cancelling job {name}"):
                wait_for(ml.jobs.begin_cancel(name), timeout, f"cancelling job {name}")
            return "cancelled"
        if resource.kind == "compute":
            with azure_errors(f"deleting compute cluster {name}"):
                wait_for(ml.compute.begin_delete(name), timeout, f"deleting compute cluster {name}")
            return "deleted (its quota is released)"
        if resource.kind == "endpoint":
            with azure_errors(f"deleting endpoint {name}"):
                wait_for(ml.serverless_endpoints.begin_delete(name), timeout, f"deleting endpoint {name}")
            return "deleted"
        if resource.kind in ("model", "data"):
            with azure_errors(f"deleting {resource.kind} {name}:{version}"):
                outcome = _delete_version(ml, resource)
            if resource.kind == "data" and resource.path and outcome == "deleted":
                outcome += _delete_uploaded_file(ml, resource.path, transport)
            return outcome
    except AzureNotFoundError:
        return "already gone"
    except Phi3LabError as exc:  # report and go on: one refusal must not hide the rest of the list
        return f"FAILED: {service_message(exc)}"
    return "kept (finished jobs cost nothing)"


def _delete_version(ml, resource: CourseResource) -> str:
    """DELETE the model or data version over REST; archive it only where the service refuses the delete."""
    from azure.core.exceptions import HttpResponseError

    # The SDK exposes only archive for versions; its generated REST client (pinned azure-ai-ml 1.35.2) has delete.
    operations = ml.models if resource.kind == "model" else ml.data
    rest = ml.models._model_versions_operation if resource.kind == "model" else ml.data._operation
    try:
        rest.delete(ml.resource_group_name, ml.workspace_name, resource.name, resource.version)
        return "deleted"
    except HttpResponseError as exc:
        if exc.status_code not in DELETE_REFUSED:
            raise
        operations.archive(resource.name, version=resource.version)
        return f"archived (the service refused the delete: {service_message(exc)})"


def datastore_blob(ml, path: str, transport=None):
    """The blob client for ``azureml://datastores/<store>/paths/<blob>`` (None: not in a workspace datastore)."""
    from azure.storage.blob import BlobServiceClient

    match = re.match(r"azureml://datastores/(?P<store>[^/]+)/paths/(?P<blob>.+)$", path)
    if not match:
        return None
    store = ml.datastores.get(match["store"], include_secrets=True)
    service = BlobServiceClient(f"https://{store.account_name}.blob.{store.endpoint}",
                                credential=store.credentials.account_key,
                                **({"transport": transport} if transport is not None else {}))
    return service.get_blob_client(store.container_name, match["blob"])


def _delete_uploaded_file(ml, path: str, transport) -> str:
    """Delete the blob a data version pointed at; the version's delete leaves it in the storage account."""
    try:
        with azure_errors(f"deleting the uploaded file {path}"):
            blob = datastore_blob(ml, path, transport)
            if blob is None:
                return f"; its file {path} is not in a workspace datastore, so it was left alone"
            blob.delete_blob()
    except AzureNotFoundError:
        return " (its file was already gone)"
    return " with its uploaded file"


def delete_course_resource_group(settings: AzureSettings | None = None, *, confirm: bool = False,
                                 timeout: float = 3600.0, credential=None, transport=None) -> str:
    """The last step: delete the resource group, with everything in it, if the course created it for itself.

    Only a group tagged ``course: phi3lab`` is deleted (create one with
    ``az group create -n <name> -l <region> --tags course=phi3lab``); any other group is left alone
    with an explanation. Its own ``confirm``: ``cleanup_azure(confirm=True)`` never deletes a group.
    """
    settings = settings or load_settings()
    send = confirmed(confirm, settings)
    group = settings.resource_group if settings else "your-resource-group"
    if not send:
        run = dry_run([("DELETE", r"/resourcegroups/[^/?]+\?", lambda r, m: Reply(200, None))], settings)
        run.resource_client().resource_groups.begin_delete(run.settings.resource_group)
        return (f"DRY RUN: nothing was deleted. delete_course_resource_group(confirm=True) deletes resource group "
                f"{group} and everything in it (project, hub, storage, endpoints), only if it carries the tag "
                f"course=phi3lab.\n" + show_requests(run.requests))
    from azure.mgmt.resource.resources import ResourceManagementClient

    from .auth import get_credential

    client = ResourceManagementClient(credential or get_credential(), settings.subscription_id,
                                      **({"transport": transport} if transport is not None else {}))
    try:
        with azure_errors(f"reading resource group {group}"):
            tags = client.resource_groups.get(group).tags or {}
    except AzureNotFoundError:
        return f"resource group {group} is already gone: nothing to delete"
    if any(tags.get(k) != v for k, v in COURSE_TAGS.items()):
        return (f"resource group {group} was not created by the course (no tag course=phi3lab), so it was left "
                f"alone. Delete it yourself if you mean to: Azure portal → Resource groups → {group} → "
                f"Delete resource group")
    with azure_errors(f"deleting resource group {group}"):
        wait_for(client.resource_groups.begin_delete(group), timeout, f"deleting resource group {group}")
    return f"resource group {group} deleted, with everything in it"
