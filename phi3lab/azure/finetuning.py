"""Serverless fine-tuning in Azure AI Foundry: data assets, the job, submission with a money guard.

``submit_finetuning(config)`` runs one sequence of requests, and a dry run is that same sequence
with nothing sent: read the project (its kind and region), look up the base model in the registry
(unless prerequisite check 5's choice is passed in), look for an earlier job of the same name,
get-or-create each data asset (its blob upload shown as size and SHA-256, never the bytes), then
PUT the job. Without ``confirm=True`` the real SDK sends every request to a recording transport
that answers like Azure (``simulator``), and the summary lists them all.
Monitoring and metrics live in ``phi3lab.azure.monitor``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TrainConfig, default_config
from ..errors import Phi3LabError
from ..models import CATALOG, OFFLINE_MODEL, get_spec
from .catalog import ModelChoice, choose_base_model
from .dryrun import RecordedRequest, RecordingTransport, blob_storage_through, dry_run, show_requests
from .guard import confirmed
from .monitor import status_text
from .projects import find_project
from .schemas import validate_job_body
from .service import azure_errors
from .settings import AzureSettings, load_settings
from .simulator import service_routes

# The wizard's three knobs -> the keys the service reads. The REST spec types the map as string -> string.
HYPERPARAMETER_KEYS = {"batch_size": "per_device_train_batch_size", "learning_rate": "learning_rate",
                       "epochs": "num_train_epochs"}
TASK = "ChatCompletion"  # the REST spec's enum spelling (facts.FACTS["task_type_spelling"])
PREFERRED_AZURE_MODEL = "phi-3-mini-4k-instruct"  # the course's model; the stand-in stands in for it
EXPERIMENT = "phi3lab-finetuning"
NAME_PREFIX = "phi3lab-ft"
# azure-ai-ml adds the local git remote URL, branch, commit and dirty flag to a job's properties
# unless the job already carries one of these keys, so neutral values keep them out of the cloud.
NO_GIT_METADATA = {key: "not recorded" for key in (
    "mlflow.source.git.repoURL", "mlflow.source.git.branch", "mlflow.source.git.commit", "azureml.git.dirty",
    "azureml.git.build_id", "azureml.git.build_uri")}


def hyperparameters(config: TrainConfig) -> dict[str, str]:
    """Batch size, learning rate and epochs from the config, as the strings the service expects."""
    return {key: str(getattr(config, name)) for name, key in HYPERPARAMETER_KEYS.items()}


def azure_model_name(model: str) -> str:
    """The registry name of a catalog model; the offline stand-in maps to Phi-3-mini (it stands in for it)."""
    spec = get_spec(PREFERRED_AZURE_MODEL if model == OFFLINE_MODEL else model)
    if not spec.azure_model:
        choices = ", ".join(name for name, s in CATALOG.items() if s.azure_model)
        raise Phi3LabError(f"{model} has no Azure AI Foundry model; choose one of: {choices}")
    return spec.azure_model


# ----- data assets --------------------------------------------------------------------------
@dataclass(frozen=True)
class DataAsset:
    """A local JSONL file as a workspace data asset, versioned by its content hash.

    The same bytes always give the same version, so re-running a cell reuses the upload and a
    changed file can never be mistaken for the old one.
    """

    name: str
    version: str
    path: Path
    size: int

    @property
    def reference(self) -> str:
        return f"azureml:{self.name}:{self.version}"

    @classmethod
    def of(cls, path: str | Path, name: str) -> DataAsset:
        path = Path(path)
        if not path.is_file():
            raise Phi3LabError(f"{path} does not exist; prepare the data first (notebook 01)")
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return cls(name=name, version=digest.hexdigest()[:16], path=path, size=path.stat().st_size)

    def describe(self) -> str:
        return f"{self.name}:{self.version} <- {self.path.name} ({self.size:,} bytes)"


def validated_asset(path: str | Path, name: str) -> DataAsset:
    """Check the file with ``phi3lab.data.validate`` before anything is uploaded."""
    from ..data import DataError, validate

    report = validate(path)
    if not report.ok:
        raise DataError(f"{Path(path).name} is not ready for Azure fine-tuning:\n{report.summary()}")
    return DataAsset.of(path, name)


def ensure_data_asset(ml, asset: DataAsset) -> str:
    """Get-or-create the asset (uploads the file only when that version does not exist yet)."""
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import Data
    from azure.core.exceptions import ResourceNotFoundError

    with azure_errors(f"reading data asset {asset.name}:{asset.version}"):
        try:
            return ml.data.get(asset.name, version=asset.version).id
        except ResourceNotFoundError:
            pass
    with azure_errors(f"uploading {asset.path.name}"):
        data = Data(name=asset.name, version=asset.version, path=str(asset.path), type=AssetTypes.URI_FILE,
                    description="phi3lab chat-completion data (version = sha256 of the file)")
        return ml.data.create_or_update(data).id


# ----- the job --------------------------------------------------------------------------------
def build_job(config: TrainConfig, training: str, validation: str | None, model_id: str, name: str):
    """The chat-completion fine-tuning job; ``name`` also names the model it registers.

    Built as ``CustomModelFineTuningJob`` directly: ``create_finetuning_job`` in azure-ai-ml
    1.35.2 raises UnboundLocalError when ``validation_data`` is left out, and leaving it out is
    how the service is asked for an automatic validation split.
    """
    from azure.ai.ml import Input, Output
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities._job.finetuning.custom_model_finetuning_job import CustomModelFineTuningJob

    job = CustomModelFineTuningJob(
        task=TASK,
        model=Input(type=AssetTypes.MLFLOW_MODEL, path=model_id),
        training_data=Input(type=AssetTypes.URI_FILE, path=training),
        validation_data=Input(type=AssetTypes.URI_FILE, path=validation) if validation else None,
        hyperparameters=hyperparameters(config),
        outputs={"registered_model": Output(type="mlflow_model", name=name)},
        name=name,
        experiment_name=EXPERIMENT,
        display_name=name,
        tags={"course": "phi3lab", "base_model": model_id.split("/models/")[-1]},
        properties=dict(NO_GIT_METADATA),
    )
    job.task = TASK  # the constructor lowercases the first letter; the setter keeps the spec's spelling
    return job


def job_name(assets: list[DataAsset], config: TrainConfig, model_id: str) -> str:
    """Deterministic: the same data, base model version and hyperparameters give the same name.

    Re-running the cell then finds the existing job instead of paying for it twice, and each
    different job registers its model under its own name.
    """
    key = "|".join([model_id, *(a.version for a in assets), *hyperparameters(config).values()])
    return f"{NAME_PREFIX}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


@dataclass
class Submission:
    """What submit_finetuning did: the job, the base model chosen, the requests, the assets and the cost."""

    dry_run: bool
    job_name: str
    choice: ModelChoice
    assets: list[DataAsset]
    requests: list[RecordedRequest] = field(default_factory=list)
    cost: object = None  # phi3lab.data.CostEstimate
    cost_tokenizer: str | None = None
    status: str | None = None

    @property
    def model_id(self) -> str:
        return self.choice.model_id

    @property
    def output_model(self) -> str:
        """The name the job registers the fine-tuned model under (the same as the job's)."""
        return self.job_name

    @property
    def job_request(self) -> RecordedRequest | None:
        puts = [r for r in self.requests if r.method == "PUT" and "/jobs/" in r.path]
        return puts[-1] if puts else None

    def summary(self) -> str:
        head = ("DRY RUN: nothing was sent and nothing was charged. Run again with confirm=True to submit."
                if self.dry_run else f"Job {self.job_name}: {self.status}.")
        lines = [head, f"base model: {self.choice}", f"fine-tuned model will be registered as: {self.output_model}",
                 "data assets (uploaded only if that version is new):", *(f"  {a.describe()}" for a in self.assets)]
        if len(self.assets) == 1:
            lines.append("  no validation file: the service splits the training data automatically")
        if self.cost is not None:
            lines += [f"cost estimate (tokens counted with {self.cost_tokenizer}):",
                      *(f"  {line}" for line in str(self.cost).splitlines())]
        if self.requests:
            lines += ["", show_requests(self.requests, "Requests that would be sent, in order" if self.dry_run
                                        else "Requests sent")]
        return "\n".join(lines)

    __str__ = summary

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.summary())


