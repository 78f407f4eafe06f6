"""ONNX export of a trained run: what the folder holds, that it answers like PyTorch, reuse, and bad input.

A 2-layer random Phi-3 with a random LoRA adapter stands in for a trained run, so each export takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from export_fixtures import make_exportable_phi3, make_finished_run

from phi3lab import models
from phi3lab.cli import main as cli
from phi3lab.export import (
    ADAPTER_FILE,
    MANIFEST,
    ExportError,
    OnnxChatModel,
    export_onnx,
    load_export,
)
from phi3lab.runs import RunNotFoundError

CONVERSATIONS = [
    [{"role": "user", "content": "My controller will not pair."}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is LoRA in one sentence?"}],
    [{"role": "user", "content": "Hi"}],
]
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return make_exportable_phi3(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_base):
    """A finished run 'tiny' under a temporary runs root, trained (randomly) on the tiny base."""
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("runs")
        patch.setenv("PHI3LAB_RUNS", str(root))
        patch.setattr(models, "model_source", lambda name: str(tiny_base))
        yield make_finished_run(root, tiny_base)


@pytest.fixture(scope="module")
def fp32_export(run):
    return export_onnx("tiny", precision="fp32")


@pytest.fixture(scope="module")
def pytorch_model(run):
    from phi3lab.training.artifacts import load_trained

    return load_trained(run / "adapter")


def _pytorch_tokens(model, stop_ids: list[int], prompt: list[int], adapter: bool = True) -> list[int]:
    import contextlib

    import torch

    ids = torch.tensor([prompt])
    with torch.inference_mode(), (contextlib.nullcontext() if adapter else model.disable_adapter()):
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                             do_sample=False, eos_token_id=stop_ids, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


def test_fp32_export_answers_token_for_token_like_pytorch(fp32_export, pytorch_model):
    onnx = load_export(fp32_export.folder)
    prompts = [onnx.encode(c) for c in CONVERSATIONS]
    model, _ = pytorch_model
    expected = [_pytorch_tokens(model, onnx.stop_ids, p) for p in prompts]
    assert onnx.generate_ids(prompts, NEW_TOKENS) == expected  # one batch of three prompts of different lengths


def test_prompts_that_start_alike_reuse_the_cached_start_and_answer_the_same(fp32_export, pytorch_model):
    onnx = load_export(fp32_export.folder)
    system = {"role": "system", "content": "You answer questions about Xbox consoles, briefly and politely."}
    chats = [[system, {"role": "user", "content": question}]
             for question in ("My controller will not pair.", "Is the Series X loud?", "How do I update it?")]
    prompts = [onnx.encode(c) for c in chats]
    model, _ = pytorch_model
    expected = [_pytorch_tokens(model, onnx.stop_ids, p) for p in prompts]
    assert onnx.generate_ids(prompts[:1], NEW_TOKENS) == expected[:1]
    assert onnx.prompt_tokens_reused == 0
    assert onnx.generate_ids(prompts[1:], NEW_TOKENS) == expected[1:]  # the first after a rewind to the system prompt
    system_prompt = len(os.path.commonprefix([prompts[0], prompts[1]]))
    assert system_prompt > 16 and onnx.prompt_tokens_reused == system_prompt  # one kept generator: one reuse
    follow_up = chats[0] + [{"role": "assistant", "content": onnx.decode(expected[0])},
                            {"role": "user", "content": "And the headset?"}]
    prompt = onnx.encode(follow_up)
    assert onnx.generate_ids([prompt], NEW_TOKENS) == [_pytorch_tokens(model, onnx.stop_ids, prompt)]
    assert onnx.generate_ids([prompts[0]], NEW_TOKENS) == expected[:1]  # the whole prompt was cached: re-read its end


def test_kept_generators_stay_within_their_cache_budget(fp32_export, monkeypatch):
    import phi3lab.export as export

    onnx = load_export(fp32_export.folder)
    prompts = [onnx.encode(c) for c in CONVERSATIONS[:2]]
    monkeypatch.setattr(export, "KEPT_CACHE_BYTES", onnx.cache_bytes_per_token * 10)  # less than one generator
    onnx.generate_ids(prompts, NEW_TOKENS)
    onnx.generate_ids(prompts, NEW_TOKENS)
    assert onnx.prompt_tokens_reused == 0 and onnx.prompt_tokens_read == 2 * sum(map(len, prompts))


def test_export_carries_the_runs_tokenizer_template_and_end_of_turn(fp32_export, run):
    folder = fp32_export.folder
    assert folder == run / "exports" / "onnx-fp32-cpu"
    assert "<|im_end|>" in (folder / "chat_template.jinja").read_text()
    genai = json.loads((folder / "genai_config.json").read_text())["model"]
    tokenizer = OnnxChatModel(folder).tokenizer
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in genai["eos_token_id"]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["run"] == "tiny" and manifest["precision"] == "fp32" and manifest["adapter_file"] is None
    assert manifest["files"]["model.onnx.data"] == (folder / "model.onnx.data").stat().st_size


def test_an_unchanged_run_is_not_exported_again(fp32_export, run):
    again = export_onnx("tiny", precision="fp32")
    assert again.reused and again.seconds < 2 and again.manifest == fp32_export.manifest
    (run / "adapter" / "adapter_model.safetensors").touch()  # same bytes: still the same export
    assert export_onnx("tiny", precision="fp32").reused


def test_a_failed_export_leaves_the_previous_one_whole(fp32_export, monkeypatch):
    import phi3lab.export as export

    def broken_build(run, base, options, out, scratch):
        (out / "model.onnx").write_text("half written")
        raise RuntimeError("builder crashed")

    monkeypatch.setattr(export, "_build", broken_build)
    with pytest.raises(RuntimeError, match="builder crashed"):
        export_onnx("tiny", precision="fp32", force=True)
    assert export_onnx("tiny", precision="fp32").reused
    assert not [p for p in fp32_export.folder.parent.iterdir() if p.name.startswith(".")]


def test_adapter_layout_keeps_the_adapter_in_its_own_file(run, pytorch_model):
    exported = export_onnx("tiny", precision="fp32", layout="adapter")
    assert exported.folder.name == "onnx-fp32-cpu-adapter" and exported.adapter_file.name == ADAPTER_FILE
    tuned, base = load_export(exported.folder), load_export(exported.folder, use_adapter=False)
    prompts = [tuned.encode(c) for c in CONVERSATIONS[:2]]
    model, _ = pytorch_model
    assert tuned.generate_ids(prompts, NEW_TOKENS) == [_pytorch_tokens(model, tuned.stop_ids, p) for p in prompts]
    assert base.generate_ids(prompts, NEW_TOKENS) == [_pytorch_tokens(model, tuned.stop_ids, p, adapter=False)
                                                      for p in prompts]


def test_int4_export_is_quantized_and_smaller(run, fp32_export):
    import onnx

    exported = export_onnx("tiny", precision="int4")
    graph = onnx.load(str(exported.folder / "model.onnx"), load_external_data=False).graph
    assert "MatMulNBits" in {node.op_type for node in graph.node}
    assert exported.size_mb < fp32_export.size_mb / 2
    replies = load_export(exported.folder).generate(CONVERSATIONS[:1], max_new_tokens=4)
    assert len(replies) == 1 and isinstance(replies[0], str)


def test_cli_exports_and_reports(fp32_export, capsys):
    assert cli(["export", "--format", "onnx", "--run", "tiny", "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "unchanged, reused" in out and str(fp32_export.folder) in out


# ----- bad input: one clear message each ------------------------------------------------------------
def test_a_run_that_does_not_exist(run, capsys):
    with pytest.raises(RunNotFoundError, match="there is no run 'nope'.*finished runs under .*: tiny"):
        export_onnx("nope")
    assert cli(["export", "--format", "onnx", "--run", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: there is no run 'nope'")


def test_a_run_without_an_adapter(run):
    unfinished = run.parent / "unfinished"
    unfinished.mkdir()
    shutil.copy(run / "config.yaml", unfinished / "config.yaml")
    with pytest.raises(RunNotFoundError, match="holds no finished adapter"):
        export_onnx("unfinished")


def test_an_unsupported_architecture(run, tiny_base, tmp_path, monkeypatch):
    other = tmp_path / "gpt2"
    shutil.copytree(tiny_base, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    monkeypatch.setattr(models, "model_source", lambda name: str(other))
    with pytest.raises(ExportError, match="is a GPT2LMHeadModel; the course's ONNX export supports Phi3ForCausalLM"):
        export_onnx("tiny")


def test_cuda_precision_without_cuda(run, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ExportError, match="needs an NVIDIA GPU with CUDA, and this machine has none"):
        export_onnx("tiny", precision="fp16", device="cuda")
    with pytest.raises(ExportError, match="precision 'fp16' is not offered for cpu \\(fp16 is for cuda\\)"):
        export_onnx("tiny", precision="fp16")


def test_an_export_without_its_tokenizer(fp32_export, tmp_path):
    broken = tmp_path / "export"
    shutil.copytree(fp32_export.folder, broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ExportError, match="not a complete ONNX export: tokenizer.json missing"):
        load_export(broken)


def test_fidelity_report_puts_the_export_beside_pytorch(fp32_export, run):
    from phi3lab.fidelity import measure_fidelity

    conversations = [[*c, {"role": "assistant", "content": "Restart the console, then pair again."}]
                     for c in CONVERSATIONS]
    report = measure_fidelity("tiny", conversations, precisions=("fp32",), prefix_tokens=8, max_new_tokens=8)
    pytorch, fp32 = report.rows()
    assert pytorch["backend"] == "PyTorch (cpu)" and fp32["backend"] == "ONNX Runtime GenAI fp32 (cpu)"
    assert fp32["first 8 tokens = PyTorch's"] == 1.0 and report.to_dict()["mismatched_prompts"] == {fp32["backend"]: []}
    assert fp32["perplexity"] == pytest.approx(pytorch["perplexity"], rel=1e-4)  # teacher forcing agrees too
    assert report.exports[0].language.tokens == report.pytorch.language.tokens
    assert "ONNX Runtime GenAI fp32 (cpu)" in report.table()


def test_evaluation_generates_with_an_export(fp32_export, pytorch_model):
    from phi3lab.evaluation import generation_metrics

    conversations = [[*c, {"role": "assistant", "content": "Restart the console."}] for c in CONVERSATIONS]
    model, tokenizer = pytorch_model
    torch_metrics = generation_metrics(model, tokenizer, conversations, max_new_tokens=8)
    onnx_metrics = generation_metrics(None, None, conversations, max_new_tokens=8, backend=load_export(fp32_export.folder))
    assert (torch_metrics.backend, onnx_metrics.backend) == ("PyTorch", "ONNX Runtime GenAI fp32 (cpu)")
    assert onnx_metrics.replies == torch_metrics.replies and onnx_metrics.token_f1 == torch_metrics.token_f1
