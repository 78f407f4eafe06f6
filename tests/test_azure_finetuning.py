"""Serverless fine-tuning through the real azure-ai-ml client against a fake Azure (HTTP boundary)."""

import json
import subprocess

import pytest
from azure_fakes import SETTINGS, SUBSCRIPTION, FakeAzure, error

from phi3lab.azure.catalog import ModelChoice, ModelNotOfferedError
from phi3lab.azure.finetuning import NO_GIT_METADATA, DataAsset, build_job, hyperparameters, submit_finetuning
from phi3lab.azure.monitor import (
    FINE_TUNING_JOB_API,
    GENERIC_JOB_API,
    Backoff,
    JobFailedError,
    MonitorTimeoutError,
    describe_monitoring,
    fetch_metrics,
    metrics_history,
    monitor_job,
)
from phi3lab.azure.projects import ProjectTypeError
from phi3lab.azure.roles import AZURE_AI_DEVELOPER
from phi3lab.azure.schemas import SchemaError, validate_job_body
from phi3lab.azure.simulator import REGISTRY_VERSION
from phi3lab.config import TrainConfig
from phi3lab.errors import Phi3LabError

JOB_API = "2024-10-01-preview"
PHI4 = ["eastus2", "eastus", "northcentralus", "southcentralus", "westus", "westus3"]