def submit_finetuning(config: TrainConfig | None = None, settings: AzureSettings | None = None, *,
                      confirm: bool = False, model: str | ModelChoice | None = None,
                      price_per_1k_tokens: float | None = None, credential=None, transport=None) -> Submission:
    """Validate, version, choose the base model and (only with ``confirm=True``) submit the job.

    ``model``: prerequisite check 5's ``ModelChoice`` (what notebook 03 passes), or a catalog name
    to prefer (default: the config's model, the stand-in standing for Phi-3-mini), looked up in the
    registry the same way. ``price_per_1k_tokens``: from the portal's "Pricing and terms" tab.
    Without settings, or without ``confirm=True``, nothing leaves this machine; ``transport`` then
    only answers the dry run's free reads (tests).
    """
    settings = settings or load_settings()
    send = confirmed(confirm, settings)
    config = config or default_config()
    assets = [validated_asset(config.resolve(config.train_file), "phi3lab-train")]
    if config.validation_file:
        assets.append(validated_asset(config.resolve(config.validation_file), "phi3lab-validation"))
    if send:
        clients = _Live(settings, credential, transport)
    else:
        reads = transport if isinstance(transport, RecordingTransport) else None
        clients = dry_run(service_routes(settings), settings, reads)
    submission = _run(clients, config, model, assets, dry=not send)
    submission.cost, submission.cost_tokenizer = _cost(assets[0], config, price_per_1k_tokens)
    if submission.job_request is not None:
        validate_job_body(submission.job_request.body)
    return submission


