"""A GPU compute cluster for training (Azure ML managed compute) that costs nothing while idle.

``create_gpu_cluster`` is a dry run unless ``confirm=True`` (the money guard). Real or dry, it sends
one sequence of requests:

1. the VM size among the region's sizes for Azure ML: unknown there, or without GPUs, is refused;
2. the cluster by name: one with another VM size is refused, one with this size is reused as it is;
3. the quota for the size's VM family (or the region's low-priority quota) for ``max_nodes`` nodes,
   before anything is created: a shortfall is refused with how to ask for more;
4. the cluster itself: min nodes 0 and a scale-down after ``idle_seconds``, so an idle cluster has no
   node to pay for; dedicated or low-priority nodes; tagged ``course: phi3lab`` for cleanup.

``cleanup_azure(confirm=True)`` deletes the course's clusters (which also releases their quota).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import Phi3LabError
from .deployment import COURSE_TAGS, wait_for
from .dryrun import RecordedRequest, Reply, accepting, dry_run, show_requests
from .facts import GPU_VM_SIZES
from .finetuning import _Live  # the real clients, shaped like a DryRun (shared with fine-tuning)
from .guard import confirmed
from .service import AzureNotFoundError, azure_errors
from .settings import AzureSettings, load_settings
from .simulator import service_routes

DEFAULT_CLUSTER = "phi3lab-gpu"
DEFAULT_VM_SIZE = "Standard_NC24ads_A100_v4"
IDLE_SECONDS = 600  # nodes wait this long after a job for the next one, then the cluster scales to 0
CREATE_TIMEOUT_S = 900.0
COMPUTE_TYPE = "Microsoft.MachineLearningServices/workspaces/computes"
SIMULATED_QUOTA_VCPUS = 96  # what a dry run assumes is free; the real run reads the subscription's quota


class ComputeError(Phi3LabError):
    """The cluster cannot be created or used as asked (size, quota, an existing cluster, GPUs per node)."""


@dataclass(frozen=True)
class VmSize:
    name: str
    family: str
    vcpus: int
    gpus: int


@dataclass
class Cluster:
    """What ``create_gpu_cluster`` did, or would do, and what it costs."""

    dry_run: bool
    name: str
    size: VmSize
    max_nodes: int
    tier: str
    idle_seconds: int
    action: str  # "create" or "reuse"
    quota: str
    requests: list[RecordedRequest] = field(default_factory=list)

    def cost_per_hour(self, price_per_node_hour: float, nodes: int | None = None) -> float:
        """What ``nodes`` running nodes (default: all) cost per hour at the price you looked up."""
        return price_per_node_hour * (self.max_nodes if nodes is None else nodes)

    def summary(self) -> str:
        verb = {"create": "create", "reuse": "reuse the existing"}[self.action]
        head = (f"DRY RUN: nothing was sent. With settings and confirm=True this would {verb} cluster {self.name}."
                if self.dry_run else f"Cluster {self.name}: {'created' if self.action == 'create' else 'reused'}.")
        lines = [head,
                 f"  VM size: {self.size.name} ({self.size.gpus} GPU(s), {self.size.vcpus} vCPUs per node)",
                 f"  nodes: 0 to {self.max_nodes}, {self.tier.replace('_', '-')}; scales to 0 after "
                 f"{self.idle_seconds} s without a job, so an idle cluster has no node to pay for",
                 f"  quota: {self.quota}"]
        if self.requests:
            lines += ["", show_requests(self.requests)]
        return "\n".join(lines)

    __str__ = summary

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.summary())


def create_gpu_cluster(name: str = DEFAULT_CLUSTER, vm_size: str = DEFAULT_VM_SIZE, max_nodes: int = 1, *,
                       low_priority: bool = False, idle_seconds: int = IDLE_SECONDS,
                       settings: AzureSettings | None = None, confirm: bool = False, timeout: float = CREATE_TIMEOUT_S,
                       credential=None, transport=None) -> Cluster:
    """Create (or reuse) a GPU cluster with min nodes 0 (only with ``confirm=True``; otherwise a dry run whose
    reads a test's ``transport`` may answer). ``low_priority``: cheaper nodes that Azure may take back
    mid-job; a preempted job restarts from scratch unless its checkpoints are kept."""
    settings = settings or load_settings()
    send = confirmed(confirm, settings)
    _check_request(name, max_nodes, idle_seconds)
    clients = _clients(send, settings, credential, transport)
    start = len(clients.requests)
    ml = clients.ml_client()
    size = find_vm_size(ml, vm_size, send)
    tier = "low_priority" if low_priority else "dedicated"
    existing = existing_cluster(ml, name)
    if existing is not None:
        _require_same_size(existing, size)
        return Cluster(not send, name, size, int(existing.max_instances or max_nodes),
                       str(existing.tier or tier).lower(), int(existing.idle_time_before_scale_down or idle_seconds),
                       "reuse", _reuse_note(existing), list(clients.requests[start:]))
    quota = check_quota(ml, size, max_nodes, low_priority, dry=not send)
    cluster = _aml_compute(name, size, max_nodes, tier, idle_seconds)
    with azure_errors(f"creating compute cluster {name}"):
        wait_for(ml.compute.begin_create_or_update(cluster), timeout, f"creating compute cluster {name}")
    return Cluster(not send, name, size, max_nodes, tier, idle_seconds, "create", quota,
                   list(clients.requests[start:]))


def _clients(send: bool, settings, credential, transport):
    if send:
        return _Live(settings, credential, transport)
    from .dryrun import RecordingTransport

    return dry_run(compute_routes(settings), settings, transport if isinstance(transport, RecordingTransport) else None)


def _check_request(name: str, max_nodes: int, idle_seconds: int) -> None:
    # The service's rule for compute names (Azure ML studio's create form states it).
    if not re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9-]{1,22}[A-Za-z0-9])", name) or re.search(r"-[0-9]*$", name):
        raise ComputeError(f"cluster name {name!r} is not allowed: 3 to 24 letters, digits and '-', starting with a "
                           f"letter, and a '-' must be followed by a letter later on (e.g. 'phi3lab-gpu')")
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
        raise ComputeError(f"max_nodes={max_nodes!r}: the most nodes the cluster may grow to, at least 1")
    if isinstance(idle_seconds, bool) or not isinstance(idle_seconds, int) or idle_seconds < 0:
        raise ComputeError(f"idle_seconds={idle_seconds!r}: seconds an idle node waits before it goes, 0 or more")


def _field(entity, snake: str, camel: str):
    """azure-ai-ml 1.35.2 copies the REST dict's camelCase keys onto VmSize and Usage, leaving the documented
    snake_case attributes None; read whichever is set."""
    value = getattr(entity, snake, None)
    return value if value is not None else getattr(entity, camel, None)


def find_vm_size(ml, name: str, live: bool = True) -> VmSize:
    """The VM size as the region offers it to Azure ML; refused when unknown there or without GPUs."""
    with azure_errors("listing the region's VM sizes"):
        sizes = list(ml.compute.list_sizes())
    found = {s.name.lower(): s for s in sizes if s.name}
    if name.lower() not in found:
        gpu_names = sorted(s.name for s in sizes if (s.gpus or 0) > 0)
        where = "this region" if live else "the dry run's table of GPU sizes (the real run reads the region's list)"
        raise ComputeError(f"VM size {name!r} is not offered for Azure ML compute in {where}. GPU sizes there: "
                           f"{', '.join(gpu_names) or 'none'}. Fix: pick one of them, or another region.")
    entry = found[name.lower()]
    size = VmSize(entry.name, entry.family or "", int(_field(entry, "v_cp_us", "vCPUs") or 0), int(entry.gpus or 0))
    if size.gpus < 1:
        raise ComputeError(f"VM size {size.name} has no GPU ({size.vcpus} vCPUs, 0 GPUs): fine-tuning Phi-3-mini "
                           f"needs one. Fix: pick a GPU size, e.g. {DEFAULT_VM_SIZE} (1 A100 80 GB) or "
                           f"Standard_NC4as_T4_v3 (1 T4 16 GB).")
    return size


def existing_cluster(ml, name: str):
    """The workspace's compute of this name, or None."""
    try:
        with azure_errors(f"reading compute {name}"):
            return ml.compute.get(name)
    except AzureNotFoundError:
        return None


def _require_same_size(existing, size: VmSize) -> None:
    kind, current = str(getattr(existing, "type", "")).lower(), str(getattr(existing, "size", "") or "")
    if kind != "amlcompute":
        raise ComputeError(f"a compute named {existing.name} already exists and is a {kind or 'compute'} "
                           f"resource, not a cluster. Fix: choose another name.")
    if current.lower() != size.name.lower():
        raise ComputeError(f"cluster {existing.name} already exists with VM size {current}, not {size.name}; a "
                           f"cluster's size cannot change. Fix: use vm_size={current!r}, choose another cluster "
                           f"name, or delete that cluster first (cleanup_azure(confirm=True) deletes the course's).")


def _reuse_note(existing) -> str:
    idle = int(existing.min_instances or 0)
    if not idle:
        return "not needed: the cluster exists"
    return (f"not needed: the cluster exists, but it keeps {idle} node(s) running even without a job (min nodes "
            f"{idle}), and those are billed. Fix: set its minimum number of nodes to 0 in Azure ML studio → Compute")


def check_quota(ml, size: VmSize, nodes: int, low_priority: bool, dry: bool = False) -> str:
    """Refuse before creating anything when the quota cannot hold ``nodes`` nodes of ``size``."""
    with azure_errors("reading the region's quota"):
        usages = list(ml.compute.list_usage())
    need = size.vcpus * nodes
    wanted = [_low_priority_usage] if low_priority else [_family_usage(size.family), _total_dedicated_usage]
    lines = []
    for matches in wanted:
        usage = next((u for u in usages if matches(_usage_name(u))), None)
        label, free, limit = _describe_usage(usage)
        if free < need:
            raise ComputeError(
                f"no quota for {nodes} node(s) of {size.name}: they need {size.vcpus} vCPUs each, {need} in all, of "
                f"'{label}', and {free} of {limit} are free. Fix: request more in Azure ML studio → Quota (or the "
                f"portal's Usage + quotas); meanwhile choose fewer nodes, "
                f"{'dedicated nodes' if low_priority else 'low_priority=True'}, another size or another region.")
        lines.append(f"{label}: {free} of {limit} vCPUs free, {need} needed")
    return ("simulated in this dry run (the real run reads yours first): " if dry else "") + "; ".join(lines)


def _usage_name(usage) -> tuple[str, str]:
    name = usage.name if isinstance(usage.name, dict) else vars(usage.name or {})
    value = name.get("value") or ""
    return value, name.get("localized_value") or name.get("localizedValue") or value


def _family_usage(family: str):
    return lambda name: name[0].lower() == family.lower()


def _total_dedicated_usage(name) -> bool:
    return "dedicated regional" in name[1].lower()


def _low_priority_usage(name) -> bool:
    return "lowpriority" in (name[0] + name[1]).lower().replace(" ", "").replace("-", "")


def _describe_usage(usage) -> tuple[str, int, int]:
    if usage is None:
        return "no quota entry for this VM family in the region", 0, 0
    limit = int(usage.limit or 0)
    return _usage_name(usage)[1], limit - int(_field(usage, "current_value", "currentValue") or 0), limit


def _aml_compute(name: str, size: VmSize, max_nodes: int, tier: str, idle_seconds: int):
    from azure.ai.ml.entities import AmlCompute

    return AmlCompute(name=name, size=size.name, min_instances=0, max_instances=max_nodes, tier=tier,
                      idle_time_before_scale_down=idle_seconds, tags=dict(COURSE_TAGS),
                      description="phi3lab: fine-tuning Phi-3-mini on managed compute (min nodes 0)")


# ----- what a dry run hears back -----------------------------------------------------------------------
def compute_routes(settings: AzureSettings | None) -> list:
    """The simulator's answers plus the compute APIs, from ``facts.GPU_VM_SIZES`` (later entries win)."""
    return [*service_routes(settings),
            ("GET", r"/locations/[^/]+/vmSizes\?", lambda r, m: Reply(200, {"value": simulated_sizes()})),
            ("GET", r"/locations/[^/]+/usages\?", lambda r, m: Reply(200, {"value": simulated_usages()})),
            ("GET", r"/computes/(?P<name>[^/?]+)\?", _no_cluster),
            ("PUT", r"/computes/[^/?]+\?", accepting(201, COMPUTE_TYPE, provisioningState="Succeeded"))]


def simulated_sizes() -> list[dict]:
    return [{"name": name, "family": spec["family"], "vCPUs": spec["vcpus"], "gpus": spec["gpus"],
             "lowPriorityCapable": True, "supportedComputeTypes": ["AmlCompute", "ComputeInstance"]}
            for name, spec in GPU_VM_SIZES.items()]


def simulated_usages() -> list[dict]:
    families = sorted({spec["family"] for spec in GPU_VM_SIZES.values()})
    rows = [(f, f"{f} Cluster Dedicated vCPUs (simulated)") for f in families]
    rows += [("TotalCores", "Total Cluster Dedicated Regional vCPUs (simulated)"),
             ("TotalLowPriorityCores", "Total Cluster LowPriority Regional vCPUs (simulated)")]
    return [{"unit": "Count", "currentValue": 0, "limit": SIMULATED_QUOTA_VCPUS,
             "name": {"value": value, "localizedValue": label}} for value, label in rows]


def _no_cluster(request, match) -> Reply:
    return Reply(404, {"error": {"code": "NotFound", "message": f"compute {match['name']} does not exist"}})
