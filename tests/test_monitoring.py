"""The call log: one JSON line per call, no secrets, safe under threads; summaries and the plot."""

from __future__ import annotations

import concurrent.futures
import json

from matplotlib.figure import Figure

from phi3lab.endpoints import AzureEndpoint, CallResult, LocalEndpoint
from phi3lab.monitoring import CallLog, default_log, percentile, read_log, summarize
from phi3lab.plots import plot_endpoint_calls

KEY = "0123456789abcdef0123456789abcdef"


def _result(i: int, status=200) -> CallResult:
    return CallResult(f"prompt {i}", "answer" if status == 200 else None, 0.1 * (i + 1), status,
                      10, 5 if status == 200 else None, None if status == 200 else f"throttled, api-key={KEY}")


def test_records_have_the_fields_and_never_the_key(tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    azure = AzureEndpoint("https://x.eastus2.models.ai.azure.com", KEY, name="azure")
    log.record(azure, _result(0))
    log.record(azure, _result(1, status=429))
    text = (tmp_path / "calls.jsonl").read_text()
    assert KEY not in text
    first = json.loads(text.splitlines()[0])
    assert set(first) == {"time", "endpoint", "kind", "prompt", "latency_s", "prompt_tokens", "completion_tokens",
                          "status", "error"}
    assert (first["kind"], first["status"], first["completion_tokens"]) == ("azure", 200, 5)


def test_the_course_log_follows_the_runs_root_set_after_import(tmp_path, monkeypatch):
    monkeypatch.setenv("PHI3LAB_RUNS", str(tmp_path / "a"))
    default_log().record(LocalEndpoint("http://h"), _result(0))
    monkeypatch.setenv("PHI3LAB_RUNS", str(tmp_path / "b"))
    default_log().record(LocalEndpoint("http://h"), _result(1))
    assert (tmp_path / "a" / "monitoring" / "endpoint_calls.jsonl").is_file()
    assert [r["prompt"] for r in read_log()] == ["prompt 1"]  # read_log() reads the log of the current root


def test_prompts_and_errors_are_masked(tmp_path):
    log = CallLog(None)
    entry = log.record(LocalEndpoint("http://h"), CallResult(f"my key is api_key={KEY}", None, 0.1, 401,
                                                             error=f"Authorization: Bearer {KEY}"))
    assert KEY not in entry["prompt"] and KEY not in entry["error"]


def test_concurrent_writers_never_interleave_lines(tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    local = LocalEndpoint("http://127.0.0.1:1")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: log.record(local, _result(i)), range(200)))
    assert len(read_log(tmp_path / "calls.jsonl")) == 200


def test_read_log_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "calls.jsonl"
    CallLog(path).record(LocalEndpoint("http://h"), _result(0))
    with path.open("a") as handle:
        handle.write('{"time": "2026-01-01T00:00:00+00:00", "endpo')
    assert len(read_log(path)) == 1
    assert read_log(tmp_path / "absent.jsonl") == []


def test_summary_per_endpoint(tmp_path):
    log = CallLog(None)
    for i in range(4):
        log.record(LocalEndpoint("http://h"), _result(i, 200 if i < 3 else 500))
    for entry in log.records:
        entry["_time"] = entry["time"]
    (row,) = summarize(log.records)
    assert (row["calls"], row["errors"], row["error_rate"]) == (4, 1, 0.25)
    assert row["p50_s"] == 0.2 and row["completion_tokens"] == 15


def test_percentile_matches_linear_interpolation():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert round(percentile(list(range(1, 101)), 95), 2) == 95.05
    assert percentile([], 50) is None


def test_plot_has_latency_and_volume_panels(tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    for i in range(6):
        log.record(LocalEndpoint("http://h"), _result(i, 200 if i % 3 else 429))
    fig = plot_endpoint_calls(read_log(tmp_path / "calls.jsonl"))
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert fig.axes[0].get_ylabel() == "latency (s)" and fig.axes[1].get_ylabel() == "calls per minute"
    empty = plot_endpoint_calls([])
    assert "no calls logged yet" in empty.axes[0].texts[0].get_text()
