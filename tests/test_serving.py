"""The local endpoint for real: a child process on loopback, queried over HTTP with the course's client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

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
    ({"messages": [{"role": "user", "content": "hi"}], "stream": True, "stream_options": {"include_usage": "often"}},
     400, "stream_options.include_usage"),
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
                                       log=CallLog(tmp_path / "calls.jsonl"), confirm=True, max_requests=len(PROMPTS))
    assert list(table.columns) == ["prompt", "local", "azure"] and list(table["prompt"]) == PROMPTS
    assert table["azure"][0] == f"Answer to: {PROMPTS[0]}" and all(table["local"])
    assert [r.errors for r in reports] == [0, 0]
    assert {r["kind"] for r in read_log(tmp_path / "calls.jsonl")} == {"local", "azure"}


# ----- hostile requests, in process: the app on a tiny random Phi-3 and the stand-in's tokenizer ----------------
SERVED = "tiny"
HELLO = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


class CountingTokenizer:
    """The real tokenizer, counting prompts it tokenises; ``delay`` makes each one slow, ``fail`` makes it raise."""

    def __init__(self, tokenizer, delay: float = 0.0, fail: Exception | None = None):
        self._tokenizer, self.delay, self.fail, self.prompts = tokenizer, delay, fail, 0

    def apply_chat_template(self, *args, **kwargs):
        self.prompts += 1
        time.sleep(self.delay)
        self.finished_at = time.perf_counter()
        if self.fail:
            raise self.fail
        return self._tokenizer.apply_chat_template(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


@pytest.fixture(scope="module")
def tiny():
    """(model, tokenizer): a one-layer random Phi-3 with a 256-token context, fast enough for property tests."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    from phi3lab.models import OFFLINE_MODEL, load_tokenizer

    tokenizer = load_tokenizer(OFFLINE_MODEL)
    config = Phi3Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    return Phi3ForCausalLM(config).eval(), tokenizer


def _app(tiny, **kwargs):
    from phi3lab.serving import build_app

    model, tokenizer = tiny
    return build_app(model, kwargs.pop("tokenizer", tokenizer), SERVED, **kwargs)


@pytest.fixture(scope="module")
def client(tiny):
    from fastapi.testclient import TestClient

    with TestClient(_app(tiny), raise_server_exceptions=False) as test_client:
        yield test_client


def _openai_error(reply, status: int, param: str | None = None) -> str:
    """The reply is ``status`` with OpenAI's error object (never plain text); returns its message."""
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json", reply.text
    error = reply.json()["error"]
    assert {"message", "type", "param", "code"} <= error.keys()
    if param is not None:
        assert error["param"] == param, error
    return error["message"]


def _post_raw(client, payload: dict):
    # json.dumps escapes a lone surrogate as \udc00, exactly as a hostile client would send it.
    return client.post("/v1/chat/completions", content=json.dumps(payload), headers={"content-type": "application/json"})


@pytest.mark.parametrize("payload, param, words", [
    ({"messages": [{"role": "user", "content": "\udc00"}]}, "messages.0.content", "lone UTF-16 surrogate"),
    ({"messages": [{"role": "user", "content": "ok \ud800 then"}]}, "messages.0.content", "character 3"),
    ({**HELLO, "model": "\udc00"}, "model", "lone UTF-16 surrogate"),
    ({**HELLO, "temperature": 1e-300}, "temperature", "use 0 for greedy decoding or at least 0.01"),
    ({**HELLO, "temperature": 5e-324}, "temperature", "at least 0.01"),
    ({**HELLO, "temperature": float("nan")}, "temperature", "temperature"),
    ({**HELLO, "top_p": float("inf")}, "top_p", "top_p"),
], ids=["lone-surrogate", "surrogate-inside-text", "surrogate-model-name", "temperature-1e-300",
        "temperature-denormal", "temperature-nan", "top_p-inf"])
def test_bad_text_and_degenerate_sampling_get_an_openai_400(client, payload, param, words):
    assert words in _openai_error(_post_raw(client, payload), 400, param)
    assert client.get("/health").json()["status"] == "ok"


