"""The local endpoint for real: a child process on loopback, queried over HTTP with the course's client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from phi3lab.endpoints import LocalEndpoint, load_test, query_endpoint
from phi3lab.monitoring import CallLog, read_log
from phi3lab.runs import server_dir
from phi3lab.serving import ChatRequest, LocalServer, ServerError

PROMPTS = ["What is the capital of France?", "Name a colour."]


@pytest.fixture(scope="module", autouse=True)
def runs_root(tmp_path_factory):
    """Server records, logs and runs live in a temporary runs root, not the learner's runs/."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("runs")
        patch.setenv("PHI3LAB_RUNS", str(folder))
        yield folder


@pytest.fixture(scope="module")
def server(runs_root):
    with LocalServer(adapter=None) as running:
        yield running
    assert not running.running


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    return False


def test_health_and_models(server):
    health = server.health()
    assert health["status"] == "ok" and health["model"] == "phi3-tiny-offline" and health["adapter"] is None
    models = httpx.get(f"{server.url}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["phi3-tiny-offline"]
    assert server.record_path == server_dir() / f"server-{server.port}.json" and server.record_path.is_file()


def test_chat_completion_follows_the_openai_schema(server):
    reply = httpx.post(f"{server.url}/v1/chat/completions", timeout=120, json={
        "model": "phi3-tiny-offline", "max_tokens": 6,
        "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": PROMPTS[0]}]})
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] in {"stop", "length"}
    usage = body["usage"]
    assert 0 < usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_query_endpoint_reports_latency_tokens_and_logs(server, tmp_path):
    log = CallLog(tmp_path / "calls.jsonl")
    report = query_endpoint(LocalEndpoint(server.url), PROMPTS, max_tokens=6, log=log)
    assert report.errors == 0 and len(report.results) == 2
    assert all(r.response and 0 < r.completion_tokens <= 6 and r.prompt_tokens > 5 for r in report.results)
    assert 0 < report.p50 <= report.p95
    assert list(report.table().columns[:2]) == ["prompt", "response"]
    records = read_log(tmp_path / "calls.jsonl")
    assert [r["prompt"] for r in records] == PROMPTS
    assert all(r["status"] == 200 and r["kind"] == "local" and r["latency_s"] > 0 for r in records)


@pytest.mark.parametrize("body, status, names", [
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages.0.role"),
    ({"messages": [{"role": "user"}]}, 400, "messages.0.content"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": 9}, 400, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "stream": True}, 400, "stream"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, 400, "last message must have role 'user'"),
    ({"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o"}, 404, "not served here"),
    ({"messages": [{"role": "user", "content": "word " * 9000}], "max_tokens": 8}, 400, "context"),
    ("this is not json", 400, "body"),
])
def test_malformed_requests_get_a_clear_4xx_and_the_server_keeps_serving(server, body, status, names):
    payload = {"content": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, str) \
        else {"json": body}
    reply = httpx.post(f"{server.url}/v1/chat/completions", timeout=60, **payload)
    assert reply.status_code == status
    assert names in reply.json()["error"]["message"]
    assert server.health()["status"] == "ok"


def test_bounded_load_is_batched_without_errors(server, tmp_path):
    before = server.health()
    report = load_test(LocalEndpoint(server.url), PROMPTS, concurrency=4, requests=8, max_tokens=4,
                       log=CallLog(tmp_path / "load.jsonl"))
    after = server.health()
    summary = report.summary()
    assert summary["errors"] == 0 and summary["requests"] == 8 and summary["requests_per_s"] > 0
    assert summary["tokens_per_s"] > 0 and summary["p50_s"] <= summary["p95_s"]
    served = after["requests_served"] - before["requests_served"]
    batches = after["batches_run"] - before["batches_run"]
    assert served == 8 and batches < served  # concurrent requests shared forward passes
    assert len(read_log(tmp_path / "load.jsonl")) == 8


def test_unreachable_endpoint_is_an_error_result_not_an_exception(tmp_path):
    report = query_endpoint(LocalEndpoint("http://127.0.0.1:9", timeout=2), ["hi"], log=CallLog(tmp_path / "l.jsonl"))
    assert report.errors == 1 and report.results[0].status == "ConnectError" and report.p50 is None


def test_request_model_defaults_are_greedy_and_bounded():
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], unknown_field=1)
    assert request.temperature == 0.0 and request.max_tokens == 128 and request.n == 1


def test_stop_is_idempotent_and_leaves_no_process():
    server = LocalServer(adapter=None).start()
    pid = server.process.pid
    server.stop()
    server.stop()
    assert _wait_gone(pid, 5) and not (server_dir() / f"server-{server.port}.json").exists()


