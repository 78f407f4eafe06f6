"""Fine-tune Phi-3-mini itself on Azure GPUs: ``phi3lab train`` as an Azure ML command job (managed compute).

``submit_training_job`` is a dry run unless ``confirm=True``. Real or dry, it sends one sequence:

1. the cluster (made by ``compute.create_gpu_cluster``): it must be a GPU cluster; its VM size says how
   many GPUs a node has, and that is the number of training processes per node (``gpus_per_node``, if
   given, must match); ``nodes`` may not exceed the cluster's maximum;
2. the job by name: the name is a hash of the config, the code, the environment and the launch, so
   running the cell again never pays twice;
3. the command job: ``PyTorchDistribution`` with one process per GPU and ``instance_count`` nodes. Azure
   starts the processes and gives each its rank, so the command is plain ``python -m phi3lab train``
   (``phi3lab.training.distributed`` does the rest). The environment is the GPU pin set
   (``constraints-gpu.txt``: torch's CUDA build) on a CUDA base image. The trained adapter, with its
   history.json and summary.json, is an output registered as a model; ``fetch_job_history`` reads the
   history back, in the same format as local training, for notebook 04.

``accelerate_command`` is the same training on the GPUs of one machine (``phi3lab launch``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TrainConfig
from ..history import MetricsHistory
from ..paths import REPO_ROOT
from ..runs import HISTORY_NAME, RUNS_ENV, azure_history_file, azure_job_config_file
from .compute import (
    DEFAULT_CLUSTER,
    ComputeError,
    VmSize,
    _clients,
    compute_routes,
    existing_cluster,
    find_vm_size,
    simulated_sizes,
)
from .dryrun import RecordedRequest, Reply, accepting, show_requests
from .facts import GPU_VM_SIZES
from .finetuning import NO_GIT_METADATA
from .gpu_pins import GPU_CONSTRAINTS, job_python, read_pins
from .guard import confirmed
from .monitor import status_text
from .service import AzureNotFoundError, azure_errors
from .settings import AzureSettings, load_settings

# An Azure ML GPU base image with Open MPI (Azure/AzureML-Containers, base/gpu). torch's wheels bring their own
# CUDA libraries (the nvidia-* packages pinned in constraints-gpu.txt); the node needs a driver new enough for them.
BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"
# Azure ML keeps what a job writes under outputs/, so the job's runs root is that folder.
JOB_RUNS_ROOT = "outputs"
JOB_TYPE = "Microsoft.MachineLearningServices/workspaces/jobs"
ADAPTER_MODEL = "phi3lab-adapter"  # the registered model: every job adds a version
ADAPTER_PATH = "azureml://datastores/workspaceblobstore/paths/phi3lab/jobs/{job}/adapter/"


def accelerate_command(config_path: str | Path, num_gpus: int, num_machines: int = 1) -> list[str]:
    """``accelerate launch`` (launch/ddp.yaml) running ``phi3lab train --config FILE``, one process per GPU."""
    from ..training.launch import launch_command

    return launch_command(config_path, num_gpus, num_machines, environ={})


def environment_spec(constraints: Path = GPU_CONSTRAINTS) -> dict:
    """A conda specification: the Python the GPU pin set was resolved for, and exactly those pins."""
    pins = read_pins(constraints)
    return {"name": "phi3lab-train-gpu", "channels": ["conda-forge"],
            "dependencies": [f"python={job_python(constraints)}", "pip",
                             {"pip": [f"{name}=={version}" for name, version in sorted(pins.items())]}]}


def build_environment(constraints: Path = GPU_CONSTRAINTS):
    """An Azure ML environment versioned by the hash of its pins: same pins, same (cached) image."""
    from azure.ai.ml.entities import Environment

    spec = environment_spec(constraints)
    version = hashlib.sha256(repr(spec).encode()).hexdigest()[:12]
    return Environment(name="phi3lab-train-gpu", version=version, image=BASE_IMAGE, conda_file=spec,
                       description="phi3lab training: constraints-gpu.txt (torch's CUDA build) on a CUDA base image")


def job_command() -> str:
    """What every process runs: Azure starts one per GPU and sets its rank, so no launcher is needed."""
    return ("python -m phi3lab train --config ${{inputs.config}} --no-progress "
            "--adapter-out ${{outputs.adapter}}")


def build_command_job(config_path: str, compute: str, gpus_per_node: int, nodes: int, name: str,
                      environment, code: str | Path = REPO_ROOT):
    """The command job: the repository's code (git-ignored files excluded), the config as input, the adapter out."""
    from azure.ai.ml import Input, Output, PyTorchDistribution, command
    from azure.ai.ml.constants import AssetTypes

    return command(
        name=name,
        code=str(code),
        command=job_command(),
        inputs={"config": Input(type="uri_file", path=str(config_path))},
        outputs={"adapter": Output(type=AssetTypes.CUSTOM_MODEL, path=ADAPTER_PATH.format(job=name),
                                   name=ADAPTER_MODEL)},
        environment=environment,
        compute=compute,
        instance_count=nodes,
        distribution=PyTorchDistribution(process_count_per_instance=gpus_per_node),
        environment_variables={RUNS_ENV: JOB_RUNS_ROOT},
        experiment_name="phi3lab-train",
        display_name=f"phi3lab train: {nodes} node(s) × {gpus_per_node} GPU(s)",
        tags={"course": "phi3lab"},
        properties=dict(NO_GIT_METADATA),  # keeps azure-ai-ml from adding the local git remote, branch and commit
    )


