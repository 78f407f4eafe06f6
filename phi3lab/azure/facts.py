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
DISTRIBUTED_TRAINING_PAGE = "https://learn.microsoft.com/en-us/azure/machine-learning/how-to-train-distributed-gpu"
COMPUTE_CLUSTER_PAGE = "https://learn.microsoft.com/en-us/azure/machine-learning/how-to-create-attach-compute-cluster"
NCA100V4_PAGE = "https://learn.microsoft.com/en-us/azure/virtual-machines/sizes/gpu-accelerated/nca100v4-series"
NCADSH100V5_PAGE = "https://learn.microsoft.com/en-us/azure/virtual-machines/sizes/gpu-accelerated/ncadsh100v5-series"
NCAST4V3_PAGE = "https://learn.microsoft.com/en-us/azure/virtual-machines/sizes/gpu-accelerated/ncast4v3-series"


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
# GPU sizes for Azure ML clusters: GPUs per node, memory per GPU (GB) and vCPUs, from each series' size page
# (pages dated 2024-07-31). "family" is only what a dry run's simulated quota calls the VM family; a real
# run reads the family and the quota names from Azure.
GPU_VM_SIZES = {
    "Standard_NC4as_T4_v3": {"gpus": 1, "gpu": "T4", "gpu_memory_gb": 16, "vcpus": 4,
                             "family": "standardNCASv3_T4Family", "source": NCAST4V3_PAGE},
    "Standard_NC64as_T4_v3": {"gpus": 4, "gpu": "T4", "gpu_memory_gb": 16, "vcpus": 64,
                              "family": "standardNCASv3_T4Family", "source": NCAST4V3_PAGE},
    "Standard_NC24ads_A100_v4": {"gpus": 1, "gpu": "A100", "gpu_memory_gb": 80, "vcpus": 24,
                                 "family": "standardNCADSA100v4Family", "source": NCA100V4_PAGE},
    "Standard_NC48ads_A100_v4": {"gpus": 2, "gpu": "A100", "gpu_memory_gb": 80, "vcpus": 48,
                                 "family": "standardNCADSA100v4Family", "source": NCA100V4_PAGE},
    "Standard_NC96ads_A100_v4": {"gpus": 4, "gpu": "A100", "gpu_memory_gb": 80, "vcpus": 96,
                                 "family": "standardNCADSA100v4Family", "source": NCA100V4_PAGE},
    "Standard_NC40ads_H100_v5": {"gpus": 1, "gpu": "H100", "gpu_memory_gb": 94, "vcpus": 40,
                                 "family": "standardNCadsH100v5Family", "source": NCADSH100V5_PAGE},
    "Standard_NC80adis_H100_v5": {"gpus": 2, "gpu": "H100", "gpu_memory_gb": 94, "vcpus": 80,
                                  "family": "standardNCadsH100v5Family", "source": NCADSH100V5_PAGE},
}


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


FACTS.update({
    "pytorch_distribution": Fact(
        "An Azure ML command job with a PyTorch distribution starts process_count_per_instance processes on each of "
        "its instance_count nodes (typically the number of GPUs per node) and sets MASTER_ADDR, MASTER_PORT, "
        "WORLD_SIZE and NODE_RANK on each node and RANK and LOCAL_RANK for each process",
        DISTRIBUTED_TRAINING_PAGE, source_date="2024-01-29"),
    "cluster_min_nodes": Fact(
        "A compute cluster scales up when a job is submitted and down to its minimum after the idle seconds before "
        "scale down; with a minimum of 0 nodes you don't pay for any node while the cluster is idle",
        COMPUTE_CLUSTER_PAGE, source_date="2024-05-03"),
    "low_priority_vms": Fact(
        "Low-priority VMs cost less but have no guaranteed availability: Azure may preempt them while in use, and a "
        "preempted job has to be restarted",
        COMPUTE_CLUSTER_PAGE, source_date="2024-05-03"),
    "cluster_quota": Fact(
        "Creating a compute cluster draws on the dedicated vCPU quota per region per VM family and the total "
        "regional quota; a cluster's unprovisioned nodes still count against the quota, and deleting the cluster "
        "releases it",
        COMPUTE_CLUSTER_PAGE, source_date="2024-05-03"),
    "a100_sizes": Fact(
        "Standard_NC24ads_A100_v4 has 1 NVIDIA A100 with 80 GB and 24 vCPUs; NC48ads_A100_v4 has 2 (160 GB) and "
        "NC96ads_A100_v4 has 4 (320 GB). Microsoft currently deploys new NC capacity only for NCads_H100_v5",
        NCA100V4_PAGE, source_date="2024-07-31"),
    "h100_sizes": Fact(
        "Standard_NC40ads_H100_v5 has 1 GPU with 94 GB and 40 vCPUs; Standard_NC80adis_H100_v5 has 2 (188 GB)",
        NCADSH100V5_PAGE, source_date="2024-07-31"),
    "t4_sizes": Fact(
        "Standard_NC4as_T4_v3, NC8as_T4_v3 and NC16as_T4_v3 have 1 NVIDIA T4 with 16 GB; NC64as_T4_v3 has 4 (64 GB)",
        NCAST4V3_PAGE, source_date="2024-07-31"),
})


def cite(key: str) -> str:
    return FACTS[key].cited()


def show_facts(*keys: str) -> None:
    """Print the named facts, each with its source and the date checked (for notebooks)."""
    for key in keys or tuple(FACTS):
        print(f"- {cite(key)}")
