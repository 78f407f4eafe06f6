"""Facts about Azure that change over time, as data: each one with its source and the date it was checked.

Code and notebooks read these tables instead of repeating the facts in prose, so re-checking the
course means re-checking this file. ``FACTS[key].cited()`` gives a statement with its source and
date; ``show_facts(keys)`` prints several for a notebook. Where a value can be read live (the
registry's region tag, the workspace kind, role assignments), the code asks Azure and uses these
tables only to explain what it found or to simulate answers in a dry run.
"""

from __future__ import annotations

from dataclasses import dataclass

CHECKED = "2026-12-01"  # the day every fact below was last checked against its source

LIFECYCLE_PAGE = "https://learn.microsoft.com/en-us/azure/foundry/concepts/model-lifecycle-retirement"
SERVERLESS_REGIONS_PAGE = "https://learn.microsoft.com/en-us/azure/ai-foundry/how-to/deploy-models-serverless-availability"
FINE_TUNE_SERVERLESS_PAGE = "https://learn.microsoft.com/en-us/azure/foundry-classic/how-to/fine-tune-serverless"
HUB_PROJECT_PAGE = "https://learn.microsoft.com/en-us/azure/foundry-classic/how-to/hub-create-projects"
FOUNDRY_RBAC_PAGE = "https://learn.microsoft.com/en-us/azure/foundry/concepts/rbac-foundry"
MODELS_OVERVIEW_PAGE = "https://learn.microsoft.com/en-us/azure/foundry/concepts/foundry-models-overview"
SUPPORTED_LANGUAGES_PAGE = "https://learn.microsoft.com/en-us/azure/foundry-classic/foundry-models/supported-languages"
CONTENT_SAFETY_PRICING = "https://azure.microsoft.com/pricing/details/cognitive-services/content-safety/"


@dataclass(frozen=True)
class Fact:
    statement: str
    source: str
    checked: str = CHECKED
    source_date: str | None = None  # the date the source itself carries (its ms.date), when it has one

    def cited(self) -> str:
        dated = f", page dated {self.source_date}" if self.source_date else ""
        return f"{self.statement} (source: {self.source}{dated}; checked {self.checked})"


# ----- tables the code uses -------------------------------------------------------------------------
# Phi models retired in Foundry: registry name -> (retirement date, suggested replacement).
RETIRED = {
    "Phi-3-mini-4k-instruct": ("2025-08-30", "Phi-4-mini-instruct"),
    "Phi-3-mini-128k-instruct": ("2025-08-30", "Phi-4-mini-instruct"),
    "Phi-3-small-8k-instruct": ("2025-08-30", "Phi-4-mini-instruct"),
    "Phi-3-small-128k-instruct": ("2025-08-30", "Phi-4-mini-instruct"),
    "Phi-3.5-mini-instruct": ("2025-08-30", "Phi-4-mini-instruct"),
    "Phi-3.5-MoE-instruct": ("2025-08-30", "Phi-4-mini-instruct"),
    "Phi-3.5-vision-instruct": ("2025-08-30", "Phi-4-mini-instruct"),
    "Phi-3-medium-4k-instruct": ("2025-08-30", "Phi-4"),
    "Phi-3-medium-128k-instruct": ("2025-08-30", "Phi-4"),
}
# Hub/project regions where serverless fine-tuning of these models is documented.
FINETUNING_REGIONS = {
    name: ("eastus2", "eastus", "northcentralus", "southcentralus", "westus", "westus3")
    for name in ("Phi-4", "Phi-4-mini-instruct", "Phi-4-multimodal-instruct")
}
# The portal wizard's task parameters (label, documented range) and the SDK hyperparameter each one sets.
WIZARD = {
    "batch_size": ("Batch size", "integer 1-32", "per_device_train_batch_size"),
    "learning_rate": ("Learning rate multiplier", "0.0-10.0; recommended 0.02-0.2", "learning_rate"),
    "epochs": ("Number of epochs", "integer 1-10", "num_train_epochs"),
}
WIZARD_LR_RECOMMENDED = (0.02, 0.2)
SERVERLESS_LIMITS = {"tokens_per_minute": 200_000, "requests_per_minute": 1_000, "deployments_per_model": 1}


def successors(azure_model: str) -> list[str]:
    """The documented replacement of a retired model (empty when it is not retired)."""
    retired = RETIRED.get(azure_model)
    return [retired[1]] if retired else []


