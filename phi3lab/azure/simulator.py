"""What a dry run hears back: answers shaped like Azure's, built from the settings and ``facts``.

A dry run runs the same code as the real run, so every request needs an answer: the workspace
(a hub-based project in the settings' region), the model registry (what ``facts`` documents:
retired models are gone, the successors carry their documented fine-tuning regions), the
workspace's blob datastore, and acceptance of every write. Values only Azure knows (the
registry's model version, the workspace GUID, the storage account) are visible placeholders.
"""

from __future__ import annotations

import base64
import re

from .catalog import REGION_TAG
from .dryrun import Reply, accepting
from .facts import FINETUNING_REGIONS
from .settings import PLACEHOLDER_SETTINGS, AzureSettings

REGISTRY_VERSION = "<registry-version>"  # the real run pins the version the registry reports
WORKSPACE_ID = "<workspace-id>"
STORAGE_ACCOUNT = "yourstorageaccount"
BLOBS = r"^https://[a-z0-9]+\.blob\.core\.windows\.net/"  # any account: a test's fake names its own
JOB_TYPE = "Microsoft.MachineLearningServices/workspaces/jobs"
DATA_TYPE = "Microsoft.MachineLearningServices/workspaces/data/versions"
ENDPOINT_TYPE = "Microsoft.MachineLearningServices/workspaces/serverlessEndpoints"
_STAMP = {"ETag": '"0x1"', "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"}


def service_routes(settings: AzureSettings | None) -> list:
    """Routes answering every request of a fine-tuning or deployment run (later entries win)."""
    settings = settings or PLACEHOLDER_SETTINGS
    region = settings.region or PLACEHOLDER_SETTINGS.region
    workspace = rf"/workspaces/{re.escape(settings.project)}"
    return [
        ("GET", workspace + r"\?api-version", lambda r, m: _workspace(r, settings, region)),
        ("GET", r"api\.azureml\.ms/discovery", lambda r, m: Reply(200, _discovery(region))),
        ("GET", r"/registries/azureml/discovery", _registry_discovery),
        ("GET", r"/registries/azureml/models/(?P<name>[^/?]+)(/versions/(?P<version>[^/?]+))?\?", _registry_model),
        ("GET", r"/registries/azureml/models/(?P<name>[^/]+)/versions\?", _registry_versions),
        ("GET", workspace + r"/datastores/workspaceblobstore\?", _datastore),
        ("POST", workspace + r"/datastores/workspaceblobstore/listSecrets\?", _datastore_secrets),
        ("HEAD", BLOBS, lambda r, m: Reply(404, b"", {"x-ms-error-code": "BlobNotFound"})),
        ("PUT", BLOBS, lambda r, m: Reply(200 if "comp=" in r.url else 201, b"", _STAMP)),
        ("PUT", workspace + r"/data/[^/]+/versions/[^/?]+\?", accepting(201, DATA_TYPE)),
        ("PUT", workspace + r"/jobs/[^/?]+\?", accepting(201, JOB_TYPE, status="NotStarted")),
        ("PUT", workspace + r"/serverlessEndpoints/[^/?]+\?",
         accepting(200, ENDPOINT_TYPE, provisioningState="Succeeded")),
    ]


def _workspace(request, settings: AzureSettings, region: str) -> Reply:
    return Reply(200, {"id": request.path, "name": settings.project, "location": region, "kind": "Project",
                       "type": "Microsoft.MachineLearningServices/workspaces",
                       "properties": {"workspaceId": WORKSPACE_ID,
                                      "discoveryUrl": f"https://{region}.api.azureml.ms/discovery"}})


def _discovery(region: str) -> dict:
    api = f"https://{region}.api.azureml.ms"
    return {name: api for name in ("api", "catalog", "experimentation", "history", "modelmanagement", "pipelines")}


def _registry_discovery(request, match) -> Reply:
    return Reply(200, {"registryName": "azureml", "primaryRegion": "eastus",
                       "primaryRegionResourceProviderUri": "https://eastus.api.azureml.ms/",
                       "subscriptionId": "registry-subscription", "resourceGroup": "registry-resource-group",
                       "regions": ["eastus"]})


def _registry_body(name: str) -> dict | None:
    """The documented answer: successors with their fine-tuning regions; retired or unknown models are absent."""
    regions = FINETUNING_REGIONS.get(name)
    if regions is None:
        return None
    model_id = f"azureml://registries/azureml/models/{name}/versions/{REGISTRY_VERSION}"
    return {"id": model_id, "name": REGISTRY_VERSION,
            "properties": {"tags": {REGION_TAG: ",".join(regions)}, "properties": {}, "flavors": {},
                           "modelType": "mlflow_model", "isArchived": False, "modelUri": model_id}}


def _not_in_registry(name: str) -> Reply:
    return Reply(404, {"error": {"code": "NotFound", "message": f"Model {name} not found in registry azureml"}})


def _registry_model(request, match) -> Reply:
    body = _registry_body(match["name"])
    return Reply(200, body) if body else _not_in_registry(match["name"])


def _registry_versions(request, match) -> Reply:
    body = _registry_body(match["name"])
    return Reply(200, {"value": [body]}) if body else _not_in_registry(match["name"])


def _datastore(request, match) -> Reply:
    return Reply(200, {"id": request.path, "name": "workspaceblobstore",
                       "properties": {"datastoreType": "AzureBlob", "accountName": STORAGE_ACCOUNT,
                                      "containerName": "azureml-blobstore-placeholder", "endpoint": "core.windows.net",
                                      "protocol": "https", "isDefault": True,
                                      "credentials": {"credentialsType": "AccountKey"}}})


def _datastore_secrets(request, match) -> Reply:
    # A dummy storage key, so the SDK can sign the (never sent) upload.
    return Reply(200, {"secretsType": "AccountKey", "key": base64.b64encode(b"dry-run-placeholder").decode()})
