"""The offline stand-in: exact conversion, Phi-3 LoRA targets, cache hits and rebuilds."""

import json

import pytest
import torch

from phi3lab import models
from phi3lab.config import PHI3_LORA_TARGETS
from phi3lab.errors import ModelUnavailableError


@pytest.fixture(scope="module")
def gguf():
    """The GGUF loaded as Llama by transformers: the reference the conversion must match."""
    return models.load_gguf_llama()


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch, gguf):
    monkeypatch.setenv("PHI3LAB_CACHE", str(tmp_path))
    calls = []

    def counted_load():  # the real GGUF objects, counted so tests can see a conversion happen
        calls.append(1)
        return gguf

    monkeypatch.setattr(models, "load_gguf_llama", counted_load)
    return calls


def test_conversion_matches_gguf_llama_logits(gguf):
    llama, tokenizer = gguf
    phi3 = models.load_model(models.OFFLINE_MODEL, device="cpu")
    assert type(phi3).__name__ == "Phi3ForCausalLM"
    text = "<|im_start|>user\nMy Xbox controller keeps disconnecting. What can I try?<|im_end|>\n"
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        expected, actual = llama(ids).logits, phi3(ids).logits
    assert actual.shape == expected.shape
    assert torch.allclose(actual, expected, atol=1e-4, rtol=0)


def test_stand_in_has_phi3_shape_and_lora_targets():
    model = models.load_model(models.OFFLINE_MODEL, device="cpu")
    assert set(PHI3_LORA_TARGETS) == set(models.linear_layer_names(model))
    cfg = model.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (9, 3)
    assert cfg.rope_parameters["rope_theta"] == 100000.0
    assert cfg.tie_word_embeddings and model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    attn = model.model.layers[0].self_attn
    assert attn.qkv_proj.out_features == (9 + 2 * 3) * 64


def test_tokenizer_keeps_chat_template_and_distinct_pad():
    tokenizer = models.load_tokenizer(models.OFFLINE_MODEL)
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], tokenize=False)
    assert "Be brief." in text  # the system prompt is kept, not silently replaced
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.eos_token == "<|im_end|>"


def test_second_load_hits_the_cache(tmp_cache):
    first = models.ensure_offline_model()
    assert len(tmp_cache) == 1
    assert models.ensure_offline_model() == first
    assert len(tmp_cache) == 1, "a valid cache must not be converted again"


@pytest.mark.parametrize("damage", ["truncate_weights", "drop_manifest", "garble_header", "half_written"])
def test_corrupt_cache_is_detected_and_rebuilt(tmp_cache, damage):
    folder = models.ensure_offline_model()
    weights = folder / "model.safetensors"
    if damage == "truncate_weights":
        with weights.open("r+b") as handle:
            handle.truncate(weights.stat().st_size // 2)
    elif damage == "drop_manifest":
        (folder / models.MANIFEST).unlink()
    elif damage == "garble_header":
        with weights.open("r+b") as handle:
            handle.seek(8)
            handle.write(b"\x00garbage")
    else:  # a crash mid-write leaves a temp folder beside the cache and no manifest in it
        (folder / models.MANIFEST).unlink()
        (folder.parent / f".{folder.name}.crash.tmp").mkdir()
    assert not models.offline_cache_valid(folder)
    rebuilt = models.ensure_offline_model()
    assert len(tmp_cache) == 2
    assert models.offline_cache_valid(rebuilt)
    manifest = json.loads((rebuilt / models.MANIFEST).read_text())
    assert manifest["files"]["model.safetensors"] == weights.stat().st_size


def test_failed_conversion_leaves_previous_cache_intact(tmp_cache, monkeypatch):
    folder = models.ensure_offline_model()
    monkeypatch.setattr(models, "convert_llama_to_phi3", lambda llama: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        models.ensure_offline_model(force=True)
    assert models.offline_cache_valid(folder)


def test_unknown_model_names_the_catalog():
    with pytest.raises(ModelUnavailableError, match="phi3-tiny-offline"):
        models.load_model("gpt-2")


def test_unreachable_hub_gives_one_paragraph_naming_the_offline_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as info:
        models.load_tokenizer("phi-3-mini-4k-instruct")
    message = str(info.value)
    assert "PHI3LAB_MODEL=phi3-tiny-offline" in message and "\n" not in message


def test_default_model_follows_env_then_hardware(monkeypatch):
    monkeypatch.setenv(models.MODEL_ENV, "phi-4-mini-instruct")
    assert models.default_model_name() == "phi-4-mini-instruct"
    monkeypatch.setenv(models.MODEL_ENV, "nope")
    with pytest.raises(ModelUnavailableError):
        models.default_model_name()
    monkeypatch.delenv(models.MODEL_ENV)
    monkeypatch.setattr(models, "pick_device", lambda: "cpu")
    assert models.default_model_name() == models.OFFLINE_MODEL


def test_cpu_uses_fp32():
    assert models.pick_dtype("cpu") == torch.float32
    model = models.load_model(models.OFFLINE_MODEL, device="cpu")
    assert next(model.parameters()).dtype == torch.float32