# ----- the facts, cited --------------------------------------------------------------------------------
FACTS = {
    "phi3_retired": Fact(
        "Microsoft Foundry retired Phi-3-mini-4k/128k-instruct, Phi-3-small, Phi-3-medium and Phi-3.5-mini/MoE/"
        "vision on 2025-08-30; the suggested replacement is Phi-4-mini-instruct (Phi-4 for Phi-3-medium). Retired "
        "models can't be deployed or fine-tuned, and calls to existing deployments return 404",
        LIFECYCLE_PAGE, source_date="2026-03-31"),
    "phi3_weights": Fact(
        "The Phi-3-mini weights remain on the Hugging Face model hub (microsoft/Phi-3-mini-4k-instruct), so the "
        "local course still fine-tunes Phi-3-mini; to fine-tune Phi-3-mini itself on Azure GPUs, run the course's "
        "trainer as an Azure ML command job on managed compute (notebook 03, section 7)",
        "https://huggingface.co/microsoft/Phi-3-mini-4k-instruct"),
    "finetuning_regions": Fact(
        "Serverless fine-tuning of Phi-4, Phi-4-mini-instruct and Phi-4-multimodal-instruct is documented for "
        "hubs/projects in East US 2, East US, North Central US, South Central US, West US and West US 3; each "
        "registry model's tag maas-finetuning-deploy-regions gives the live list",
        SERVERLESS_REGIONS_PAGE, source_date="2026-02-17"),
    "hub_project_required": Fact(
        "Serverless fine-tuning and serverless deployment of catalog models need a hub-based project; a Foundry "
        "project (the portal's default, a Cognitive Services account) isn't supported for this feature",
        SERVERLESS_REGIONS_PAGE, source_date="2026-02-17"),
    "create_hub_project": Fact(
        "Create a hub-based project in the Foundry (classic) portal, or with `az ml workspace create --kind project "
        "--hub-id <hub resource id> -g <resource group> -n <name>`; it needs Owner or Contributor on the hub",
        HUB_PROJECT_PAGE, source_date="2025-12-29"),
    "subscription_role": Fact(
        "Serverless fine-tuning needs the Owner or Contributor role on the Azure subscription; Microsoft models "
        "such as Phi need no Azure Marketplace subscription",
        FINE_TUNE_SERVERLESS_PAGE, source_date="2026-01-28"),
    "network_provider": Fact(
        "The subscription must be registered to the Microsoft.Network resource provider",
        FINE_TUNE_SERVERLESS_PAGE, source_date="2026-01-28"),
    "azure_ai_developer": Fact(
        "The Azure AI Developer role is scoped to Azure Machine Learning workspaces and Foundry hubs (and their "
        "hub-based projects), not to Foundry projects; Foundry projects use Foundry User or Foundry Owner",
        FOUNDRY_RBAC_PAGE, source_date="2026-03-20"),
    "foundry_roles": Fact(
        "The Foundry roles were renamed: Foundry User, Foundry Project Manager, Foundry Account Owner and Foundry "
        "Owner were Azure AI User, Azure AI Project Manager, Azure AI Account Owner and Azure AI Owner; the role "
        "ids did not change. They apply to Foundry projects (Cognitive Services accounts)",
        FOUNDRY_RBAC_PAGE, source_date="2026-05-11"),
    "wizard_fields": Fact(
        "The portal's Fine-tune wizard asks for Batch size (1-32), Learning rate multiplier (0.0-10.0: the "
        "pretraining learning rate is multiplied by it; 0.02-0.2 recommended) and Number of epochs (1-10)",
        FINE_TUNE_SERVERLESS_PAGE, source_date="2026-01-28"),
    "hourly_hosting": Fact(
        "Each deployed fine-tuned model incurs an hourly hosting cost whether or not it is called; deleting the "
        "deployment keeps the model, which can be redeployed",
        FINE_TUNE_SERVERLESS_PAGE, source_date="2026-01-28"),
    "serverless_limits": Fact(
        "Each serverless deployment allows 200,000 tokens and 1,000 requests per minute, and only one deployment "
        "per model per project",
        FINE_TUNE_SERVERLESS_PAGE, source_date="2026-01-28"),
    "pricing_tab": Fact(
        "Prices of Microsoft models are shown on the deployment wizard's Pricing and terms tab",
        FINE_TUNE_SERVERLESS_PAGE, source_date="2026-01-28"),
    "model_delete_order": Fact(
        "A fine-tuned model can't be deleted while it has a deployment: delete the deployment first",
        FINE_TUNE_SERVERLESS_PAGE, source_date="2026-01-28"),
    "content_filter": Fact(
        "Serverless deployments of language models get Azure AI Content Safety text filters for harmful content "
        "(hate, self-harm, sexual, violence) by default; content "
        "filtering can be disabled per serverless endpoint when the model is first deployed or later on the "
        "deployment's details page, and may be billed separately under Azure AI Content Safety pricing "
        f"({CONTENT_SAFETY_PRICING})",
        MODELS_OVERVIEW_PAGE),
    "content_filter_api": Fact(
        "The documentation says content filtering applies through the Model Inference API; with another API it "
        "isn't enabled unless you add Azure AI Content Safety yourself. Check the endpoint's content-filter setting "
        "in the portal before relying on it from the OpenAI-compatible /v1 route",
        MODELS_OVERVIEW_PAGE),
    "inference_sdk_retired": Fact(
        "The Azure AI Inference beta SDK (azure-ai-inference) is deprecated and retired on 2026-08-26; the "
        "documented replacement is the OpenAI SDK against the OpenAI v1 API",
        SUPPORTED_LANGUAGES_PAGE),
    "openai_v1_route": Fact(
        "A serverless endpoint answers chat completions at <scoring URI>/v1/chat/completions with its key",
        FINE_TUNE_SERVERLESS_PAGE, source_date="2026-01-28"),
    "task_type_spelling": Fact(
        "The REST spec's FineTuningTaskType enum spells the task ChatCompletion, and the spec's own FineTuning "
        "job example sends PascalCase (TextCompletion); azure-ai-ml 1.35.2 lowercases the first letter",
        "https://github.com/Azure/azure-rest-api-specs/blob/main/specification/machinelearningservices/"
        "resource-manager/Microsoft.MachineLearningServices/preview/2024-10-01-preview/examples/Job/"
        "FineTuningJob/createOrUpdate.json"),
    "version_delete": Fact(
        "The Azure ML REST API deletes a workspace model version or data version (DELETE .../models/{name}/"
        "versions/{version}, .../data/{name}/versions/{version}); the SDK offers only archive for them",
        "https://learn.microsoft.com/en-us/rest/api/azureml/model-versions"),
}


def cite(key: str) -> str:
    return FACTS[key].cited()


def show_facts(*keys: str) -> None:
    """Print the named facts, each with its source and the date checked (for notebooks)."""
    for key in keys or tuple(FACTS):
        print(f"- {cite(key)}")
