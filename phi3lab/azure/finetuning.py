"""Serverless fine-tuning in Azure AI Foundry: data assets, the job, submission with a money guard.

``submit_finetuning(config)`` validates the data, versions it by content hash, builds the
chat-completion job from the same ``TrainConfig`` as local training and, unless
``confirm=True``, only shows the exact request the real SDK would send plus a cost estimate.
Monitoring and metrics live in ``phi3lab.azure.monitor``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TrainConfig, default_config
from ..errors import Phi3LabError
from ..models import CATALOG, OFFLINE_MODEL, get_spec
from .dryrun import RecordedRequest, accepting, dry_run, show_requests
from .guard import confirmed
from .monitor import status_text
from .schemas import validate_job_body
from .service import azure_errors
from .settings import AzureSettings, load_settings

# The wizard's three knobs → the keys the service reads. The REST spec types the map as string → string.
HYPERPARAMETER_KEYS = {"batch_size": "per_device_train_batch_size", "learning_rate": "learning_rate",
                       "epochs": "num_train_epochs"}
TASK = "ChatCompletion"
REGISTRY = "azureml"
DEFAULT_AZURE_MODEL = "phi-3-mini-4k-instruct"
EXPERIMENT = "phi3lab-finetuning"
JOB_TYPE = "Microsoft.MachineLearningServices/workspaces/jobs"


def hyperparameters(config: TrainConfig) -> dict[str, str]:
    """Batch size, learning rate and epochs from the config, as the strings the service expects."""
    return {key: str(getattr(config, name)) for name, key in HYPERPARAMETER_KEYS.items()}


def azure_model_name(model: str) -> str:
    """The registry name of a catalog model; the offline stand-in maps to Phi-3-mini (it stands in for it)."""
    if model == OFFLINE_MODEL:
        model = DEFAULT_AZURE_MODEL
    spec = get_spec(model)
    if not spec.azure_model:
        choices = ", ".join(name for name, s in CATALOG.items() if s.azure_model)
        raise Phi3LabError(f"{model} has no Azure AI Foundry model; choose one of: {choices}")
    return spec.azure_model


def registry_model_id(azure_model: str, version: str | None = None) -> str:
    """``azureml://registries/azureml/models/<name>/versions/<n>`` (``labels/latest`` when unknown)."""
    tail = f"versions/{version}" if version else "labels/latest"
    return f"azureml://registries/{REGISTRY}/models/{azure_model}/{tail}"


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
        return f"{self.name}:{self.version} ← {self.path.name} ({self.size:,} bytes)"


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
def build_job(config: TrainConfig, training: str, validation: str | None, model_id: str,
              name: str | None = None, output_prefix: str = "phi3lab-ft"):
    """The chat-completion fine-tuning job.

    Built as ``CustomModelFineTuningJob`` directly: ``create_finetuning_job`` in azure-ai-ml
    1.35.2 raises UnboundLocalError when ``validation_data`` is left out, and leaving it out is
    how the service is asked for an automatic validation split.
    """
    from azure.ai.ml import Input, Output
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities._job.finetuning.custom_model_finetuning_job import CustomModelFineTuningJob

    return CustomModelFineTuningJob(
        task=TASK,  # the SDK sends it as "chatCompletion"; see schemas.validate_job_body
        model=Input(type=AssetTypes.MLFLOW_MODEL, path=model_id),
        training_data=Input(type=AssetTypes.URI_FILE, path=training),
        validation_data=Input(type=AssetTypes.URI_FILE, path=validation) if validation else None,
        hyperparameters=hyperparameters(config),
        outputs={"registered_model": Output(type="mlflow_model", name=output_prefix)},
        name=name,
        experiment_name=EXPERIMENT,
        display_name=name,
        tags={"course": "phi3lab", "base_model": model_id.split("/models/")[-1]},
    )


