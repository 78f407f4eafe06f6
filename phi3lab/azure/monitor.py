"""Watch a fine-tuning job until it ends, and fetch its metrics as a MetricsHistory.

Polling never runs unbounded: each wait grows exponentially up to a ceiling, and a timeout ends
the watch (the job keeps running in Azure; ``monitor_job(name)`` picks it up again later).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import Phi3LabError
from ..history import MetricsHistory
from ..secrets import mask_secrets
from .service import azure_errors, service_message

TERMINAL = {"Completed", "Failed", "Canceled", "NotResponding"}
FAILED = {"Failed", "Canceled", "NotResponding"}


class JobFailedError(Phi3LabError):
    """The job ended Failed or Canceled; the message carries the service's own reason."""


class MonitorTimeoutError(Phi3LabError):
    """The watch ran out of time; the job itself is untouched."""


@dataclass(frozen=True)
class Backoff:
    """Waits of ``first``, ``first·factor``, … seconds, never more than ``ceiling``."""

    first: float = 15.0
    factor: float = 2.0
    ceiling: float = 300.0

    def delay(self, attempt: int) -> float:
        return min(self.ceiling, self.first * self.factor ** attempt)


def monitor_job(job_name: str, ml=None, *, timeout_s: float = 6 * 3600, backoff: Backoff = Backoff(),
                progress: Callable[[str], None] | None = print, sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic, settings=None, credential=None, transport=None) -> str:
    """Poll ``job_name`` until Completed; return "Completed".

    Raises JobFailedError (with the service's error message) on Failed/Canceled and
    MonitorTimeoutError after ``timeout_s``. ``ml`` defaults to a client for the course's settings.
    """
    if ml is None:
        from .auth import ml_client

        ml = ml_client(settings, credential=credential, transport=transport)
    start, attempt, last = clock(), 0, None
    while True:
        with azure_errors(f"reading job {job_name}"):
            status = status_text(ml.jobs.get(job_name).status)
        elapsed = clock() - start
        if progress and status != last:
            progress(f"[{_clock(elapsed)}] {job_name}: {status}")
        last = status
        if status == "Completed":
            return status
        if status in FAILED:
            raise JobFailedError(f"job {job_name} ended {status}: {job_error(ml, job_name)}. Fix the cause, then "
                                 f"submit again (a new job name is derived from changed data or settings)")
        wait = backoff.delay(attempt)
        if elapsed + wait > timeout_s:
            raise MonitorTimeoutError(f"job {job_name} is still {status} after {_clock(elapsed)}; it keeps running "
                                      f"in Azure. Resume watching with monitor_job({job_name!r}) or "
                                      f"`phi3lab azure monitor {job_name}`")
        sleep(wait)
        attempt += 1


# The reads behind ml.jobs.get in the pinned azure-ai-ml 1.35.2: every job through the generic API, a
# fine-tuning job then through the typed one (tests/test_azure_finetuning.py checks them on the wire).
GENERIC_JOB_API, FINE_TUNING_JOB_API = "2024-01-01-preview", "2024-10-01-preview"


def describe_monitoring(job_name: str, timeout_s: float = 6 * 3600, backoff: Backoff = Backoff()) -> str:
    """What ``monitor_job`` would do for ``job_name``: the reads, the waits, the stopping rules."""
    waits, total = [], 0.0
    while total + backoff.delay(len(waits)) <= timeout_s and len(waits) < 200:
        total += backoff.delay(len(waits))
        waits.append(backoff.delay(len(waits)))
    shown = ", ".join(f"{w:g}" for w in waits[:7])
    return (f"monitor_job({job_name!r}) would:\n"
            f"  read GET .../jobs/{job_name} (api-version {GENERIC_JOB_API}; a fine-tuning job is read again with "
            f"{FINE_TUNING_JOB_API}, as azure-ai-ml does) and print each new status\n"
            f"  wait {shown}, ... seconds between reads (doubling, at most {backoff.ceiling:g} s): "
            f"{len(waits) + 1} reads at most\n"
            f"  stop on Completed; on Failed or Canceled raise with the service's error message\n"
            f"  give up watching after {_clock(timeout_s)} (the job keeps running; call monitor_job again to resume)")


def watch(submission, **kwargs) -> str | None:
    """Monitor a real submission; for a dry run, describe what monitoring would do."""
    if submission.dry_run:
        print(describe_monitoring(submission.job_name))
        return None
    return monitor_job(submission.job_name, **kwargs)


def status_text(status) -> str:
    """The service's status string (the SDK hands back a str enum such as JobStatus.COMPLETED)."""
    return str(getattr(status, "value", status))