def test_temperature_zero_and_the_smallest_allowed_one_both_answer(client):
    for temperature in (0.0, 0.01):
        reply = client.post("/v1/chat/completions", json={**HELLO, "temperature": temperature})
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] >= 1


def test_a_body_over_the_limit_is_refused_before_it_is_read(tiny):
    import asyncio

    app = _app(tiny, max_body_bytes=10_000)
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 20_000}]}).encode()

    async def chunks():  # no Content-Length: the guard must count as the body arrives
        for start in range(0, len(big), 4096):
            yield big[start:start + 4096]

    async def send_both():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            declared = await http.post("/v1/chat/completions", content=big, headers={"content-type": "application/json"})
            chunked = await http.post("/v1/chat/completions", content=chunks(),
                                      headers={"content-type": "application/json"})
            return declared, chunked

    declared, chunked = asyncio.run(send_both())
    for reply in (declared, chunked):
        assert "over the server's limit of 10,000 bytes" in _openai_error(reply, 413, "messages")


def test_a_prompt_over_the_character_cap_is_refused_before_tokenising(tiny):
    from fastapi.testclient import TestClient

    counting = CountingTokenizer(tiny[1])
    with TestClient(_app(tiny, tokenizer=counting)) as http:
        limit = http.app.state.generator.max_prompt_chars
        assert limit == 256 * 8
        reply = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "y" * (limit + 1)}]})
        assert "more than the model's context of 256 tokens can take" in _openai_error(reply, 400, "messages")
        assert counting.prompts == 0
        assert http.post("/v1/chat/completions", json=HELLO).status_code == 200 and counting.prompts == 1


def test_tokenising_runs_off_the_event_loop(tiny):
    import asyncio

    slow = CountingTokenizer(tiny[1], delay=1.5)
    app = _app(tiny, tokenizer=slow)

    async def health_while_tokenising():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            chat = asyncio.create_task(http.post("/v1/chat/completions", json=HELLO))
            await asyncio.sleep(0.2)  # the chat request is inside the tokenizer now
            health = await http.get("/health")
            return health, time.perf_counter(), await chat

    health, answered_at, chat = asyncio.run(health_while_tokenising())
    assert health.status_code == 200 and chat.status_code == 200
    assert answered_at < slow.finished_at, "/health waited for a tokenising request"


def test_a_crash_is_an_openai_shaped_500_with_the_secret_masked(tiny):
    from fastapi.testclient import TestClient

    failing = CountingTokenizer(tiny[1], fail=RuntimeError("boom api_key=a1b2c3d4e5f6a7b8c9d0"))
    with TestClient(_app(tiny, tokenizer=failing), raise_server_exceptions=False) as http:
        message = _openai_error(http.post("/v1/chat/completions", json=HELLO), 500)
    assert "RuntimeError: boom" in message and "a1b2c3d4e5f6" not in message


@pytest.mark.parametrize("method, path, status", [("GET", "/v1/nothing", 404), ("GET", "/v1/chat/completions", 405)])
def test_unknown_routes_and_methods_answer_in_openai_shape(client, method, path, status):
    _openai_error(client.request(method, path), status)


def test_with_an_api_key_every_route_but_health_needs_it(tiny):
    from fastapi.testclient import TestClient

    key = "k-7Qx2mB9vL4"
    with TestClient(_app(tiny, api_key=key)) as http:
        assert http.get("/health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
            message = _openai_error(http.get("/v1/models", headers=headers), 401)
            assert "Authorization: Bearer" in message and key not in message
            assert http.post("/v1/chat/completions", json=HELLO, headers=headers).status_code == 401
        for scheme in ("Bearer", "bearer"):
            assert http.get("/v1/models", headers={"Authorization": f"{scheme} {key}"}).status_code == 200
        assert http.post("/v1/chat/completions", json=HELLO, headers={"Authorization": f"Bearer {key}"}).status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_key(host):
    from phi3lab.serving import check_exposure

    check_exposure(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "my-laptop.local", ""])
