"""Serverless deployment, endpoint queries and cleanup, tested at the HTTP boundary with the real SDK clients."""

from __future__ import annotations

import json

import pytest
from azure_fakes import SETTINGS, SUBSCRIPTION, WORKSPACE_PATH, FakeAzure

from phi3lab.azure.cleanup import cleanup_azure, delete_course_resource_group
from phi3lab.azure.deployment import DeploymentError, deploy_serverless, validate_endpoint_name
from phi3lab.azure.dryrun import Reply
from phi3lab.endpoints import AzureEndpoint, load_test, query_endpoint
from phi3lab.errors import Phi3LabError
from phi3lab.monitoring import CallLog

KEY = "sk-endpoint-primary-key-0123456789abcdef"
SCORING = "https://phi3lab-chat.eastus2.models.ai.azure.com"
ARM = "https://management.azure.com" + WORKSPACE_PATH


class FakeFoundry(FakeAzure):
    """FakeAzure plus serverless endpoints, workspace models/data listings, job listing and the inference API."""

    def __init__(self, endpoint_states=("Creating", "Succeeded"), **kwargs):
        super().__init__(**kwargs)
        self.endpoint_states = list(endpoint_states)
        self.endpoints: dict[str, dict] = {}
        self.endpoint_gets = 0
        # name -> versions, in creation order; the newest course model is phi3lab-ft-bbbb
        self.assets = {"models": {"phi3lab-ft-aaaa": ["1"], "phi3lab-ft-bbbb": ["1", "2"], "someone-else": ["1"]},
                       "data": {"phi3lab-train": ["a1b2"], "phi3lab-validation": ["c3d4"]}}
        self.created = {"phi3lab-ft-aaaa": "2026-11-01T10:00:00Z", "phi3lab-ft-bbbb": "2026-11-20T10:00:00Z",
                        "someone-else": "2026-11-30T10:00:00Z"}
        self.archived: set[tuple[str, str, str]] = set()
        self.deleted: list[tuple[str, str, str]] = []
        self.blobs.update({f"/azureml-blobstore-1234/{name}.jsonl": b"{}" for name in self.assets["data"]})
        self.listed_jobs = [("phi3lab-ft-0001", "Running"), ("phi3lab-ft-0000", "Completed"), ("other-job", "Running")]
        self.cancelled: list[str] = []
        ws = r"/workspaces/proj-phi3lab"
        t = self.transport
        t.route("GET", ws + r"/serverlessEndpoints\?", self.endpoint_list)
        t.route("PUT", ws + r"/serverlessEndpoints/(?P<name>[^/?]+)\?", self.endpoint_put)
        t.route("GET", ws + r"/serverlessEndpoints/(?P<name>[^/?]+)\?", self.endpoint_get)
        t.route("DELETE", ws + r"/serverlessEndpoints/(?P<name>[^/?]+)\?", self.endpoint_delete)
        t.route("POST", ws + r"/serverlessEndpoints/(?P<name>[^/?]+)/listKeys\?", self.endpoint_keys)
        t.route("GET", ws + r"/operationResults/", self.operation_result)
        t.route("GET", ws + r"/(?P<kind>models|data)\?", self.container_list)
        t.route("GET", ws + r"/(?P<kind>models|data)/(?P<name>[^/]+)/versions\?", self.version_list)
        t.route("GET", ws + r"/(?P<kind>models|data)/(?P<name>[^/]+)/versions/(?P<version>[^/?]+)\?", self.version_get)
        t.route("PUT", ws + r"/(?P<kind>models|data)/(?P<name>[^/]+)/versions/(?P<version>[^/?]+)\?", self.version_put)
        t.route("DELETE", ws + r"/(?P<kind>models|data)/(?P<name>[^/]+)/versions/(?P<version>[^/?]+)\?",
                self.version_delete)
        t.route("GET", ws + r"/jobs\?", self.job_list)
        t.route("POST", ws + r"/jobs/(?P<name>[^/?]+)/cancel\?", self.job_cancel)
        t.route("POST", r"models\.ai\.azure\.com/v1/chat/completions$", self.chat)

    # ----- serverless endpoints ---------------------------------------------------------------
    def _endpoint(self, name: str, state: str) -> dict:
        body = self.endpoints[name]
        body["properties"].update(provisioningState=state, endpointState="Online" if state == "Succeeded" else "Creating",
                                  inferenceEndpoint={"uri": SCORING})
        return body

    def endpoint_put(self, request, match):
        body = json.loads(json.dumps(request.body))
        body.update(id=request.path, name=match["name"],
                    type="Microsoft.MachineLearningServices/workspaces/serverlessEndpoints")
        body["properties"]["authMode"] = "Key"
        self.endpoints[match["name"]] = body
        return Reply(201, self._endpoint(match["name"], self.endpoint_states[0]), {"Retry-After": "0"})

    def endpoint_get(self, request, match):
        if match["name"] not in self.endpoints:
            return Reply(404, {"error": {"code": "NotFound", "message": f"endpoint {match['name']} not found"}})
        self.endpoint_gets += 1
        state = self.endpoint_states[min(self.endpoint_gets, len(self.endpoint_states) - 1)]
        return Reply(200, self._endpoint(match["name"], state), {"Retry-After": "0"})

    def endpoint_list(self, request, match):
        return Reply(200, {"value": [self._endpoint(n, "Succeeded") for n in self.endpoints]})

    def endpoint_delete(self, request, match):
        # Like ARM: 202 and an operation to poll when something is deleted, 204 when nothing was there.
        if self.endpoints.pop(match["name"], None) is None:
            return Reply(204, None)
        return Reply(202, None, {"Location": f"{ARM}/operationResults/delete-{match['name']}?api-version=1",
                                 "Retry-After": "0"})

    def operation_result(self, request, match):
        return Reply(200, None)

    def endpoint_keys(self, request, match):
        return Reply(200, {"primaryKey": KEY, "secondaryKey": KEY[::-1]})

    # ----- workspace models and data ----------------------------------------------------------
    def _version_body(self, kind, name, version):
        props = {"isArchived": (kind, name, version) in self.archived, "tags": {}, "properties": {}}
        if kind == "models":
            props.update(modelType="mlflow_model", modelUri=f"azureml://jobs/x/outputs/{name}", flavors={})
        else:
            props.update(dataType="uri_file", dataUri=f"azureml://datastores/workspaceblobstore/paths/{name}.jsonl")
        return {"id": f"{WORKSPACE_PATH}/{kind}/{name}/versions/{version}", "name": version, "properties": props}

    def container_list(self, request, match):
        kind = match["kind"]
        value = [{"id": f"{WORKSPACE_PATH}/{kind}/{name}", "name": name,
                  "systemData": {"createdAt": self.created.get(name, "2026-11-01T00:00:00Z")},
                  "properties": {"isArchived": False, "latestVersion": versions[-1], "tags": {}}}
                 for name, versions in self.assets[kind].items()
                 if any((kind, name, v) not in self.archived for v in versions)]
        return Reply(200, {"value": value})

    def version_list(self, request, match):
        kind, name = match["kind"], match["name"]
        versions = [v for v in reversed(self.assets[kind].get(name, [])) if (kind, name, v) not in self.archived]
        if "$top=1" in request.url:
            versions = versions[:1]
        return Reply(200, {"value": [self._version_body(kind, name, v) for v in versions]})

    def version_get(self, request, match):
        kind, name, version = match["kind"], match["name"], match["version"]
        if version not in self.assets[kind].get(name, []):
            return Reply(404, {"error": {"code": "UserError", "message": f"{name}:{version} not found"}})
        return Reply(200, self._version_body(kind, name, version))

    def _in_use(self, name, version) -> bool:
        return any(f"/models/{name}/versions/{version}" in e["properties"]["modelSettings"]["modelId"]
                   for e in self.endpoints.values())

    def version_delete(self, request, match):
        kind, name, version = match["kind"], match["name"], match["version"]
        if version not in self.assets[kind].get(name, []):
            return Reply(404, {"error": {"code": "UserError", "message": f"{name}:{version} not found"}})
        if kind == "models" and self._in_use(name, version):
            return Reply(409, {"error": {"code": "Conflict", "message": "model is used by a deployment"}})
        self.assets[kind][name].remove(version)
        if not self.assets[kind][name]:
            del self.assets[kind][name]
        self.deleted.append((kind, name, version))
        return Reply(200, None)

    def version_put(self, request, match):
        kind, name, version = match["kind"], match["name"], match["version"]
        if kind == "models" and request.body["properties"].get("isArchived") and self._in_use(name, version):
            return Reply(409, {"error": {"code": "Conflict", "message": "model is used by a deployment"}})
        if request.body["properties"].get("isArchived"):
            self.archived.add((kind, name, version))
        return Reply(200, self._version_body(kind, name, version))

    # ----- jobs -------------------------------------------------------------------------------
    def job_list(self, request, match):
        value = [{"id": f"{WORKSPACE_PATH}/jobs/{name}", "name": name,
                  "properties": {"jobType": "Command", "status": "Canceled" if name in self.cancelled else status,
                                 "command": "python train.py", "environmentId": "azureml:env:1",
                                 "tags": {"course": "phi3lab"} if name.startswith("phi3lab") else {}}}
                 for name, status in self.listed_jobs]
        return Reply(200, {"value": value})

    def job_cancel(self, request, match):
        self.cancelled.append(match["name"])
        return Reply(200, None)

    # ----- the OpenAI-compatible inference route (/v1/chat/completions) ---------------------------
    def chat(self, request, match):
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return Reply(401, {"error": {"code": "Unauthorized", "message": "invalid key"}})
        question = request.body["messages"][-1]["content"]
        if "blocked" in question:
            return Reply(400, {"error": {"code": "content_filter", "message": "The response was filtered due to "
                                                                              "the prompt triggering content management policy"}})
        return Reply(200, {"id": "cmpl-1", "created": 1700000000, "model": "phi3lab-ft",
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": f"Answer to: {question}"}}],
                           "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}})


@pytest.fixture
def fake():
    return FakeFoundry()


def _deploy(fake, **kwargs):
    return deploy_serverless(settings=SETTINGS, confirm=True, credential=fake.credential, transport=fake.transport,
                             **kwargs)


@pytest.mark.parametrize("name", ["1abc", "has_underscore", "a" * 53, "", "with space", "-lead"])
def test_invalid_endpoint_names_are_refused_before_any_call(fake, name):
    with pytest.raises(DeploymentError, match="must start with a letter"):
        _deploy(fake, endpoint_name=name)
    assert fake.transport.requests == []


def test_valid_names_pass_the_rule():
    assert validate_endpoint_name("phi3lab-chat") == "phi3lab-chat"
    assert validate_endpoint_name("a" * 52) == "a" * 52


def test_dry_run_shows_the_put_with_auth_mode_and_content_filter_and_sends_nothing(fake):
    deployment = deploy_serverless()
    assert deployment.dry_run and len(deployment.requests) == 1
    put = deployment.requests[0]
    assert put.method == "PUT" and put.path.endswith("/serverlessEndpoints/phi3lab-chat")
    assert put.api_version == "2024-01-01-preview"
    assert put.body["sku"] == {"name": "Consumption"} and put.body["tags"] == {"course": "phi3lab"}
    assert put.body["properties"]["authMode"] == "Key"
    assert put.body["properties"]["contentSafety"] == {"contentSafetyStatus": "Enabled"}
    text = deployment.summary()
    assert "DRY RUN" in text and "/models/phi3lab-ft-<newest>/" in text and "content filtering: Enabled" in text
    with pytest.raises(DeploymentError, match="dry run"):
        _ = deployment.endpoint


def test_content_filter_off_is_written_into_the_request_and_warned_about(fake):
    deployment = _deploy(fake, content_filter=False)
    [put] = fake.transport.matching("PUT", r"/serverlessEndpoints/phi3lab-chat\?")
    assert put.body["properties"]["contentSafety"] == {"contentSafetyStatus": "Disabled"}
    assert put.body["properties"]["authMode"] == "Key"
    assert "content filtering: Disabled" in deployment.summary() and "not screened" in deployment.summary()


@pytest.mark.parametrize("value", ["no", 0, None, "False"])
def test_a_content_filter_that_is_not_a_bool_is_refused_before_any_call(fake, value):
    with pytest.raises(DeploymentError, match="content_filter must be True"):
        _deploy(fake, content_filter=value)
    assert fake.transport.requests == []


def test_deploy_creates_waits_and_masks_the_key(fake):
    deployment = _deploy(fake, model="phi3lab-ft-bbbb", version=2)
    put = fake.transport.matching("PUT", r"/serverlessEndpoints/phi3lab-chat\?")[0]
    assert put.body["properties"]["modelSettings"]["modelId"] == (
        "azureml://locations/eastus2/workspaces/12345678-aaaa-bbbb-cccc-1234567890ab/models/phi3lab-ft-bbbb/"
        "versions/2")
    assert put.body["location"] == "eastus2" and put.body["properties"]["authMode"] == "Key"
    assert fake.endpoint_gets >= 1  # it waited through "Creating"
    assert fake.transport.matching("POST", r"/listKeys\?")
    assert deployment.state.lower() == "succeeded" and deployment.scoring_uri == SCORING
    for text in (deployment.summary(), repr(deployment), repr(deployment.endpoint), str(deployment)):
        assert KEY not in text and KEY[:8] not in text


def test_deploy_takes_the_newest_fine_tuned_course_model_and_its_latest_version(fake):
    deployment = _deploy(fake)
    assert deployment.model_id.endswith("/models/phi3lab-ft-bbbb/versions/2")


def test_deploy_without_a_fine_tuned_model_says_what_to_do(fake):
    fake.assets["models"] = {"someone-else": ["1"]}
    with pytest.raises(DeploymentError, match="no fine-tuned course model .*notebook 03"):
        _deploy(fake)
    assert not fake.transport.matching("PUT", r"/serverlessEndpoints/")


def test_deploy_times_out_with_advice(fake):
    fake.endpoint_states = ["Creating"]
    with pytest.raises(DeploymentError, match="did not finish within 1 s"):
        _deploy(fake, timeout=1)


def test_failed_provisioning_is_reported(fake):
    fake.endpoint_states = ["Creating", "Failed"]
    with pytest.raises(Phi3LabError, match="creating serverless endpoint phi3lab-chat failed.*Failed"):
        _deploy(fake)


def test_azure_endpoint_queries_go_through_the_openai_client_on_the_v1_route(fake, tmp_path):
    endpoint = AzureEndpoint(SCORING, KEY, name="azure", transport=fake.transport)
    log = CallLog(tmp_path / "calls.jsonl")
    report = query_endpoint(endpoint, ["What is LoRA?", "this gets blocked"], system="Be brief.", max_tokens=20,
                            log=log, confirm=True, max_requests=2)
    calls = fake.transport.matching("POST", r"/chat/completions")
    assert len(calls) == 2 and calls[0].url == f"{SCORING}/v1/chat/completions"
    assert calls[0].headers["authorization"] == f"Bearer {KEY}" and "api-key" not in calls[0].headers
    assert calls[0].body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert calls[0].body["max_tokens"] == 20 and calls[0].body["temperature"] == 0.0
    assert "model" not in calls[0].body  # a serverless endpoint serves one model
    ok, blocked = report.results
    assert ok.response == "Answer to: What is LoRA?" and (ok.prompt_tokens, ok.completion_tokens) == (12, 5)
    assert blocked.status == 400 and "content management policy" in blocked.error
    text = (tmp_path / "calls.jsonl").read_text()
    assert KEY not in text and "authorization" not in text.lower() and text.count("\n") == 2


def test_a_wrong_key_is_a_401_result_not_an_exception(fake):
    report = query_endpoint(AzureEndpoint(SCORING, "wrong-key-0000", transport=fake.transport), ["hi"], log=False,
                            confirm=True, max_requests=1)
    assert report.results[0].status == 401 and "invalid key" in report.results[0].error


def test_load_test_runs_the_same_client_against_azure(fake):
    endpoint = AzureEndpoint(SCORING, KEY, transport=fake.transport)
    report = load_test(endpoint, ["a", "b"], concurrency=3, requests=6, max_tokens=5, log=False, confirm=True,
                       max_requests=6)
    assert report.summary()["errors"] == 0 and report.summary()["completion_tokens"] == 30


def _cleanup(fake, **kwargs):
    return cleanup_azure(SETTINGS, credential=fake.credential, transport=fake.transport, **kwargs)


def test_cleanup_without_confirmation_only_lists(fake):
    _deploy(fake)
    before = len(fake.transport.requests)
    report = _cleanup(fake)
    kinds = [(r.kind, r.name, r.version, r.action) for r in report.resources]
    assert kinds == [("job", "phi3lab-ft-0001", None, "cancel"), ("job", "phi3lab-ft-0000", None, "keep"),
                     ("endpoint", "phi3lab-chat", None, "delete"),
                     ("model", "phi3lab-ft-aaaa", "1", "delete"), ("model", "phi3lab-ft-bbbb", "2", "delete"),
                     ("model", "phi3lab-ft-bbbb", "1", "delete"),
                     ("data", "phi3lab-train", "a1b2", "delete"), ("data", "phi3lab-validation", "c3d4", "delete")]
    assert all(r.method == "GET" for r in fake.transport.requests[before:])
    assert "DRY RUN" in report.summary() and "someone-else" not in report.summary()


def test_cleanup_deletes_in_the_order_azure_accepts_says_what_remains_and_is_idempotent(fake):
    _deploy(fake)
    report = _cleanup(fake, confirm=True)
    assert [r.outcome for r in report.resources] == [
        "cancelled", "kept (finished jobs cost nothing)", "deleted", "deleted", "deleted", "deleted",
        "deleted with its uploaded file", "deleted with its uploaded file"]
    deletes = [r.path for r in fake.transport.requests if r.method == "DELETE"]
    endpoint_at = next(i for i, p in enumerate(deletes) if "serverlessEndpoints" in p)
    assert endpoint_at < next(i for i, p in enumerate(deletes) if "/models/phi3lab-ft-bbbb/" in p)
    assert fake.endpoints == {} and ("models", "phi3lab-ft-bbbb", "2") in fake.deleted and not fake.archived
    assert not [b for b in fake.blobs if "phi3lab-train" in b]  # the uploaded file went too
    assert fake.cancelled == ["phi3lab-ft-0001"] and "someone-else" in fake.assets["models"]
    remaining = report.summary().split("What remains:")[1]
    assert "job phi3lab-ft-0000: its history stays" in remaining and "delete_course_resource_group" in remaining

    again = _cleanup(fake, confirm=True)
    assert [(r.kind, r.action) for r in again.resources] == [("job", "keep"), ("job", "keep")]


def test_where_the_service_refuses_a_delete_cleanup_archives_and_says_so(fake):
    fake.transport.route("DELETE", r"/models/phi3lab-ft-aaaa/versions/", Reply(405, {"error": {
        "code": "MethodNotAllowed", "message": "delete is not supported for this model"}}))
    report = _cleanup(fake, confirm=True)
    aaaa = next(r for r in report.resources if r.name == "phi3lab-ft-aaaa")
    assert aaaa.outcome.startswith("archived (the service refused the delete")
    assert ("models", "phi3lab-ft-aaaa", "1") in fake.archived
    assert "phi3lab-ft-aaaa:1 is archived, not deleted; to delete it: Foundry portal" in report.summary()


def test_a_model_still_deployed_is_reported_not_hidden(fake):
    _deploy(fake)
    fake.transport.route("DELETE", r"/serverlessEndpoints/", Reply(409, {"error": {"code": "Conflict",
                                                                                  "message": "busy"}}))
    report = _cleanup(fake, confirm=True)
    outcomes = {(r.kind, r.name, r.version): r.outcome for r in report.resources}
    assert outcomes[("endpoint", "phi3lab-chat", None)].startswith("FAILED")
    assert outcomes[("model", "phi3lab-ft-bbbb", "2")].startswith("FAILED")
    assert "used by a deployment" in outcomes[("model", "phi3lab-ft-bbbb", "2")]
    assert "endpoint phi3lab-chat: still there" in report.summary()


def test_cleanup_of_resources_already_deleted_counts_them_as_done(fake):
    _deploy(fake)
    listed = _cleanup(fake)  # listed now; gone by the time cleanup acts (deleted in the portal meanwhile)
    fake.endpoints.clear()
    fake.transport.route("DELETE", r"/serverlessEndpoints/", Reply(404, {"error": {"code": "NotFound",
                                                                                  "message": "gone"}}))
    fake.assets["models"].pop("phi3lab-ft-aaaa")
    fake.blobs.clear()
    from phi3lab.azure.auth import ml_client
    from phi3lab.azure.cleanup import _act

    ml = ml_client(SETTINGS, credential=fake.credential, transport=fake.transport)
    outcomes = {(r.kind, r.name): _act(ml, r, 5, fake.transport) for r in listed.resources if r.kind != "job"}
    assert outcomes[("endpoint", "phi3lab-chat")] == "already gone"
    assert outcomes[("model", "phi3lab-ft-aaaa")] == "already gone"
    assert outcomes[("data", "phi3lab-train")] == "deleted (its file was already gone)"


def test_cleanup_without_settings_explains_the_order(monkeypatch):
    monkeypatch.setattr("phi3lab.azure.cleanup.load_settings", lambda: None)
    text = cleanup_azure().summary()
    assert "DRY RUN" in text and text.index("delete endpoints") < text.index("delete fine-tuned models")
    assert text.index("cancel running jobs") < text.index("delete compute clusters") < text.index("delete endpoints")
    assert "delete_course_resource_group" in text


def _delete_group(fake, **kwargs):
    return delete_course_resource_group(SETTINGS, credential=fake.credential, transport=fake.transport, **kwargs)


def test_the_resource_group_step_is_a_dry_run_until_confirmed_on_its_own(fake):
    text = _delete_group(fake)
    assert text.startswith("DRY RUN") and "DELETE https://management.azure.com/subscriptions/1111…/resourcegroups/" \
        "rg-phi3lab?" in text and SUBSCRIPTION not in text
    assert fake.transport.requests == []
    _cleanup(fake, confirm=True)
    assert not fake.transport.matching("DELETE", r"/resourcegroups/")  # cleanup_azure never deletes the group


def test_a_group_the_course_did_not_create_is_left_alone(fake):
    text = _delete_group(fake, confirm=True)
    assert "not created by the course" in text and "Delete resource group" in text
    assert not fake.transport.matching("DELETE", r"/resourcegroups/") and fake.group_exists


def test_a_group_the_course_created_is_deleted_and_a_second_run_finds_it_gone():
    fake = FakeFoundry(group_tags={"course": "phi3lab"})
    assert _delete_group(fake, confirm=True) == "resource group rg-phi3lab deleted, with everything in it"
    [delete] = fake.transport.matching("DELETE", r"/resourcegroups/rg-phi3lab\?")
    assert delete.api_version and not fake.group_exists
    assert "already gone" in _delete_group(fake, confirm=True)