def job_error(ml, job_name: str) -> str:
    """The service's error message for a failed job (run history), or a pointer to the portal."""
    try:
        details = ml.jobs._runs_operations.get_run_details(job_name)  # pinned azure-ai-ml 1.35.2
        error = getattr(getattr(details, "error", None), "error", None)
        if error is not None and getattr(error, "message", None):
            return mask_secrets(f"{error.code or 'Error'}: {error.message}")
    except Exception as exc:  # the reason is a courtesy; never hide the failure behind a second one
        return f"no error details available ({service_message(exc)}); see the job in the portal"
    return "no error details from the service; open the job in the portal (Fine-tuning tab) for its logs"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# ----- metrics ------------------------------------------------------------------------------
# Names the fine-tuning pipeline logs through MLflow (Hugging Face Trainer conventions).
TRAIN_KEYS = ("loss", "train_loss")
VALIDATION_KEYS = ("eval_loss", "validation_loss")


def fetch_metrics(job_name: str, ml=None, *, settings=None, credential=None, transport=None) -> MetricsHistory:
    """Training and validation loss of a job and its child runs, as ``MetricsHistory(source="azure")``.

    Reads the workspace's MLflow tracking server over its REST API (``/api/2.0/mlflow``) with the
    same credential and transport as the SDK: the ``mlflow`` + ``azureml-mlflow`` packages would
    add hundreds of MB to the course for three GET/POST calls.
    """
    from .auth import ml_client

    ml = ml or ml_client(settings, credential=credential, transport=transport)
    client = _mlflow_client(ml, credential or ml._credential, transport)
    with azure_errors(f"reading metrics of job {job_name}"):
        run = client.get("runs/get", run_id=job_name)["run"]
        experiment = run["info"]["experiment_id"]
        children = client.post("runs/search", {"experiment_ids": [experiment], "max_results": 100,
                                               "filter": f"tags.mlflow.parentRunId = '{job_name}'"}).get("runs", [])
        histories = {}
        for each in [run, *children]:
            run_id = each["info"]["run_id"]
            for metric in each.get("data", {}).get("metrics", []):
                if metric["key"] in TRAIN_KEYS + VALIDATION_KEYS:
                    histories[(run_id, metric["key"])] = client.get(
                        "metrics/get-history", run_id=run_id, metric_key=metric["key"]).get("metrics", [])
    return metrics_history(job_name, histories)


def metrics_history(job_name: str, histories: dict[tuple[str, str], list[dict]]) -> MetricsHistory:
    """Convert MLflow metric histories ``{(run_id, key): [{"step", "value", ...}]}`` to the course format.

    ``loss``/``train_loss`` become the train split, ``eval_loss``/``validation_loss`` the
    validation split; duplicates of the same step (a parent repeating a child's value) are dropped.
    """
    history = MetricsHistory(source="azure", run=job_name)
    seen = set()
    for (_, key), points in sorted(histories.items()):
        split = "train" if key in TRAIN_KEYS else "validation"
        for point in sorted(points, key=lambda p: (int(p.get("step", 0)), p.get("timestamp", 0))):
            step = int(point.get("step", 0))
            if (split, step) in seen:
                continue
            seen.add((split, step))
            history.add(step, split, float(point["value"]), metric_key=key)
    return history


class _MLflowREST:
    def __init__(self, pipeline_client, base: str):
        self._client, self._base = pipeline_client, base.rstrip("/") + "/api/2.0/mlflow/"

    def _send(self, request) -> dict:
        from azure.core.exceptions import map_error

        response = self._client.send_request(request)
        if response.status_code >= 400:
            from azure.core.exceptions import HttpResponseError

            map_error(response.status_code, response, {})
            raise HttpResponseError(response=response)
        return response.json() if response.content else {}

    def get(self, path: str, **params) -> dict:
        from azure.core.rest import HttpRequest

        return self._send(HttpRequest("GET", self._base + path, params=params))

    def post(self, path: str, body: dict) -> dict:
        from azure.core.rest import HttpRequest

        return self._send(HttpRequest("POST", self._base + path, json=body))


def _mlflow_client(ml, credential, transport) -> _MLflowREST:
    from azure.core import PipelineClient
    from azure.core.pipeline.policies import BearerTokenCredentialPolicy, RetryPolicy

    with azure_errors("reading the workspace"):
        workspace = ml.workspaces.get(ml.workspace_name)
    tracking = workspace.mlflow_tracking_uri  # azureml://<region>.api.azureml.ms/mlflow/v1.0/subscriptions/...
    base = "https://" + tracking.split("://", 1)[1]
    policies = [RetryPolicy(), BearerTokenCredentialPolicy(credential, "https://management.azure.com/.default")]
    kwargs = {"transport": transport} if transport is not None else {}
    return _MLflowREST(PipelineClient(base, policies=policies, **kwargs), base)
