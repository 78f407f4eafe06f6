"""Find and remove what the course created in Azure, in the order the service accepts.

``cleanup_azure()`` lists the course's billable resources (serverless endpoints, fine-tuned
models, data assets, fine-tuning jobs) with their state. Only with ``confirm=True`` does it act:

1. cancel fine-tuning jobs that are still running (compute is billed while they run);
2. delete serverless endpoints and wait for each (hourly hosting of a fine-tuned model);
3. archive fine-tuned model versions (the service refuses while an endpoint still uses one, and
   there is no public delete for workspace models, so archiving is the SDK's way to retire them);
4. archive data assets (their blobs cost storage).

Running it twice is fine: a second run finds nothing active, and "already gone" counts as done.
Resources are recognised by the course's tag (``course: phi3lab``) or the ``phi3lab`` name prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import Phi3LabError
from .deployment import COURSE_TAGS, wait_for
from .guard import strict_confirm
from .service import AzureNotFoundError, azure_errors, service_message
from .settings import AzureSettings, load_settings

PREFIX = "phi3lab"
RUNNING_JOB_STATES = {"NotStarted", "Queued", "Preparing", "Provisioning", "Starting", "Running", "Finalizing",
                      "CancelRequested"}
ORDER = ("job", "endpoint", "model", "data")
WHY_BILLED = {
    "job": "compute while running",
    "endpoint": "hourly hosting, even when idle",
    "model": "storage; must outlive its endpoint",
    "data": "blob storage",
}


@dataclass
class CourseResource:
    kind: str  # one of ORDER
    name: str
    version: str | None
    state: str
    action: str  # what cleanup does with it: cancel, delete, archive, keep
    outcome: str = ""

    def line(self) -> str:
        label = f"{self.name}:{self.version}" if self.version else self.name
        done = f" -> {self.outcome}" if self.outcome else ""
        return f"  {self.kind:<8} {label:<40} {self.state:<12} {self.action:<8} ({WHY_BILLED[self.kind]}){done}"


@dataclass
class CleanupReport:
    dry_run: bool
    resources: list[CourseResource] = field(default_factory=list)
    note: str = ""

    def summary(self) -> str:
        if self.dry_run:
            head = "DRY RUN: nothing was changed." + (
                " Run cleanup_azure(confirm=True) to act on the list below." if self.resources else "")
        else:
            head = "Cleanup done."
        lines = [head]
        if self.note:
            lines.append(self.note)
        if self.resources:
            lines.append(f"  {'kind':<8} {'name':<40} {'state':<12} {'action':<8}")
            lines += [r.line() for r in self.resources]
        elif not self.note:
            lines.append("No course resources found: nothing is billed by the course.")
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
    with azure_errors("listing serverless endpoints"):
        for endpoint in ml.serverless_endpoints.list():
            if _is_course(endpoint.name, endpoint.tags):
                found.append(CourseResource("endpoint", endpoint.name, None, str(endpoint.provisioning_state),
                                            "delete"))
    for kind, operations in (("model", ml.models), ("data", ml.data)):
        with azure_errors(f"listing {kind} assets"):
            for container in operations.list():
                if _is_course(container.name, getattr(container, "tags", None)):
                    for item in operations.list(name=container.name):
                        found.append(CourseResource(kind, item.name, str(item.version), "active", "archive"))
    return found


def cleanup_azure(settings: AzureSettings | None = None, *, confirm: bool = False, timeout: float = 900.0,
                  credential=None, transport=None) -> CleanupReport:
    """List the course's Azure resources; with ``confirm=True`` cancel, delete and archive them in order.

    Without settings there is nothing the course could have created, so even ``confirm=True`` only explains.
    """
    act = strict_confirm(confirm)
    settings = settings or load_settings()
    if settings is None:
        return CleanupReport(True, note=(
            "No Azure settings, so nothing to list (and nothing the course could have created). With settings, "
            "this lists the course's jobs, endpoints, fine-tuned models and data assets, and with confirm=True "
            "handles them in this order: cancel running jobs, delete endpoints (waiting for each), archive "
            "fine-tuned models, archive data assets."))
    from .auth import ml_client

    ml = ml_client(settings, credential=credential, transport=transport)
    resources = list_course_resources(ml)
    if not act:
        return CleanupReport(True, resources)
    for resource in resources:
        resource.outcome = _act(ml, resource, timeout)
    return CleanupReport(False, resources)


def _act(ml, resource: CourseResource, timeout: float) -> str:
    name, version = resource.name, resource.version
    try:
        if resource.action == "cancel":
            with azure_errors(f"cancelling job {name}"):
                wait_for(ml.jobs.begin_cancel(name), timeout, f"cancelling job {name}")
            return "cancelled"
        if resource.action == "delete":
            with azure_errors(f"deleting endpoint {name}"):
                wait_for(ml.serverless_endpoints.begin_delete(name), timeout, f"deleting endpoint {name}")
            return "deleted"
        if resource.action == "archive":
            operations = ml.models if resource.kind == "model" else ml.data
            with azure_errors(f"archiving {resource.kind} {name}:{version}"):
                operations.archive(name, version=version)
            return "archived"
    except AzureNotFoundError:
        return "already gone"
    except Phi3LabError as exc:  # report and go on: one refusal must not hide the rest of the list
        return f"FAILED: {service_message(exc)}"
    return "kept (finished jobs cost nothing)"
