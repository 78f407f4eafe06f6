"""Batched generation: left padding gives the same replies as one at a time, and only new text comes back."""

from __future__ import annotations

import pytest

from phi3lab.generation import generate, stop_token_ids
from phi3lab.models import OFFLINE_MODEL, load_model, load_tokenizer

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."},
     {"role": "user", "content": "Name three colours of the rainbow, in a short list, please."}],
]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return load_model(OFFLINE_MODEL, device="cpu"), load_tokenizer(OFFLINE_MODEL)


def test_batched_replies_equal_one_at_a_time(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=24)
    single = [generate(model, tokenizer, [p], max_new_tokens=24)[0] for p in PROMPTS]
    assert batched == single
    assert "Paris" in batched[0]
    assert all("<|im_start|>" not in r and "capital of France?" not in r for r in batched)
    assert tokenizer.padding_side == "right"  # restored after generation


def test_generation_stops_at_the_end_of_turn(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    reply = generate(model, tokenizer, PROMPTS[:1], max_new_tokens=120)[0]
    assert len(tokenizer(reply)["input_ids"]) < 100
    assert tokenizer.eos_token_id in stop_token_ids(model, tokenizer)


def test_a_trailing_reference_answer_is_not_part_of_the_prompt(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    with_reference = [PROMPTS[0] + [{"role": "assistant", "content": "Lyon."}]]
    assert generate(model, tokenizer, with_reference, max_new_tokens=16) == generate(
        model, tokenizer, PROMPTS[:1], max_new_tokens=16)
