"""Streaming (``stream: true``) from both backends, and the ONNX Runtime GenAI backend behind the same routes.

In-process apps over a tiny random Phi-3 with a random adapter (PyTorch) and its fp32 export (ONNX); one real
child server serves the export to the ``openai`` client.
"""

from __future__ import annotations

import asyncio
import json
import shutil

import httpx
import pytest
from export_fixtures import make_exportable_phi3, make_finished_run

from phi3lab import models
from phi3lab.cli import main as cli
from phi3lab.export import export_onnx
from phi3lab.serving import LocalServer, build_app
from phi3lab.serving.onnx_backend import OnnxBatchingGenerator, load_onnx_for_serving
from phi3lab.serving.streaming import TextDeltas

MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "My controller will not pair."}]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        base = make_exportable_phi3(tmp_path_factory.mktemp("tiny-base"))
        root = tmp_path_factory.mktemp("runs")
        patch.setenv("PHI3LAB_RUNS", str(root))
        patch.setattr(models, "model_source", lambda name: str(base))
        yield make_finished_run(root, base)


@pytest.fixture(scope="module")
def export(run):
    return export_onnx("tiny", precision="fp32")


@pytest.fixture(scope="module", params=["pytorch", "onnx"])
def app(request, run, export):
    if request.param == "onnx":
        model, name, info = load_onnx_for_serving(export.folder)
        return build_app(model, model.tokenizer, name, info, generator=OnnxBatchingGenerator(model))
    from phi3lab.training.artifacts import load_trained

    model, tokenizer = load_trained(run / "adapter")
    return build_app(model, tokenizer, "tiny-adapter", {"backend": "pytorch"})


def _data(stream_text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in stream_text.split("\n\n") if line.startswith("data: ")]


def _post_all(app, bodies: list[dict]) -> list[httpx.Response]:
    """The requests sent at once (they join one batch), answered in order."""
    async def send():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as http:
            return await asyncio.gather(*(http.post("/v1/chat/completions", json=b) for b in bodies))

    return asyncio.run(send())


def test_a_streamed_reply_is_the_non_streamed_reply_in_openai_chunks(app):
    body = {"messages": MESSAGES, "max_tokens": 10}
    plain, streamed = _post_all(app, [body, {**body, "stream": True, "stream_options": {"include_usage": True}}])
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    data = _data(streamed.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    *content, last, usage = chunks
    expected = plain.json()
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in content)
    assert text == expected["choices"][0]["message"]["content"] and len(content) > 2  # arrived in pieces
    assert last["choices"][0]["finish_reason"] == expected["choices"][0]["finish_reason"]
    assert usage["choices"] == [] and usage["usage"] == expected["usage"]


def test_streamed_and_plain_requests_share_batches(app):
    generator = app.state.generator
    before = (generator.requests_served, generator.batches_run)
    bodies = [{"messages": MESSAGES, "max_tokens": 4 + i, "stream": i % 2 == 0} for i in range(4)]
    replies = _post_all(app, bodies)
    assert [r.status_code for r in replies] == [200] * 4
    assert all(_data(r.text)[-1] == "[DONE]" for r in replies[::2])
    served, batches = generator.requests_served - before[0], generator.batches_run - before[1]
    assert served == 4 and batches < served


def test_a_generation_failure_mid_stream_is_an_error_event(app, monkeypatch):
    def broken(batch):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(app.state.generator, "_generate", broken)
    reply, = _post_all(app, [{"messages": MESSAGES, "max_tokens": 4, "stream": True}])
    data = _data(reply.text)
    assert data[-1] == "[DONE]" and json.loads(data[-2])["error"]["message"] == \
        "generation failed: RuntimeError: out of memory"


def test_text_deltas_never_send_half_a_character(export):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(export.folder)
    text = " Pair it again 🎮 — then restart.  "
    deltas = TextDeltas(tokenizer, skip_ids=[2])
    pieces = [deltas.add(t) for t in [*tokenizer(text, add_special_tokens=False)["input_ids"], 2]]
    assert all("\ufffd" not in p for p in pieces) and "".join(pieces) == text.strip()
    assert deltas.rest(text.strip()) == ""


def test_the_openai_client_streams_from_a_served_export(export):
    openai = pytest.importorskip("openai")
    with LocalServer(onnx=export.folder) as server:
        health = server.health()
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        stream = client.chat.completions.create(model=health["model"], messages=MESSAGES, max_tokens=8, stream=True)
        pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
        plain = client.chat.completions.create(model=health["model"], messages=MESSAGES, max_tokens=8)
    assert health["backend"] == "onnxruntime-genai" and health["precision"] == "fp32"
    assert "".join(pieces) == plain.choices[0].message.content


def test_serving_an_export_without_its_tokenizer(export, tmp_path, capsys):
    broken = tmp_path / "export"
    shutil.copytree(export.folder, broken)
    (broken / "tokenizer_config.json").unlink()
    assert cli(["serve", "--onnx", str(broken)]) == 2
    assert "not a complete ONNX export: tokenizer_config.json missing" in capsys.readouterr().err
