"""Which base model serverless fine-tuning uses: the live registry decides, ``facts`` explains.

``choose_base_model(registry, region, preferred)`` asks the ``azureml`` registry for the preferred
model (Phi-3-mini for this course), then for its documented successors, and takes the first one
whose ``maas-finetuning-deploy-regions`` tag lists the project's region. The result pins the
model version the registry reported, so the job never refers to ``labels/latest``. Prerequisite
check 5 and ``submit_finetuning`` both call it: there is no second default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import Phi3LabError
from .facts import LIFECYCLE_PAGE, RETIRED, successors
from .service import AzureNotFoundError, azure_errors

REGISTRY = "azureml"
REGION_TAG = "maas-finetuning-deploy-regions"  # registry model tag listing serverless fine-tuning regions


class ModelNotOfferedError(Phi3LabError):
    """Neither the preferred model nor a documented successor is offered for serverless fine-tuning here."""


@dataclass(frozen=True)
class Offer:
    """What the registry says about one model: its latest version and fine-tuning regions (None: not there)."""

    name: str
    version: str | None
    regions: tuple[str, ...] = ()

    def why_not(self, region: str) -> str:
        """Why this model cannot be used in ``region`` (one clause, with the lifecycle page when retired)."""
        if self.version is None:
            retired = RETIRED.get(self.name)
            if retired:
                return (f"{self.name} was retired on {retired[0]} and is no longer in the {REGISTRY} registry "
                        f"(successor: {retired[1]}; {LIFECYCLE_PAGE})")
            return f"{self.name} is not in the {REGISTRY} registry"
        if not self.regions:
            return f"{self.name} is not offered for serverless fine-tuning (no {REGION_TAG} tag)"
        return (f"{self.name} is not offered for serverless fine-tuning in {region} "
                f"(the registry lists {', '.join(self.regions)})")


@dataclass(frozen=True)
class ModelChoice:
    """The base model a fine-tuning job uses, pinned to the version the registry reported."""

    requested: str
    azure_model: str
    version: str
    region: str
    regions: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def model_id(self) -> str:
        return registry_model_id(self.azure_model, self.version)

    def summary(self) -> str:
        head = f"{self.azure_model} version {self.version}, offered for serverless fine-tuning in {self.region}"
        return "; ".join([head, *self.notes])

    __str__ = summary


def registry_model_id(azure_model: str, version: str) -> str:
    return f"azureml://registries/{REGISTRY}/models/{azure_model}/versions/{version}"


def normalize_region(region: str | None) -> str:
    return (region or "").replace(" ", "").lower()


def parse_regions(value) -> tuple[str, ...]:
    """The tag holds a JSON list or a comma-separated string, depending on the model's age."""
    if not value:
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = value.split(",")
    if isinstance(value, str):
        value = [value]
    return tuple(normalize_region(v) for v in value if str(v).strip())


def registry_offer(registry, azure_model: str) -> Offer:
    """The latest version of ``azure_model`` in the registry and its fine-tuning regions (a free read)."""
    try:
        with azure_errors(f"reading {azure_model} from the {REGISTRY} model registry"):
            model = registry.models.get(azure_model, label="latest")
    except AzureNotFoundError:
        return Offer(azure_model, None)
    return Offer(azure_model, str(model.version), parse_regions((model.tags or {}).get(REGION_TAG)))


def choose_base_model(registry, region: str, preferred: str) -> ModelChoice:
    """The preferred model where it is offered in ``region``, else its documented successor; else one clear error."""
    region = normalize_region(region)
    refused: list[Offer] = []
    for name in [preferred, *successors(preferred)]:
        offer = registry_offer(registry, name)
        if offer.version is not None and region in offer.regions:
            notes = tuple(f"{o.why_not(region)}; using its successor {name}" for o in refused)
            return ModelChoice(preferred, name, offer.version, region, offer.regions, notes)
        refused.append(offer)
    reasons = "; ".join(o.why_not(region) for o in refused)
    raise ModelNotOfferedError(
        f"no base model for serverless fine-tuning in {region}: {reasons}. Fix: use a hub-based project in a region "
        f"the registry lists, or fine-tune Phi-3-mini itself on Azure GPUs with a managed-compute job "
        f"(notebook 03, section 7). Model lifecycle: {LIFECYCLE_PAGE}")
