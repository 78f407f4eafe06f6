"""Phi-3, Phi-3.5 and Phi-4-mini locally: tiny random-weight models of each architecture take the course's LoRA
targets, and the label mask covers exactly the assistant turns and their <|end|> under each model's real template."""

from __future__ import annotations

import logging

import pytest
import torch

from phi3lab import models
from phi3lab.config import PHI3_LORA_TARGETS, TrainConfig
from phi3lab.training.chat_format import IGNORE_INDEX, tokenize_conversation

FAMILIES = ["phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct", "phi-3.5-mini-instruct", "phi-4-mini-instruct"]
CONVERSATION = [
    {"role": "system", "content": "You are a support assistant for Contoso."},
    {"role": "user", "content": "My kettle is noisy."},
    {"role": "assistant", "content": "Sorry about that. Descale it with vinegar."},
    {"role": "user", "content": "Still noisy."},
    {"role": "assistant", "content": "Then I will send a replacement."},
]
PHI_SPECIAL = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|tool|>", "<|/tool|>"]


def tiny_config(name: str):
    """The model's architecture with every size cut down, keeping what sets it apart: head ratios (GQA), partial
    rotary embeddings, tied embeddings, the real vocabulary, and LongRoPE for the long-context models."""
    from transformers import Phi3Config

    spec = models.get_spec(name)
    a = spec.architecture
    heads, head_dim = a["num_attention_heads"] // 8, 16
    rotary = int(head_dim * a.get("partial_rotary_factor", 1.0))
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    if spec.context_length > 4096:
        rope = {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0] * (rotary // 2),
                "long_factor": [2.0] * (rotary // 2), "original_max_position_embeddings": 4096}
    return Phi3Config(vocab_size=a["vocab_size"], hidden_size=heads * head_dim, intermediate_size=3 * heads * head_dim,
                      num_hidden_layers=2, num_attention_heads=heads,
                      num_key_value_heads=heads * a["num_key_value_heads"] // a["num_attention_heads"],
                      tie_word_embeddings=a["tie_word_embeddings"], max_position_embeddings=spec.context_length,
                      original_max_position_embeddings=4096, rope_parameters=rope,
                      partial_rotary_factor=a.get("partial_rotary_factor", 1.0), pad_token_id=0, bos_token_id=1,
                      eos_token_id=2, sliding_window=None)


@pytest.mark.parametrize("name", FAMILIES)
def test_tiny_model_of_each_family_trains_with_the_course_lora_targets(name):
    from transformers import Phi3ForCausalLM

    from phi3lab.training.hf_objects import add_lora

    torch.manual_seed(0)
    config = tiny_config(name)
    model = Phi3ForCausalLM(config)
    assert set(models.linear_layer_names(model)) == set(PHI3_LORA_TARGETS)
    peft_model = add_lora(TrainConfig(lora_r=4), model)
    ids = torch.randint(3, 1000, (1, 24))
    loss = peft_model(input_ids=ids, labels=ids).loss
    loss.backward()
    adapted = [n for n, p in peft_model.named_parameters() if p.requires_grad and p.grad is not None]
    assert {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n in adapted if "lora_A" in n} == set(PHI3_LORA_TARGETS)


def test_phi4_mini_rotates_only_three_quarters_of_each_head():
    from transformers import Phi3ForCausalLM

    model = Phi3ForCausalLM(tiny_config("phi-4-mini-instruct"))
    assert model.model.rotary_emb.inv_freq.numel() * 2 == 12  # 0.75 x head_dim 16
    assert model.config.vocab_size == 200064 and model.config.tie_word_embeddings
    gqa = model.config.num_attention_heads // model.config.num_key_value_heads
    assert gqa == 3  # 24 query heads share 8 key/value heads


# ----- the real templates, rendered offline ------------------------------------------------------------------
@pytest.fixture(scope="module")
def stand_in_tokenizer():
    return models.load_tokenizer(models.OFFLINE_MODEL)


def tokenizer_with_template(base, name: str):
    """The stand-in's tokenizer speaking the model's template: its special tokens added, Phi's eos token."""
    import copy

    tokenizer = copy.deepcopy(base)
    tokenizer.add_special_tokens({"additional_special_tokens": PHI_SPECIAL})
    tokenizer.chat_template = models.chat_template(name)
    tokenizer.eos_token = "<|endoftext|>"
    return tokenizer


def trained_text(tokenizer, row) -> str:
    return tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"], strict=True)
                             if label != IGNORE_INDEX])


