"""The HTTP boundary of Azure, simulated: a credential stub and a fake service for the real SDK clients.

``FakeAzure().transport`` is a ``RecordingTransport`` (an azure-core ``HttpTransport``) whose route
table answers like Azure Resource Manager, the Azure ML workspace and registry services, blob
storage and MLflow, with bodies shaped after the REST API's documented examples. Tests pass it
to the real azure-ai-ml / azure-mgmt clients and assert on ``transport.requests``. Add or
override answers with ``fake.transport.route(method, url_regex, responder)`` (newest wins).
"""

from __future__ import annotations

import base64
import json
import time
import uuid

from azure.core.credentials import AccessToken, AccessTokenInfo

from phi3lab.azure.dryrun import RecordedRequest, RecordingTransport, Reply
from phi3lab.azure.roles import AZURE_AI_DEVELOPER, CONTRIBUTOR
from phi3lab.azure.settings import AzureSettings

SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
TENANT = "99999999-8888-7777-6666-555555555555"
PRINCIPAL = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
SETTINGS = AzureSettings(SUBSCRIPTION, "rg-phi3lab", "proj-phi3lab", "eastus2")
WORKSPACE_PATH = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-phi3lab/providers/"
                  f"Microsoft.MachineLearningServices/workspaces/proj-phi3lab")
STORAGE = "https://stphi3lab.blob.core.windows.net"
ACCOUNT = "Microsoft.CognitiveServices/accounts"
API = "https://eastus2.api.azureml.ms"


def fake_jwt(**claims) -> str:
    def part(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return ".".join([part({"alg": "none", "typ": "JWT"}), part({"oid": PRINCIPAL, "tid": TENANT, **claims}), "sig"])


class StubCredential:
    """A TokenCredential that hands out a fake (unsigned) token carrying an ``oid`` claim."""

    def __init__(self):
        self.scopes: list[tuple] = []
        self.token = fake_jwt()

    def get_token(self, *scopes, **kwargs):
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    def get_token_info(self, *scopes, options=None):
        self.scopes.append(scopes)
        return AccessTokenInfo(self.token, int(time.time()) + 3600)


def _vm_size(name: str, family: str, vcpus: int, gpus: int) -> dict:
    return {"name": name, "family": family, "vCPUs": vcpus, "gpus": gpus, "memoryGB": vcpus * 9,
            "lowPriorityCapable": True, "premiumIO": True, "supportedComputeTypes": ["AmlCompute", "ComputeInstance"]}


def error(status: int, code: str, message: str, headers: dict | None = None) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message}}, headers or {})