def chat_file(path, n):
    rows = [{"messages": [{"role": "system", "content": "You are a support agent."},
                          {"role": "user", "content": f"Question number {i}?"},
                          {"role": "assistant", "content": f"Answer number {i}."}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def config(tmp_path):
    return TrainConfig(train_file=str(chat_file(tmp_path / "train.jsonl", 12)),
                       validation_file=str(chat_file(tmp_path / "validation.jsonl", 4)),
                       batch_size=8, learning_rate=3e-5, epochs=2)


def _confirmed(config, fake, **kwargs):
    return submit_finetuning(config, SETTINGS, confirm=True, credential=fake.credential, transport=fake.transport,
                             **kwargs)


def test_hyperparameters_are_strings_from_the_config(config):
    assert hyperparameters(config) == {"per_device_train_batch_size": "8", "learning_rate": "3e-05",
                                       "num_train_epochs": "2"}


def test_sdk_helper_without_validation_data_still_raises_unboundlocalerror():
    # The pitfall this module avoids by building CustomModelFineTuningJob directly.
    from azure.ai.ml.finetuning import FineTuningTaskType, create_finetuning_job

    with pytest.raises(UnboundLocalError):
        create_finetuning_job(task=FineTuningTaskType.CHAT_COMPLETION, model="azureml://registries/azureml/models/m/"
                              "versions/1", training_data="azureml:t:1", output_model_name_prefix="p")


def _index(requests, method, pattern):
    import re

    return next(i for i, r in enumerate(requests) if r.method == method and re.search(pattern, r.url))


def test_dry_run_shows_the_whole_sequence_in_order_and_sends_nothing(config):
    submission = submit_finetuning(config, price_per_1k_tokens=0.5)
    requests = submission.requests
    assert submission.dry_run and all("your-ai-project" in r.url or "azureml.ms" in r.url or
                                      "yourstorageaccount" in r.url for r in requests)
    registry = _index(requests, "GET", r"/registries/azureml/models/Phi-4-mini-instruct/")
    data_get = _index(requests, "GET", r"/data/phi3lab-train/versions/")
    upload = _index(requests, "PUT", r"blob\.core\.windows\.net/.*train\.jsonl$")
    data_put = _index(requests, "PUT", r"/data/phi3lab-train/versions/")
    job_put = _index(requests, "PUT", r"/jobs/")
    assert registry < data_get < upload < data_put < job_put == len(requests) - 1
    # the upload is shown as its size and content hash, never the bytes
    rendered = requests[upload].render()
    train = config.resolve(config.train_file).read_bytes()
    assert f"<{len(train):,} bytes, sha256 " in rendered and "Question number" not in rendered
    details = submission.job_request.body["properties"]["fineTuningDetails"]
    assert details["model"]["uri"] == f"azureml://registries/azureml/models/Phi-4-mini-instruct/versions/{REGISTRY_VERSION}"
    assert "labels/latest" not in json.dumps(submission.job_request.body)
    assert details["taskType"] == "ChatCompletion"
    text = submission.summary()
    assert "DRY RUN" in text and "Phi-3-mini-4k-instruct was retired on 2025-08-30" in text
    assert "0000-0000" not in text and "Authorization" not in text and submission.cost.total > 0
    assert "offline stand-in's tokenizer" in text


def test_the_dry_run_is_the_real_run_minus_the_sending(config):
    """Both paths against the same fake service: the same requests, in the same order, with the same bodies."""
    dry_fake, live_fake = FakeAzure(), FakeAzure()
    dry = submit_finetuning(config, SETTINGS, credential=dry_fake.credential, transport=dry_fake.transport)
    live = _confirmed(config, live_fake)
    assert dry.dry_run and not live.dry_run and dry.job_name == live.job_name
    # the dry run's reads went to the fake, its writes stopped at the recording transport
    assert all(r.method in ("GET", "HEAD") for r in dry_fake.transport.requests)
    assert not live_fake.transport.matching("PUT", r"/jobs/") == []
    assert [_comparable(r) for r in dry.requests] == [_comparable(r) for r in live.requests]


def _comparable(request):
    """Method, URL and body, with the secrets (signatures, keys) and server-assigned asset ids left out."""
    body = json.loads(json.dumps(request.body)) if isinstance(request.body, (dict, list)) else request.body
    details = (body or {}).get("properties", {}).get("fineTuningDetails", {}) if isinstance(body, dict) else {}
    for key in ("trainingData", "validationData"):
        if key in details:
            details[key]["uri"] = details[key]["uri"].rsplit("/data/", 1)[-1]  # the name/version the server echoes
    return request.method, request.url.split("&sig=")[0], body


def test_the_job_carries_no_git_metadata_of_the_learners_repository(config, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q"], ["remote", "add", "origin", "https://github.com/learner/private-repo.git"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    monkeypatch.chdir(repo)
    fake = FakeAzure()
    _confirmed(config, fake)
    [job_put] = fake.transport.matching("PUT", r"/jobs/")
    properties = job_put.body["properties"]["properties"]
    assert properties == NO_GIT_METADATA
    assert "private-repo" not in json.dumps(job_put.body) and "learner" not in json.dumps(job_put.body)


def test_the_job_body_validates_against_the_spec_with_strict_enums(config):
    body = submit_finetuning(config).job_request.body
    validate_job_body(body)
    lowered = json.loads(json.dumps(body))
    lowered["properties"]["fineTuningDetails"]["taskType"] = "chatCompletion"  # what azure-ai-ml would send
    with pytest.raises(SchemaError, match="taskType"):
        validate_job_body(lowered)
    broken = json.loads(json.dumps(body))
    broken["properties"]["fineTuningDetails"]["hyperParameters"]["num_train_epochs"] = 2
    with pytest.raises(SchemaError, match="num_train_epochs"):
        validate_job_body(broken)


def test_each_job_registers_its_own_model_named_after_data_model_and_config(config):
    first = submit_finetuning(config)
    changed = submit_finetuning(config.update(learning_rate=1e-4))
    assert first.output_model == first.job_name != changed.output_model
    outputs = first.job_request.body["properties"]["outputs"]
    assert outputs["registered_model"]["assetName"] == first.job_name
    assert submit_finetuning(config).output_model == first.output_model  # same inputs, same name


def test_no_validation_file_means_automatic_split(config):
    submission = submit_finetuning(config.update(validation_file=None))
    assert "validationData" not in submission.job_request.body["properties"]["fineTuningDetails"]
    assert "splits the training data automatically" in submission.summary()


def test_invalid_data_is_refused_before_any_upload(tmp_path, config):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user"}]}\nnot json\n', encoding="utf-8")
    with pytest.raises(Exception, match="not ready for Azure fine-tuning"):
        submit_finetuning(config.update(train_file=str(bad)))


def test_asset_version_is_the_content_hash(tmp_path):
    a = DataAsset.of(chat_file(tmp_path / "a.jsonl", 3), "x")
    b = DataAsset.of(chat_file(tmp_path / "b.jsonl", 3), "x")
    c = DataAsset.of(chat_file(tmp_path / "c.jsonl", 4), "x")
    assert a.version == b.version != c.version and a.reference == f"azureml:x:{a.version}"


def test_confirm_without_settings_is_refused(config, monkeypatch):
    monkeypatch.setattr("phi3lab.azure.finetuning.load_settings", lambda: None)
    with pytest.raises(Exception, match="needs Azure settings"):
        submit_finetuning(config, confirm=True)


def test_confirmed_submission_uploads_then_puts_the_job(config):
    fake = FakeAzure()
    submission = _confirmed(config, fake)
    assert not submission.dry_run and submission.status == "NotStarted"
    t = fake.transport
    # get-or-create: a GET that misses, then the upload, then the asset PUT, for each file
    for asset in submission.assets:
        gets = t.matching("GET", rf"/data/{asset.name}/versions/{asset.version}\?")
        puts = t.matching("PUT", rf"/data/{asset.name}/versions/{asset.version}\?")
        assert gets and len(puts) == 1
        assert puts[0].body["properties"]["dataType"] == "uri_file"
        assert puts[0].body["properties"]["dataUri"].startswith(
            "azureml://datastores/workspaceblobstore/paths/LocalUpload/")
    uploads = t.matching("PUT", r"^https://stphi3lab\.blob\.core\.windows\.net/.*\.jsonl$")
    assert {u.path.rsplit("/", 1)[-1] for u in uploads} == {"train.jsonl", "validation.jsonl"}
    [train_blob] = {u.path for u in uploads if u.path.endswith("/train.jsonl")}
    assert fake.blobs[train_blob] == config.resolve(config.train_file).read_bytes()
    [job_put] = t.matching("PUT", r"/jobs/")
    assert job_put.api_version == JOB_API
    assert job_put.url.startswith(f"https://management.azure.com/subscriptions/{SUBSCRIPTION}/resourceGroups/"
                                  "rg-phi3lab/providers/Microsoft.MachineLearningServices/workspaces/proj-phi3lab/jobs/")
    details = job_put.body["properties"]["fineTuningDetails"]
    assert details["model"]["uri"] == "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/14"
    validate_job_body(job_put.body)
    assert all(r.headers.get("Authorization", "").startswith("Bearer ") for r in t.matching("PUT", r"/jobs/"))


def test_check_5s_choice_is_what_gets_submitted_without_a_second_lookup(config):
    choice = ModelChoice("Phi-3-mini-4k-instruct", "Phi-4-mini-instruct", "7", "eastus2", tuple(PHI4))
    fake = FakeAzure()
    submission = _confirmed(config, fake, model=choice)
    assert submission.choice is choice and not fake.transport.matching("GET", r"/registries/")
    [job_put] = fake.transport.matching("PUT", r"/jobs/")
    assert job_put.body["properties"]["fineTuningDetails"]["model"]["uri"].endswith("/Phi-4-mini-instruct/versions/7")


def test_second_submission_reuses_the_uploaded_assets(config):
    fake = FakeAzure()
    _confirmed(config, fake)
    fake.transport.requests.clear()
    _confirmed(config.update(epochs=3), fake)
    assert not fake.transport.matching("PUT", r"/data/") and not fake.transport.matching("PUT", r"blob\.core")


def test_a_foundry_project_is_refused_before_anything_is_uploaded(config):
    fake = FakeAzure(workspace_kind=None)
    with pytest.raises(ProjectTypeError, match="Foundry project.*hub-based project"):
        _confirmed(config, fake)
    assert not [r for r in fake.transport.requests if r.method == "PUT"]


def test_a_retired_model_with_no_successor_here_is_refused_before_anything_is_uploaded(config):
    fake = FakeAzure(region="westeurope", model_regions={"Phi-4-mini-instruct": PHI4})
    with pytest.raises(ModelNotOfferedError, match="retired on 2025-08-30.*not offered .* in westeurope"):
        _confirmed(config, fake)
    assert not [r for r in fake.transport.requests if r.method == "PUT"]


@pytest.mark.parametrize(("status", "says"), [
    (401, "az login"),
    (403, f"permission denied .*Azure AI Developer.*{AZURE_AI_DEVELOPER}"),
    (404, "not found .*Check the name"),
    (409, r"current state \(HTTP 409"),
    (429, r"throttled by Azure \(HTTP 429\)"),
    (500, r"internal error \(HTTP 500\).*run the cell again"),
])
def test_each_refusal_of_the_job_put_is_one_clear_sentence(config, status, says):
    fake = FakeAzure()
    fake.transport.route("PUT", r"/jobs/", lambda r, m: error(status, "Refused", "the service said no",
                                                              {"Retry-After": "0"}))
    with pytest.raises(Phi3LabError, match=says) as failure:
        _confirmed(config, fake)
    assert str(failure.value).startswith("submitting fine-tuning job phi3lab-ft-")
    assert SUBSCRIPTION not in str(failure.value) and failure.value.__cause__ is None


def _submitted(fake, name="phi3lab-ft-test"):
    fake.jobs[name] = {"id": f"/x/jobs/{name}", "name": name, "properties": {
        "jobType": "FineTuning", "status": "NotStarted", "outputs": {}, "properties": {}, "tags": {},
        "fineTuningDetails": {"modelProvider": "Custom", "taskType": "chatCompletion",
                              "model": {"jobInputType": "mlflow_model", "uri": "azureml://registries/azureml/models/"
                                        "Phi-3-mini-4k-instruct/versions/14"},
                              "trainingData": {"jobInputType": "uri_file", "uri": "azureml:t:1"}}}}
    return name


def _ml(fake):
    from phi3lab.azure.auth import ml_client

    return ml_client(SETTINGS, credential=fake.credential, transport=fake.transport)


def test_monitor_polls_with_backoff_until_completed():
    fake = FakeAzure(job_statuses=("NotStarted", "Queued", "Running", "Running", "Completed"))
    name, waits, lines = _submitted(fake), [], []
    now = [0.0]

    def sleep(seconds):
        waits.append(seconds)
        now[0] += seconds

    status = monitor_job(name, _ml(fake), backoff=Backoff(10, 2, 30), sleep=sleep, clock=lambda: now[0],
                         progress=lines.append)
    assert status == "Completed" and waits == [10, 20, 30, 30]
    gets = fake.transport.matching("GET", rf"/jobs/{name}\?")
    # each poll is a generic read, then the typed fine-tuning read
    assert [g.api_version for g in gets] == [GENERIC_JOB_API, FINE_TUNING_JOB_API] * 5
    assert FINE_TUNING_JOB_API == JOB_API
    described = describe_monitoring(name)  # what a dry run tells the learner names the same reads
    assert f"api-version {GENERIC_JOB_API};" in described and f"again with {FINE_TUNING_JOB_API}" in described
    assert [line.split(": ")[-1] for line in lines] == ["NotStarted", "Queued", "Running", "Completed"]


def test_monitor_surfaces_the_service_error_on_failure():
    fake = FakeAzure(job_statuses=("Running", "Failed"), job_error="Invalid chat format on line 3")
    name = _submitted(fake)
    with pytest.raises(JobFailedError, match="ended Failed: UserError: Invalid chat format on line 3"):
        monitor_job(name, _ml(fake), sleep=lambda s: None, progress=None)


def test_monitor_times_out_and_says_how_to_resume():
    fake = FakeAzure(job_statuses=("Running",))
    name, now = _submitted(fake), [0.0]

    def sleep(seconds):
        now[0] += seconds

    with pytest.raises(MonitorTimeoutError, match=rf"monitor_job\('{name}'\)"):
        monitor_job(name, _ml(fake), timeout_s=100, backoff=Backoff(15, 2, 60), sleep=sleep, clock=lambda: now[0],
                    progress=None)
    assert now[0] <= 100


def test_resume_monitoring_by_name_of_an_existing_job():
    fake = FakeAzure(job_statuses=("Completed",))
    assert monitor_job(_submitted(fake, "older-job"), _ml(fake), progress=None) == "Completed"


def test_monitor_unknown_job_is_a_clear_404():
    fake = FakeAzure()
    with pytest.raises(Exception, match="not found.*Check the name"):
        monitor_job("nope", _ml(fake), progress=None)


def test_401_gives_the_login_hint():
    fake = FakeAzure()
    fake.transport.route("GET", r"/jobs/", lambda r, m: error(401, "AuthenticationFailed", "token expired"))
    with pytest.raises(Exception, match="az login"):
        monitor_job(_submitted(fake), _ml(fake), progress=None)


def test_403_gives_the_rbac_hint():
    fake = FakeAzure()
    fake.transport.route("GET", r"/jobs/", lambda r, m: error(403, "AuthorizationFailed", "no access"))
    with pytest.raises(Exception, match=f"Azure AI Developer.*{AZURE_AI_DEVELOPER}"):
        monitor_job(_submitted(fake), _ml(fake), progress=None)


def test_429_is_retried_then_succeeds():
    fake = FakeAzure(job_statuses=("Completed",))
    name, calls = _submitted(fake), []
    answer = fake.job_get

    def throttled_once(request, match):
        calls.append(request)
        return error(429, "TooManyRequests", "slow down", {"Retry-After": "0"}) if len(calls) == 1 else answer(
            request, match)

    fake.transport.route("GET", r"/jobs/(?P<name>[^/?]+)\?", throttled_once)
    assert monitor_job(name, _ml(fake), progress=None) == "Completed"
    # throttled, retried by azure-core's RetryPolicy (Retry-After honoured), then the typed read
    assert len(calls) == 3 and calls[0].url == calls[1].url


def test_metrics_become_a_metrics_history():
    fake = FakeAzure()
    fake.metrics[("job1_train", "loss")] = [{"step": 1, "value": 2.0, "timestamp": 1}, {"step": 2, "value": 1.5,
                                                                                         "timestamp": 2}]
    fake.metrics[("job1_train", "eval_loss")] = [{"step": 2, "value": 1.7, "timestamp": 3}]
    history = fetch_metrics("job1", _ml(fake), credential=fake.credential, transport=fake.transport)
    assert history.source == "azure" and history.run == "job1"
    assert history.series("train") == ([1, 2], [2.0, 1.5]) and history.series("validation") == ([2], [1.7])
    [history_get] = fake.transport.matching("GET", r"metrics/get-history\?.*metric_key=eval_loss")
    assert history_get.url.startswith("https://eastus2.api.azureml.ms/mlflow/v1.0/subscriptions/")


def test_metrics_conversion_drops_duplicate_steps():
    history = metrics_history("j", {("parent", "train_loss"): [{"step": 3, "value": 1.0}],
                                    ("parent_child", "loss"): [{"step": 3, "value": 1.0}, {"step": 4, "value": 0.9}]})
    assert history.series("train") == ([3, 4], [1.0, 0.9])


def test_build_job_leaves_validation_out_when_none(config):
    job = build_job(config, "azureml:t:1", None, "azureml://registries/azureml/models/m/versions/1", "n")
    assert job.validation_data is None and job.task == "ChatCompletion"


def test_resubmitting_the_same_job_returns_the_existing_one(config):
    fake = FakeAzure(job_statuses=("Running",))
    first = _confirmed(config, fake)
    again = _confirmed(config, fake)
    assert again.job_name == first.job_name and again.status == "Running"
    assert len(fake.transport.matching("PUT", r"/jobs/")) == 1


def test_dry_run_with_settings_sends_nothing_to_azure(config):
    submission = submit_finetuning(config, SETTINGS)
    assert submission.dry_run and "/workspaces/proj-phi3lab/jobs/" in submission.job_request.url
    assert SUBSCRIPTION not in submission.summary() and "1111…" in submission.summary()