def test_binding_beyond_loopback_without_a_key_is_refused(host, monkeypatch, capsys):
    from phi3lab.cli import main
    from phi3lab.serving import check_exposure

    with pytest.raises(ServerError, match="needs an API key"):
        check_exposure(host, None)
    with pytest.raises(ServerError, match="needs an API key"):
        LocalServer(adapter=None, host=host)
    check_exposure(host, "a-key")
    monkeypatch.delenv("PHI3LAB_API_KEY", raising=False)
    assert main(["serve", "--host", host, "--base"]) == 2  # refused before the model loads
    captured = capsys.readouterr()
    assert "PHI3LAB_API_KEY" in captured.err and "Traceback" not in captured.err and "serving" not in captured.out


def test_a_keyed_child_server_takes_its_key_from_the_environment_only(monkeypatch):
    monkeypatch.setenv("PHI3LAB_API_KEY", "left-over-key-in-the-notebook")
    assert "PHI3LAB_API_KEY" not in LocalServer(adapter=None).child_env()  # a leftover must not lock the server
    key = "k-child-5Tz8"
    with LocalServer(adapter=None, api_key=key) as keyed:
        assert keyed.child_env()["PHI3LAB_API_KEY"] == key
        assert key not in " ".join(keyed.command())  # command lines are readable by every user
        assert httpx.get(f"{keyed.url}/v1/models").status_code == 401
        assert httpx.get(f"{keyed.url}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200


# The request schema, attacked: whatever arrives, the answer is JSON in OpenAI's error shape or a completion.
_TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["\udc00", "a\ud800b", "\x00", "\U0001f642", " ", "user"]))
_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), _TEXT,
                    st.sampled_from([1e-300, 5e-324, -0.0, 1e308, 0.009999]))
_JSON = st.recursive(_SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                     max_leaves=6)
_MESSAGE = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["system", "user", "assistant"]), _JSON), "content": st.one_of(_TEXT, _JSON)},
    optional={"name": _JSON})
_REQUEST = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(_MESSAGE, max_size=3), _JSON), "max_tokens": st.one_of(st.integers(-2, 6), _SCALAR)},
    optional={"model": st.one_of(st.just(SERVED), _JSON),
              "temperature": st.one_of(st.floats(0, 2.5), _SCALAR), "top_p": st.one_of(st.floats(0, 1), _SCALAR),
              "n": _SCALAR, "stream": _SCALAR, "user": _JSON})
# Near-valid requests (well-formed messages ending with the user's turn) reach tokenising and generation.
_TURN = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": _TEXT})
_NEAR_VALID = st.fixed_dictionaries(
    {"messages": st.tuples(st.lists(_TURN, max_size=2), _TURN.map(lambda m: {**m, "role": "user"})).map(
        lambda parts: [*parts[0], parts[1]]), "max_tokens": st.integers(1, 4)},
    optional={"temperature": st.floats(0, 2), "top_p": st.floats(0, 1),
              "model": st.sampled_from([SERVED, "", "other"])})
_BODY = st.one_of(_NEAR_VALID.map(json.dumps), _REQUEST.map(json.dumps), _JSON.map(json.dumps),
                  st.binary(max_size=40))


@settings(max_examples=150, deadline=None)
@given(body=_BODY)
def test_property_never_a_5xx_and_never_a_plain_text_error(client, body):
    reply = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert reply.status_code < 500, reply.text
    if reply.headers["content-type"].startswith("text/event-stream"):  # a valid request with "stream": true
        assert reply.status_code == 200 and reply.text.endswith("data: [DONE]\n\n"), reply.text
        return
    assert reply.headers["content-type"] == "application/json", reply.text
    data = reply.json()
    event(f"status {reply.status_code}")
    if reply.status_code == 200:
        assert data["object"] == "chat.completion" and data["choices"][0]["message"]["role"] == "assistant"
    else:
        assert data["error"]["message"] and data["error"]["type"]