@dataclass
class Submission:
    """What submit_finetuning did: the job's name, the exact requests, the assets and the cost."""

    dry_run: bool
    job_name: str
    model_id: str
    assets: list[DataAsset]
    requests: list[RecordedRequest] = field(default_factory=list)
    cost: object = None  # phi3lab.data.CostEstimate
    status: str | None = None

    @property
    def job_request(self) -> RecordedRequest | None:
        puts = [r for r in self.requests if r.method == "PUT" and "/jobs/" in r.path]
        return puts[-1] if puts else None

    def summary(self) -> str:
        head = ("DRY RUN: nothing was sent and nothing was charged. Run again with confirm=True to submit."
                if self.dry_run else f"Submitted job {self.job_name} (status {self.status}).")
        lines = [head, f"base model: {self.model_id}", "data assets (uploaded only if that version is new):"]
        lines += [f"  {a.describe()}" for a in self.assets]
        if len(self.assets) == 1:
            lines.append("  no validation file: the service splits the training data automatically")
        if self.cost is not None:
            lines += ["cost estimate:", *(f"  {line}" for line in str(self.cost).splitlines())]
        if self.requests:
            lines += ["", show_requests(self.requests, "Request" + ("s that would be sent" if self.dry_run else "s sent"))]
        return "\n".join(lines)

    __str__ = summary

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.summary())


def submit_finetuning(config: TrainConfig | None = None, settings: AzureSettings | None = None, *,
                      confirm: bool = False, model: str | None = None, price_per_1k_tokens: float | None = None,
                      job_name: str | None = None, credential=None, transport=None) -> Submission:
    """Validate, version, build and (only with ``confirm=True``) submit the fine-tuning job.

    ``model``: a catalog name (default: the config's model, the stand-in mapping to Phi-3-mini).
    ``price_per_1k_tokens``: from the portal's "Pricing and terms" tab; no API gives it.
    Without settings, or without ``confirm=True``, the real SDK builds the request against a
    recording transport and nothing leaves this machine.
    """
    settings = settings or load_settings()
    send = confirmed(confirm, settings)
    config = config or default_config()
    azure_model = azure_model_name(model or config.model)
    assets = [validated_asset(config.resolve(config.train_file), "phi3lab-train")]
    if config.validation_file:
        assets.append(validated_asset(config.resolve(config.validation_file), "phi3lab-validation"))
    cost = _cost(assets[0], config, model or config.model, price_per_1k_tokens)
    job_name = job_name or _job_name(assets, config, azure_model)

    if not send:
        return _dry_run(config, settings, azure_model, assets, cost, job_name)

    from .auth import ml_client, registry_client

    ml = ml_client(settings, credential=credential, transport=transport)
    registry = registry_client(credential=credential, transport=transport)
    with azure_errors(f"looking up {azure_model} in the {REGISTRY} registry"):
        model_id = registry.models.get(azure_model, label="latest").id
    existing = _existing_job(ml, job_name)
    if existing is not None:  # same data, model and hyperparameters: never pay twice for one job
        return Submission(False, job_name, model_id, assets, cost=cost, status=status_text(existing.status))
    references = [ensure_data_asset(ml, asset) for asset in assets]
    job = build_job(config, references[0], references[1] if len(references) > 1 else None, model_id, job_name)
    with azure_errors(f"submitting fine-tuning job {job_name}"):
        created = ml.jobs.create_or_update(job)
    return Submission(False, created.name, model_id, assets, cost=cost, status=status_text(created.status))


def _dry_run(config, settings, azure_model, assets, cost, job_name) -> Submission:
    run = dry_run([("PUT", r"/jobs/[^/?]+\?", accepting(201, JOB_TYPE, status="NotStarted"))], settings)
    model_id = registry_model_id(azure_model)
    references = [asset.reference for asset in assets]
    job = build_job(config, references[0], references[1] if len(references) > 1 else None, model_id, job_name)
    run.ml_client().jobs.create_or_update(job)
    submission = Submission(True, job_name, model_id, assets, run.requests, cost)
    validate_job_body(submission.job_request.body)
    return submission


def _existing_job(ml, job_name: str):
    from azure.core.exceptions import ResourceNotFoundError

    with azure_errors(f"looking for an earlier job {job_name}"):
        try:
            return ml.jobs.get(job_name)
        except ResourceNotFoundError:
            return None


def _job_name(assets: list[DataAsset], config: TrainConfig, azure_model: str) -> str:
    # Deterministic: the same data, model and hyperparameters give the same name, so re-running
    # the cell finds the existing job instead of submitting (and paying for) it again.
    key = "|".join([azure_model, *(a.version for a in assets), *hyperparameters(config).values()])
    return f"phi3lab-ft-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _cost(asset: DataAsset, config: TrainConfig, model: str, price: float | None):
    if price is None:
        return None
    from ..data import estimate_cost

    return estimate_cost(asset.path, model, epochs=config.epochs, price_per_1k_tokens=price)