class FakeAzure:
    """A stateful fake of the services the course talks to.

    ``job_statuses``: what successive GETs of a submitted job report (the last one repeats).
    ``roles`` are assigned on the resource group, ``subscription_roles`` on the subscription.
    ``workspace_kind``: "Project" (hub-based), "Hub", "Default", or None for a Foundry project (the
    Azure ML API does not know it; a Cognitive Services account in the group holds it).
    """

    def __init__(self, *, region: str = "eastus2", provider_state: str = "NotRegistered",
                 roles: tuple[str, ...] = (AZURE_AI_DEVELOPER,), subscription_roles: tuple[str, ...] = (CONTRIBUTOR,),
                 model_regions: dict[str, object] | None = None, workspace_kind: str | None = "Project",
                 group_tags: dict | None = None,
                 job_statuses: tuple[str, ...] = ("NotStarted", "Running", "Completed"),
                 job_error: str = "Training data has 0 valid lines"):
        self.region, self.provider_state, self.roles = region, provider_state, roles
        self.subscription_roles, self.workspace_kind, self.group_tags = subscription_roles, workspace_kind, group_tags
        self.group_exists = True
        self.model_regions = model_regions if model_regions is not None else {"Phi-3-mini-4k-instruct": ["eastus2"]}
        self.job_statuses, self.job_error = list(job_statuses), job_error
        self.data: dict[tuple[str, str], dict] = {}
        self.blobs: dict[str, bytes] = {}
        self.jobs: dict[str, dict] = {}
        self.job_gets: dict[str, int] = {}
        self.metrics: dict[tuple[str, str], list[dict]] = {}
        # Managed compute: the region's VM sizes, its quota as (in use, limit) vCPUs, the workspace's clusters.
        self.vm_sizes = [_vm_size("Standard_NC24ads_A100_v4", "standardNCADSA100v4Family", 24, 1),
                         _vm_size("Standard_NC48ads_A100_v4", "standardNCADSA100v4Family", 48, 2),
                         _vm_size("Standard_NC4as_T4_v3", "standardNCASv3_T4Family", 4, 1),
                         _vm_size("Standard_D4s_v3", "standardDSv3Family", 4, 0)]
        self.quota = {("standardNCADSA100v4Family", "Standard NCADSA100v4 Family Cluster Dedicated vCPUs"): (0, 48),
                      ("standardNCASv3_T4Family", "Standard NCASv3_T4 Family Cluster Dedicated vCPUs"): (0, 8),
                      ("TotalCores", "Total Cluster Dedicated Regional vCPUs"): (0, 100),
                      ("TotalLowPriorityCores", "Total Cluster LowPriority Regional vCPUs"): (0, 100)}
        self.computes: dict[str, dict] = {}
        self.credential = StubCredential()
        self.transport = RecordingTransport(self._routes())

    # ----- route table ------------------------------------------------------------------------
    def _routes(self):
        ws = r"/workspaces/proj-phi3lab"
        return [
            ("GET", r"/resourcegroups/(?P<rg>[^/?]+)\?", self.resource_group),
            ("DELETE", r"/resourcegroups/(?P<rg>[^/?]+)\?", self.resource_group_delete),
            ("GET", r"(?i)/resourcegroups/rg-phi3lab/resources\?", self.group_resources),
            ("GET", r"/accounts/(?P<account>[^/]+)/projects/(?P<project>[^/?]+)\?", self.foundry_project),
            ("GET", r"/providers/Microsoft\.Network\?", self.provider),
            ("POST", r"/providers/Microsoft\.Network/register\?", self.register),
            ("GET", r"/providers/Microsoft\.Authorization/roleAssignments\?", self.role_assignments),
            ("GET", ws + r"\?api-version", self.workspace),
            ("GET", r"/discovery", self.discovery),
            ("GET", ws + r"/datastores/workspaceblobstore\?", self.datastore),
            ("POST", ws + r"/datastores/workspaceblobstore/listSecrets\?", self.datastore_secrets),
            ("GET", ws + r"/data/(?P<name>[^/]+)/versions/(?P<version>[^/?]+)\?", self.data_get),
            ("PUT", ws + r"/data/(?P<name>[^/]+)/versions/(?P<version>[^/?]+)\?", self.data_put),
            ("PUT", ws + r"/jobs/(?P<name>[^/?]+)\?", self.job_put),
            ("GET", r"/locations/(?P<location>[^/]+)/vmSizes\?", self.vm_size_list),
            ("GET", r"/locations/(?P<location>[^/]+)/usages\?", self.usage_list),
            ("GET", ws + r"/computes\?", self.compute_list),
            ("GET", ws + r"/computes/(?P<name>[^/?]+)\?", self.compute_get),
            ("PUT", ws + r"/computes/(?P<name>[^/?]+)\?", self.compute_put),
            ("DELETE", ws + r"/computes/(?P<name>[^/?]+)\?", self.compute_delete),
            ("GET", ws + r"/jobs/(?P<name>[^/?]+)\?", self.job_get),
            ("GET", r"/history/v1\.0/.*/runs/(?P<name>[^/?]+)/details", self.run_details),
            ("*", r"^https://stphi3lab\.blob\.core\.windows\.net/", self.blob),
            ("GET", r"/registries/azureml/discovery", self.registry_discovery),
            ("GET", r"/registries/azureml/models/(?P<name>[^/]+)/versions\?", self.registry_model_versions),
            ("GET", r"/registries/azureml/models/(?P<name>[^/?]+)(/versions/(?P<version>[^/?]+))?\?",
             self.registry_model),
            ("GET", r"/api/2\.0/mlflow/runs/get\?", self.mlflow_run),
            ("POST", r"/api/2\.0/mlflow/runs/search", self.mlflow_search),
            ("GET", r"/api/2\.0/mlflow/metrics/get-history\?", self.mlflow_history),
        ]

    # ----- Resource Manager ---------------------------------------------------------------------
    def resource_group(self, request: RecordedRequest, match) -> Reply:
        if not self.group_exists:
            return error(404, "ResourceGroupNotFound", f"Resource group '{match['rg']}' could not be found.")
        return Reply(200, {"id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{match['rg']}", "name": match["rg"],
                           "location": self.region, "tags": self.group_tags or {},
                           "properties": {"provisioningState": "Succeeded"}})

    def resource_group_delete(self, request, match) -> Reply:
        self.group_exists = False
        return Reply(200, None)

    def group_resources(self, request, match) -> Reply:
        """The group's Cognitive Services accounts: one Foundry resource when the project is a Foundry project."""
        if self.workspace_kind is not None:
            return Reply(200, {"value": []})
        account = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-phi3lab/providers/{ACCOUNT}/foundry-res"
        return Reply(200, {"value": [{"id": account, "name": "foundry-res", "type": ACCOUNT, "kind": "AIServices",
                                      "location": self.region}]})

    def foundry_project(self, request, match) -> Reply:
        if self.workspace_kind is None and match["project"] == "proj-phi3lab":
            return Reply(200, {"id": request.path, "name": f"{match['account']}/{match['project']}",
                               "type": f"{ACCOUNT}/projects", "location": self.region, "properties": {}})
        return error(404, "ResourceNotFound", f"project {match['project']} not found")

    def _provider_body(self) -> dict:
        return {"id": f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Network", "namespace": "Microsoft.Network",
                "registrationState": self.provider_state, "resourceTypes": []}

    def provider(self, request, match) -> Reply:
        return Reply(200, self._provider_body())

    def register(self, request, match) -> Reply:
        self.provider_state = "Registering"
        return Reply(200, self._provider_body())

    def role_assignments(self, request, match) -> Reply:
        """Like atScope(): the assignments at the resource group and those inherited from the subscription."""
        group = request.path.split("/providers/Microsoft.Authorization")[0]
        subscription = f"/subscriptions/{SUBSCRIPTION}"
        value = [{"id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
                  "name": str(uuid.uuid4()), "type": "Microsoft.Authorization/roleAssignments",
                  "properties": {"roleDefinitionId": f"/subscriptions/{SUBSCRIPTION}/providers/"
                                                     f"Microsoft.Authorization/roleDefinitions/{role}",
                                 "principalId": PRINCIPAL, "principalType": "User", "scope": scope}}
                 for scope, roles in ((group, self.roles), (subscription, self.subscription_roles)) for role in roles]
        return Reply(200, {"value": value})

    # ----- workspace ----------------------------------------------------------------------------
    def workspace(self, request, match) -> Reply:
        if self.workspace_kind is None:
            return error(404, "ResourceNotFound", "The Resource 'Microsoft.MachineLearningServices/workspaces/"
                                                  "proj-phi3lab' under resource group 'rg-phi3lab' was not found.")
        return Reply(200, {
            "id": WORKSPACE_PATH, "name": "proj-phi3lab", "location": self.region, "kind": self.workspace_kind,
            "type": "Microsoft.MachineLearningServices/workspaces",
            "properties": {"workspaceId": "12345678-aaaa-bbbb-cccc-1234567890ab", "discoveryUrl": f"{API}/discovery",
                           "mlFlowTrackingUri": f"azureml://{self.region}.api.azureml.ms/mlflow/v1.0{WORKSPACE_PATH}",
                           "storageAccount": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-phi3lab/providers/"
                                             f"Microsoft.Storage/storageAccounts/stphi3lab"}})

    def discovery(self, request, match) -> Reply:
        return Reply(200, {"api": API, "catalog": API, "experimentation": API, "history": API, "modelmanagement": API,
                           "pipelines": API, "studio": "https://ml.azure.com"})

    def datastore(self, request, match) -> Reply:
        return Reply(200, {"id": f"{WORKSPACE_PATH}/datastores/workspaceblobstore", "name": "workspaceblobstore",
                           "properties": {"datastoreType": "AzureBlob", "accountName": "stphi3lab",
                                          "containerName": "azureml-blobstore-1234", "endpoint": "core.windows.net",
                                          "protocol": "https", "isDefault": True,
                                          "credentials": {"credentialsType": "AccountKey"}}})

    def datastore_secrets(self, request, match) -> Reply:
        key = base64.b64encode(b"fake-storage-account-key-0123456789").decode()
        return Reply(200, {"secretsType": "AccountKey", "key": key})

    def data_get(self, request, match) -> Reply:
        stored = self.data.get((match["name"], match["version"]))
        if stored is None:
            return error(404, "UserError", f"Could not find asset with name {match['name']} and version "
                                           f"{match['version']}")
        return Reply(200, stored)

    def data_put(self, request, match) -> Reply:
        body = {**request.body, "id": request.path, "name": match["version"],
                "type": "Microsoft.MachineLearningServices/workspaces/data/versions"}
        self.data[(match["name"], match["version"])] = body
        return Reply(201, body)

    # ----- jobs ----------------------------------------------------------------------------------
    def job_put(self, request, match) -> Reply:
        body = json.loads(json.dumps(request.body))
        body.update(id=request.path, name=match["name"], type="Microsoft.MachineLearningServices/workspaces/jobs")
        body["properties"]["status"] = "NotStarted"
        self.jobs[match["name"]] = body
        return Reply(201, body)

    def job_get(self, request, match) -> Reply:
        name = match["name"]
        if name not in self.jobs:
            return error(404, "UserError", f"Job {name} was not found")
        # azure-ai-ml reads a job twice per jobs.get: generic (2024-01-01-preview), then, for a
        # fine-tuning job, typed (2024-10-01-preview). One poll advances the status once.
        count = self.job_gets.get(name, 0)
        if request.api_version != "2024-10-01-preview":
            self.job_gets[name] = count = count + 1
        count = max(count - 1, 0)
        body = json.loads(json.dumps(self.jobs[name]))
        body["properties"]["status"] = self.job_statuses[min(count, len(self.job_statuses) - 1)]
        return Reply(200, body)

    def run_details(self, request, match) -> Reply:
        return Reply(200, {"runId": match["name"], "status": "Failed",
                           "error": {"error": {"code": "UserError", "message": self.job_error}}})

    # ----- managed compute -------------------------------------------------------------------------
    def vm_size_list(self, request, match) -> Reply:
        return Reply(200, {"value": self.vm_sizes})

    def usage_list(self, request, match) -> Reply:
        value = [{"id": f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.MachineLearningServices/locations/"
                        f"{match['location']}/usages/{name}", "amlWorkspaceLocation": match["location"],
                  "type": "Microsoft.MachineLearningServices/vmFamily/usages", "unit": "Count",
                  "currentValue": used, "limit": limit, "name": {"value": name, "localizedValue": label}}
                 for (name, label), (used, limit) in self.quota.items()]
        return Reply(200, {"value": value})

    def add_cluster(self, name: str, vm_size: str, max_nodes: int = 2, min_nodes: int = 0, kind: str = "AmlCompute"):
        self.computes[name] = {
            "id": f"{WORKSPACE_PATH}/computes/{name}", "name": name, "location": self.region,
            "type": "Microsoft.MachineLearningServices/workspaces/computes", "tags": {"course": "phi3lab"},
            "properties": {"computeType": kind, "provisioningState": "Succeeded", "properties": {
                "vmSize": vm_size, "vmPriority": "Dedicated",
                "scaleSettings": {"minNodeCount": min_nodes, "maxNodeCount": max_nodes,
                                  "nodeIdleTimeBeforeScaleDown": "PT10M"}}}}

    def compute_list(self, request, match) -> Reply:
        return Reply(200, {"value": list(self.computes.values())})

    def compute_get(self, request, match) -> Reply:
        if match["name"] not in self.computes:
            return error(404, "ResourceNotFound", f"compute {match['name']} was not found")
        return Reply(200, self.computes[match["name"]])

    def compute_put(self, request, match) -> Reply:
        body = json.loads(json.dumps(request.body))
        body.update(id=request.path, name=match["name"], type="Microsoft.MachineLearningServices/workspaces/computes")
        body["properties"]["provisioningState"] = "Succeeded"
        self.computes[match["name"]] = body
        return Reply(201, body)

    def compute_delete(self, request, match) -> Reply:
        if self.computes.pop(match["name"], None) is None:
            return error(404, "ResourceNotFound", f"compute {match['name']} was not found")
        return Reply(200, None)

    # ----- blob storage ------------------------------------------------------------------------
    def blob(self, request, match) -> Reply:
        path = request.path
        stamp = {"ETag": '"0x1"', "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"}
        if request.method == "PUT" and "comp=" in request.url:  # metadata/properties of an existing blob
            return Reply(200, b"", stamp)
        if request.method == "PUT":
            self.blobs[path] = request.body if isinstance(request.body, bytes) else json.dumps(request.body).encode()
            return Reply(201, b"", stamp)
        if request.method == "DELETE":
            if self.blobs.pop(path, None) is None:
                return Reply(404, b"", {"x-ms-error-code": "BlobNotFound"})
            return Reply(202, b"", {"x-ms-delete-type-permanent": "true"})
        if "comp=list" in request.url:
            return Reply(200, b'<?xml version="1.0" encoding="utf-8"?><EnumerationResults><Blobs/>'
                              b"<NextMarker/></EnumerationResults>", {"Content-Type": "application/xml"})
        if path in self.blobs:
            data, headers = self.blobs[path], {"x-ms-blob-type": "BlockBlob"}
            wanted = request.headers.get("x-ms-range") or request.headers.get("Range")
            if request.method == "GET" and wanted:  # a download reads by ranges, as from the real service
                first, last = (int(n) for n in wanted.split("=")[1].split("-"))
                last = min(last, len(data) - 1)
                return Reply(206, data[first:last + 1], {**headers, **stamp,
                                                          "Content-Range": f"bytes {first}-{last}/{len(data)}"})
            return Reply(200, b"" if request.method == "HEAD" else data, {**headers, "Content-Length": str(len(data))})
        return Reply(404, b"", {"x-ms-error-code": "BlobNotFound"})

    # ----- registry ----------------------------------------------------------------------------
    def registry_discovery(self, request, match) -> Reply:
        return Reply(200, {"registryName": "azureml", "primaryRegion": "eastus",
                           "primaryRegionResourceProviderUri": "https://cert-eastus.experiments.azureml.net/",
                           "subscriptionId": "00000000-aaaa-0000-aaaa-000000000000",
                           "resourceGroup": "azureml-registry", "regions": ["eastus", "eastus2"]})

    def _model_body(self, name: str, version: str = "14") -> Reply:
        if name not in self.model_regions:
            return error(404, "NotFound", f"Model {name} not found in registry azureml")
        tags = {"task": "chat-completion"}
        regions = self.model_regions[name]
        if regions is not None:
            tags["maas-finetuning-deploy-regions"] = regions if isinstance(regions, str) else json.dumps(regions)
        return Reply(200, {"id": f"azureml://registries/azureml/models/{name}/versions/{version}", "name": version,
                           "properties": {"tags": tags, "properties": {}, "flavors": {}, "modelType": "mlflow_model",
                                          "isArchived": False, "description": "",
                                          "modelUri": f"azureml://registries/azureml/models/{name}/versions/{version}"}})

    def registry_model(self, request, match) -> Reply:
        return self._model_body(match["name"], match["version"] or "14")

    def registry_model_versions(self, request, match) -> Reply:
        reply = self._model_body(match["name"])
        if reply.status != 200:
            return reply
        return Reply(200, {"value": [reply.body]})

    # ----- MLflow --------------------------------------------------------------------------------
    def mlflow_run(self, request, match) -> Reply:
        run_id = request.query["run_id"]
        return Reply(200, {"run": self._run(run_id)})

    def _run(self, run_id: str) -> dict:
        keys = sorted({key for (rid, key) in self.metrics if rid == run_id})
        return {"info": {"run_id": run_id, "experiment_id": "7"},
                "data": {"metrics": [{"key": k, "value": self.metrics[(run_id, k)][-1]["value"]} for k in keys]}}

    def mlflow_search(self, request, match) -> Reply:
        parent = request.body["filter"].split("'")[1]
        children = sorted({rid for (rid, _) in self.metrics if rid.startswith(parent + "_")})
        return Reply(200, {"runs": [self._run(rid) for rid in children]})

    def mlflow_history(self, request, match) -> Reply:
        key = (request.query["run_id"], request.query["metric_key"])
        return Reply(200, {"metrics": [{"key": key[1], **point} for point in self.metrics.get(key, [])]})
