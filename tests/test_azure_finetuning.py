"""Serverless fine-tuning through the real azure-ai-ml client against a fake Azure (HTTP boundary)."""

import json

import pytest
from azure_fakes import SETTINGS, SUBSCRIPTION, FakeAzure, error

from phi3lab.azure import finetuning
from phi3lab.azure.finetuning import DataAsset, build_job, hyperparameters, submit_finetuning
from phi3lab.azure.monitor import (
    Backoff,
    JobFailedError,
    MonitorTimeoutError,
    fetch_metrics,
    metrics_history,
    monitor_job,
)
from phi3lab.azure.roles import AZURE_AI_DEVELOPER
from phi3lab.azure.schemas import SchemaError, validate_job_body
from phi3lab.config import TrainConfig

JOB_API = "2024-10-01-preview"


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


@pytest.fixture
def blob_transport(monkeypatch):
    """azure-ai-ml builds its BlobServiceClient internally; hand it the fake's transport too."""
    from azure.ai.ml._artifacts import _blob_storage_helper
    from azure.storage.blob import BlobServiceClient

    holder = {}

    def service_client(*args, **kwargs):
        return BlobServiceClient(*args, transport=holder["transport"], **kwargs)

    monkeypatch.setattr(_blob_storage_helper, "BlobServiceClient", service_client)
    return holder


def test_hyperparameters_are_strings_from_the_config(config):
    assert hyperparameters(config) == {"per_device_train_batch_size": "8", "learning_rate": "3e-05",
                                       "num_train_epochs": "2"}


def test_sdk_helper_without_validation_data_still_raises_unboundlocalerror():
    # The pitfall this module avoids by building CustomModelFineTuningJob directly.
    from azure.ai.ml.finetuning import FineTuningTaskType, create_finetuning_job

    with pytest.raises(UnboundLocalError):
        create_finetuning_job(task=FineTuningTaskType.CHAT_COMPLETION, model="azureml://registries/azureml/models/m/"
                              "versions/1", training_data="azureml:t:1", output_model_name_prefix="p")


def test_dry_run_shows_the_exact_put_and_sends_nothing(config):
    submission = submit_finetuning(config, price_per_1k_tokens=0.5)
    assert submission.dry_run and len(submission.requests) == 1
    put = submission.job_request
    assert put.method == "PUT" and put.api_version == JOB_API
    assert put.path.endswith(f"/workspaces/your-ai-project/jobs/{submission.job_name}")
    details = put.body["properties"]["fineTuningDetails"]
    assert details["hyperParameters"] == {"per_device_train_batch_size": "8", "learning_rate": "3e-05",
                                          "num_train_epochs": "2"}
    assert details["taskType"] == "chatCompletion"  # what the SDK sends (see schemas.spec_task_type)
    assert details["validationData"]["uri"].endswith(f"/data/phi3lab-validation/versions/{submission.assets[1].version}")
    text = submission.summary()
    assert "DRY RUN" in text and "0000-0000" not in text and submission.cost.total > 0
    assert "Authorization" not in text


def test_no_validation_file_means_automatic_split(config):
    submission = submit_finetuning(config.update(validation_file=None))
    assert "validationData" not in submission.job_request.body["properties"]["fineTuningDetails"]
    assert "splits the training data automatically" in submission.summary()


def test_job_body_matches_the_rest_spec_schema(config):
    body = submit_finetuning(config).job_request.body
    validate_job_body(body)
    with pytest.raises(SchemaError, match="taskType"):  # the spec's enum is case-sensitive: ChatCompletion
        validate_job_body(body, normalize_task=False)
    broken = json.loads(json.dumps(body))
    broken["properties"]["fineTuningDetails"]["hyperParameters"]["num_train_epochs"] = 2
    with pytest.raises(SchemaError, match="num_train_epochs"):
        validate_job_body(broken)


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
    monkeypatch.setattr(finetuning, "load_settings", lambda: None)
    with pytest.raises(Exception, match="needs Azure settings"):
        submit_finetuning(config, confirm=True)


def test_confirmed_submission_uploads_then_puts_the_job(config, blob_transport):
    fake = FakeAzure()
    blob_transport["transport"] = fake.transport
    submission = submit_finetuning(config, SETTINGS, confirm=True, credential=fake.credential,
                                   transport=fake.transport)
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
    uploads = t.matching("PUT", r"^https://stphi3lab\.blob\.core\.windows\.net/.*\.jsonl")
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


def test_second_submission_reuses_the_uploaded_assets(config, blob_transport):
    fake = FakeAzure()
    blob_transport["transport"] = fake.transport
    kwargs = {"credential": fake.credential, "transport": fake.transport}
    submit_finetuning(config, SETTINGS, confirm=True, job_name="first", **kwargs)
    fake.transport.requests.clear()
    submit_finetuning(config, SETTINGS, confirm=True, job_name="second", **kwargs)
    assert not fake.transport.matching("PUT", r"/data/") and not fake.transport.matching("PUT", r"blob\.core")


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
    assert [g.api_version for g in gets] == ["2024-01-01-preview", JOB_API] * 5
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
    assert job.validation_data is None


def test_resubmitting_the_same_job_returns_the_existing_one(config, blob_transport):
    fake = FakeAzure(job_statuses=("Running",))
    blob_transport["transport"] = fake.transport
    kwargs = {"credential": fake.credential, "transport": fake.transport}
    first = submit_finetuning(config, SETTINGS, confirm=True, **kwargs)
    again = submit_finetuning(config, SETTINGS, confirm=True, **kwargs)
    assert again.job_name == first.job_name and again.status == "Running"
    assert len(fake.transport.matching("PUT", r"/jobs/")) == 1


def test_dry_run_with_settings_sends_nothing_to_azure(config):
    fake = FakeAzure()
    submission = submit_finetuning(config, SETTINGS, credential=fake.credential, transport=fake.transport)
    assert submission.dry_run and fake.transport.requests == []
    assert "/workspaces/proj-phi3lab/jobs/" in submission.job_request.url
    assert SUBSCRIPTION not in submission.summary() and "1111…" in submission.summary()