def test_server_exits_when_its_parent_is_killed(tmp_path):
    # A kernel restart kills the kernel without running atexit; the server must notice and leave.
    script = ("import sys, time\nfrom phi3lab.serving import LocalServer\n"
              "s = LocalServer(adapter=None).start()\nprint(s.process.pid, flush=True)\ntime.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PHI3LAB_RUNS": str(tmp_path)})
    try:
        server_pid = int(parent.stdout.readline())
        assert _alive(server_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _wait_gone(server_pid, 20), "the server outlived its parent"
    finally:
        parent.kill()


def test_the_child_is_started_with_the_phi3lab_serve_command_line(tmp_path):
    from phi3lab.cli import build_parser

    command = LocalServer(adapter=tmp_path, merge=True, port=8123).command()
    assert command[1:3] == ["-m", "phi3lab.serving"]  # what cleanup looks for in a recorded pid's command line
    args = build_parser().parse_args(["serve", *command[3:]])
    assert (args.port, args.adapter, args.merge, args.parent_pid, args.base) == (8123, str(tmp_path), True,
                                                                                 os.getpid(), False)
    base = build_parser().parse_args(["serve", *LocalServer(adapter=None, port=1).command()[3:]])
    assert base.base and base.adapter is None  # the child never picks an adapter on its own
    usage = subprocess.run([sys.executable, "-m", "phi3lab.serving", "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: phi3lab serve")


def _finished_run(root, name: str, finished_at: float):
    adapter = root / name / "adapter"
    adapter.mkdir(parents=True)
    for path in (adapter / "adapter_config.json", adapter / "config.yaml", root / name / "config.yaml"):
        path.write_text("{}\n")
        os.utime(path, (finished_at, finished_at))
    return adapter


def test_the_default_adapter_is_the_latest_finished_run_under_the_runs_root_of_the_moment(tmp_path, monkeypatch):
    from phi3lab.serving import default_adapter

    monkeypatch.setenv("PHI3LAB_RUNS", str(tmp_path))  # set after import: read at call time
    assert default_adapter() is None and LocalServer().adapter is None
    _finished_run(tmp_path, "older", 1_000_000)
    newer = _finished_run(tmp_path, "newer", 2_000_000)
    assert default_adapter() == newer and LocalServer().adapter == newer


def test_a_server_that_cannot_start_reports_its_log(tmp_path):
    with pytest.raises(ServerError, match="exited during start-up"):
        LocalServer(adapter=tmp_path / "no-adapter-here", startup_timeout=120).start()


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    """A real LoRA adapter folder in the layout training writes (adapter, tokenizer, config.yaml).

    Built directly with peft so the test never depends on notebook 02 having run first.
    """
    from peft import LoraConfig, get_peft_model

    from phi3lab.config import TrainConfig
    from phi3lab.models import OFFLINE_MODEL, load_model, load_tokenizer
    from phi3lab.runs import CONFIG_NAME

    folder = tmp_path_factory.mktemp("adapter")
    model = get_peft_model(load_model(OFFLINE_MODEL, device="cpu"),
                           LoraConfig(r=4, target_modules=["qkv_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(folder)
    load_tokenizer(OFFLINE_MODEL).save_pretrained(folder)
    TrainConfig(model=OFFLINE_MODEL).save(folder / CONFIG_NAME)
    return folder


def test_serves_a_trained_adapter(adapter_dir):
    with LocalServer(adapter=adapter_dir) as server:
        assert server.health()["adapter"] == str(adapter_dir)
        report = query_endpoint(LocalEndpoint(server.url), PROMPTS[:1], max_tokens=6, log=False)
        assert report.errors == 0 and report.results[0].response


def test_one_client_compares_the_local_and_an_azure_endpoint_side_by_side(server, tmp_path):
    from test_azure_deployment import KEY, SCORING, FakeFoundry

    from phi3lab.endpoints import AzureEndpoint, compare_endpoints

    azure = AzureEndpoint(SCORING, KEY, name="azure", transport=FakeFoundry().transport)
    table, reports = compare_endpoints([LocalEndpoint(server.url), azure], PROMPTS, max_tokens=4,
                                       log=CallLog(tmp_path / "calls.jsonl"))
    assert list(table.columns) == ["prompt", "local", "azure"] and list(table["prompt"]) == PROMPTS
    assert table["azure"][0] == f"Answer to: {PROMPTS[0]}" and all(table["local"])
    assert [r.errors for r in reports] == [0, 0]
    assert {r["kind"] for r in read_log(tmp_path / "calls.jsonl")} == {"local", "azure"}