@pytest.mark.parametrize("name, expected", [
    ("phi-3-mini-4k-instruct", "Sorry about that. Descale it with vinegar.<|end|>\nThen I will send a replacement.<|end|>\n"),
    ("phi-3.5-mini-instruct", "Sorry about that. Descale it with vinegar.<|end|>\nThen I will send a replacement.<|end|>\n"),
    ("phi-4-mini-instruct", "Sorry about that. Descale it with vinegar.<|end|>Then I will send a replacement.<|end|>"),
])
def test_label_mask_covers_exactly_the_assistant_turns_and_their_end_token(stand_in_tokenizer, name, expected):
    tokenizer = tokenizer_with_template(stand_in_tokenizer, name)
    row = tokenize_conversation(tokenizer, CONVERSATION, max_length=512)
    assert trained_text(tokenizer, row) == expected
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    assert sum(1 for t, label in zip(row["input_ids"], row["labels"], strict=True) if t == end and label == t) == 2
    assert row["labels"][-1] == IGNORE_INDEX  # the eos token the template appends after the last turn is not trained
    assert tokenizer.decode(row["input_ids"]).startswith("<|system|>")  # the system prompt is kept


def test_shipped_templates_render_each_family_as_published(stand_in_tokenizer):
    phi3 = tokenizer_with_template(stand_in_tokenizer, "phi-3-mini-4k-instruct")
    phi4 = tokenizer_with_template(stand_in_tokenizer, "phi-4-mini-instruct")
    turn = [{"role": "user", "content": "Hi"}]
    assert phi3.apply_chat_template(turn, tokenize=False, add_generation_prompt=True) == "<|user|>\nHi<|end|>\n<|assistant|>\n"
    assert phi4.apply_chat_template(turn, tokenize=False, add_generation_prompt=True) == "<|user|>Hi<|end|><|assistant|>"
    assert models.chat_template("phi-3-mini-128k-instruct") == models.chat_template("phi-3-mini-4k-instruct")
    assert models.chat_template(models.OFFLINE_MODEL) is None  # the stand-in uses its own tokenizer's template
    sources = (models.TEMPLATES / "SOURCES.md").read_text()
    for spec in models.CATALOG.values():
        if spec.chat_template_file:
            assert spec.chat_template_file in sources and spec.hub_id in sources


def test_every_catalog_model_has_its_architecture_for_the_planner():
    for spec in models.CATALOG.values():
        assert {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers"} <= set(spec.architecture)


# ----- loading noise -------------------------------------------------------------------------------------------
def test_loading_shows_no_progress_bars_or_load_report_and_restores_settings(capsys, caplog):
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    with caplog.at_level(logging.WARNING):
        models.load_model(models.OFFLINE_MODEL, device="cpu")
    captured = capsys.readouterr()
    assert "Loading weights" not in captured.err + captured.out
    assert "LOAD REPORT" not in caplog.text + captured.err
    assert hf_logging.get_verbosity() == verbosity and hf_logging.is_progress_bar_enabled()


def test_the_stand_ins_pad_token_matches_its_tokenizer_so_trainer_aligns_nothing():
    model = models.load_model(models.OFFLINE_MODEL, device="cpu")
    tokenizer = models.load_tokenizer(models.OFFLINE_MODEL)
    assert model.config.pad_token_id == model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert model.config.eos_token_id == tokenizer.eos_token_id and model.config.bos_token_id == tokenizer.bos_token_id