@dataclass
class TrainingSubmission:
    dry_run: bool
    job_name: str
    command: str
    compute: str
    size: VmSize
    nodes: int
    global_batch: str
    status: str = ""
    existing: bool = False  # the same job was submitted before: nothing new was (or would be) sent
    requests: list[RecordedRequest] = field(default_factory=list)

    @property
    def processes(self) -> int:
        return self.size.gpus * self.nodes

    def cost_per_hour(self, price_per_node_hour: float) -> float:
        """What the job's nodes cost per hour at the price you looked up (a parameter, never a stored price)."""
        return price_per_node_hour * self.nodes

    def summary(self) -> str:
        if self.existing:
            head = (f"Job {self.job_name} was already submitted ({self.status}): the same job is never paid twice. "
                    f"Watch it with monitor_job({self.job_name!r}).")
        elif self.dry_run:
            head = "DRY RUN: nothing was sent. Run with confirm=True to submit (GPU nodes are billed per node-hour)."
        else:
            head = f"Submitted command job {self.job_name}."
        lines = [head,
                 f"  on {self.compute}: {self.nodes} node(s) of {self.size.name}, {self.size.gpus} GPU(s) each: "
                 f"{self.processes} training process(es), {self.global_batch}",
                 f"  each process runs: {self.command}",
                 f"  when it completes, its adapter is registered as model {ADAPTER_MODEL} and "
                 f"fetch_job_history('{self.job_name}') reads its metrics"]
        if self.requests:
            lines += ["", show_requests(self.requests)]
        return "\n".join(lines)

    __str__ = summary

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.summary())


def submit_training_job(config: TrainConfig, compute: str = DEFAULT_CLUSTER, nodes: int = 1,
                        gpus_per_node: int | None = None, settings: AzureSettings | None = None, *,
                        confirm: bool = False, config_path=None, credential=None, transport=None) -> TrainingSubmission:
    """Run ``phi3lab train`` for ``config`` on ``nodes`` nodes of an existing GPU cluster (dry run unless
    confirm=True). One process per GPU; ``gpus_per_node`` defaults to the cluster's and must match it.

    The config is saved for upload (default ``azure_job_config_file()``). In a dry run the cluster, code
    and environment are simulated references; with confirm=True the SDK uploads the code snapshot and
    builds the environment (the first build takes a while; later jobs reuse the image).
    """
    from ..training.distributed import Ranks, describe_launch, launch_record

    settings = settings or load_settings()
    send = confirmed(confirm, settings)
    _check_counts(nodes, gpus_per_node)
    config_path = Path(config_path or azure_job_config_file())
    config.save(config_path)
    environment = build_environment()
    clients = _clients(send, settings, credential, transport) if send else _dry_clients(
        settings, compute, nodes, gpus_per_node, transport)
    start = len(clients.requests)
    ml = clients.ml_client()
    size = cluster_gpus(ml, compute, nodes, gpus_per_node, live=send)
    name = job_name(config_path, compute, size, nodes, environment)
    launch = describe_launch(launch_record(config, Ranks(world_size=size.gpus * nodes)))
    done = TrainingSubmission(not send, name, job_command(), compute, size, nodes, launch)
    existing = _existing_job(ml, name)
    if existing is not None:
        done.status, done.existing = status_text(existing.status), True
        done.requests = list(clients.requests[start:])
        return done
    if send:
        with azure_errors("creating the phi3lab-train-gpu environment"):
            environment = ml.environments.create_or_update(environment)
        config_input = str(config_path)
    else:
        environment = f"azureml:{environment.name}:{environment.version}"
        config_input = f"azureml:phi3lab-train-config:{_file_hash(config_path)}"
    job = build_command_job(config_input, compute, size.gpus, nodes, name, environment,
                            code=str(REPO_ROOT) if send else _code_reference(clients.settings))
    with azure_errors(f"submitting the training job to {compute}"):
        created = ml.jobs.create_or_update(job)
    done.status, done.requests = status_text(created.status), list(clients.requests[start:])
    return done