class _Live:
    """The real clients, shaped like a DryRun (``ml_client``, ``registry_client``, ``resource_client``)."""

    def __init__(self, settings, credential, transport):
        from .auth import get_credential

        self.settings, self.credential, self.transport = settings, credential or get_credential(), transport
        self.requests: list[RecordedRequest] = getattr(transport, "requests", [])

    def _kwargs(self) -> dict:
        return {"transport": self.transport} if self.transport is not None else {}

    def ml_client(self):
        from .auth import ml_client

        return ml_client(self.settings, credential=self.credential, **self._kwargs())

    def registry_client(self):
        from .auth import registry_client

        return registry_client(credential=self.credential, **self._kwargs())

    def resource_client(self):
        from azure.mgmt.resource.resources import ResourceManagementClient

        return ResourceManagementClient(self.credential, self.settings.subscription_id, **self._kwargs())


def _run(clients, config: TrainConfig, model, assets: list[DataAsset], dry: bool) -> Submission:
    """The one sequence of requests, real or dry: project, base model, earlier job, data assets, job PUT."""
    start = len(clients.requests)
    ml = clients.ml_client()
    project = find_project(ml, clients.resource_client(), clients.settings).require_usable()
    choice = model if isinstance(model, ModelChoice) else choose_base_model(
        clients.registry_client(), project.region, azure_model_name(model or config.model))
    name = job_name(assets, config, choice.model_id)
    existing = _existing_job(ml, name)
    if existing is not None:  # same data, model and hyperparameters: never pay twice for one job
        return Submission(dry, name, choice, assets, status=status_text(existing.status))
    with blob_storage_through(clients.transport):
        references = [ensure_data_asset(ml, asset) for asset in assets]
    job = build_job(config, references[0], references[1] if len(references) > 1 else None, choice.model_id, name)
    with azure_errors(f"submitting fine-tuning job {name}"):
        created = ml.jobs.create_or_update(job)
    return Submission(dry, created.name, choice, assets, list(clients.requests[start:]),
                      status=status_text(created.status))


def _existing_job(ml, name: str):
    from azure.core.exceptions import ResourceNotFoundError

    with azure_errors(f"looking for an earlier job {name}"):
        try:
            return ml.jobs.get(name)
        except ResourceNotFoundError:
            return None


def _cost(asset: DataAsset, config: TrainConfig, price: float | None):
    """The estimate and which tokenizer counted it: the config's model's, which is local (offline: the stand-in's)."""
    if price is None:
        return None, None
    from ..data import estimate_cost

    label = (f"the offline stand-in's tokenizer ({OFFLINE_MODEL}); Azure bills with the base model's own "
             f"tokenizer, so the real count differs" if config.model == OFFLINE_MODEL
             else f"the {config.model} tokenizer")
    return estimate_cost(asset.path, config.model, epochs=config.epochs, price_per_1k_tokens=price), label