def _check_counts(nodes, gpus_per_node) -> None:
    for label, value in (("nodes", nodes), ("gpus_per_node", gpus_per_node)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ComputeError(f"{label}={value!r}: give a whole number of at least 1")


def cluster_gpus(ml, compute: str, nodes: int, gpus_per_node: int | None, live: bool = True) -> VmSize:
    """The cluster's VM size, checked against the launch: a GPU cluster, big enough, one process per GPU."""
    cluster = existing_cluster(ml, compute)
    if cluster is None:
        raise ComputeError(f"there is no compute cluster {compute!r} in the workspace. Fix: create it first with "
                           f"create_gpu_cluster({compute!r}, confirm=True) (min nodes 0: idle costs nothing).")
    size = find_vm_size(ml, str(cluster.size or ""), live)
    most = int(cluster.max_instances or 0)
    if nodes > most:
        raise ComputeError(f"the job asks for {nodes} nodes, and cluster {compute} grows to at most {most}. Fix: "
                           f"nodes={most} or fewer, or a cluster with max_nodes={nodes}.")
    if gpus_per_node is not None and gpus_per_node != size.gpus:
        why = "two processes cannot share a GPU" if gpus_per_node > size.gpus else "the other GPUs would idle, paid for"
        raise ComputeError(
            f"gpus_per_node={gpus_per_node}, but {size.name} (cluster {compute}) has {size.gpus} GPU(s) per node, and "
            f"the job runs one training process per GPU ({why}). Fix: leave gpus_per_node out (it follows the "
            f"cluster), or use a cluster whose VM size has {gpus_per_node} GPUs.")
    return size


def job_name(config_path: Path, compute: str, size: VmSize, nodes: int, environment) -> str:
    """Same config, code, environment and launch: same name (a rerun finds the job instead of paying again)."""
    digest = hashlib.sha256()
    for part in (Path(config_path).read_bytes(), _code_hash().encode(), environment.version.encode(),
                 f"{compute}:{size.name}:{nodes}".encode()):
        digest.update(part)
    return f"phi3lab-train-{digest.hexdigest()[:12]}"


def _existing_job(ml, name: str):
    try:
        with azure_errors(f"looking for an earlier job {name}"):
            return ml.jobs.get(name)
    except AzureNotFoundError:
        return None


# ----- the metrics, in the local history format ----------------------------------------------------------
def fetch_job_history(job_name: str, settings: AzureSettings | None = None, *, credential=None, transport=None,
                      save_to: Path | None = None) -> MetricsHistory:
    """The job's training and validation loss: the trainer's own history.json from the adapter it wrote,
    marked ``source="azure"`` and saved where notebook 04 looks (``azure_history_file()``)."""
    from .auth import ml_client
    from .cleanup import datastore_blob

    settings = settings or load_settings()
    ml = ml_client(settings, credential=credential, **({"transport": transport} if transport is not None else {}))
    path = ADAPTER_PATH.format(job=job_name) + HISTORY_NAME
    try:
        with azure_errors(f"reading the metrics of job {job_name}"):
            data = datastore_blob(ml, path, transport).download_blob().readall()
    except AzureNotFoundError:
        raise ComputeError(f"job {job_name} has no {HISTORY_NAME} yet: it writes one with the adapter when training "
                           f"ends. Fix: wait until the job is Completed (monitor_job({job_name!r})).") from None
    try:
        records = list(json.loads(data)["records"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ComputeError(f"the {HISTORY_NAME} of job {job_name} is not a phi3lab metrics history ({exc})") from None
    history = MetricsHistory(source="azure", run=job_name, records=records)
    history.save(save_to or azure_history_file())
    return history


# ----- what a dry run shows -------------------------------------------------------------------------------
def _dry_clients(settings, compute: str, nodes: int, gpus_per_node: int | None, transport):
    """A dry run whose cluster is simulated: the default size, or one with ``gpus_per_node`` GPUs."""
    from .compute import DEFAULT_VM_SIZE
    from .dryrun import RecordingTransport, dry_run

    size = next((n for n, spec in GPU_VM_SIZES.items() if spec["gpus"] == gpus_per_node), DEFAULT_VM_SIZE)
    cluster = {"name": compute, "type": "Microsoft.MachineLearningServices/workspaces/computes",
               "properties": {"computeType": "AmlCompute", "provisioningState": "Succeeded", "properties": {
                   "vmSize": size, "vmPriority": "Dedicated",
                   "scaleSettings": {"minNodeCount": 0, "maxNodeCount": nodes}}}}
    routes = [*compute_routes(settings),
              ("GET", r"/computes/[^/?]+\?", lambda r, m: Reply(200, {**cluster, "id": r.path})),
              ("GET", r"/locations/[^/]+/vmSizes\?", lambda r, m: Reply(200, {"value": simulated_sizes()})),
              ("GET", r"/jobs/(?P<name>[^/?]+)\?", lambda r, m: Reply(404, {"error": {
                  "code": "UserError", "message": f"Job {m['name']} was not found"}})),
              ("PUT", r"/jobs/[^/?]+\?", accepting(201, JOB_TYPE, status="NotStarted"))]
    return dry_run(routes, settings, transport if isinstance(transport, RecordingTransport) else None)


def _code_reference(settings: AzureSettings) -> str:
    workspace = (f"/subscriptions/{settings.subscription_id}/resourceGroups/{settings.resource_group}/providers/"
                 f"Microsoft.MachineLearningServices/workspaces/{settings.project}")
    return f"{workspace}/codes/phi3lab-code/versions/{_code_hash()}"


def _file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _code_hash() -> str:
    """Hash of the package sources the job would upload (stands in for the code asset's name)."""
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "phi3lab").rglob("*.py")):
        digest.update(path.relative_to(REPO_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
