"""Shared test material for the evaluation and classifier tests: a small chat dataset with intent
labels, and a small randomly initialised Phi-3 (the real architecture, few layers) that trains in
seconds on CPU and uses the stand-in's real tokenizer and chat template."""

from __future__ import annotations

import json
from pathlib import Path

SYSTEM = {"role": "system", "content": "You are a friendly, concise Xbox support agent."}
INTENT_QUESTIONS = {
    "network": ["My Xbox will not connect to Wi-Fi", "The NAT type says strict", "Online play keeps lagging",
                "The console drops the internet connection"],
    "controller": ["My controller will not pair", "The controller keeps disconnecting",
                   "How do I update my controller firmware", "The controller buttons do not respond"],
    "refund": ["I want a refund for a game", "I was charged twice for one purchase",
               "Can I get my money back for a digital game", "I bought a game by mistake, refund please"],
}


def write_chat(folder: Path, name: str, n: int, offset: int = 0, multi_turn_every: int = 0) -> Path:
    """``<name>.jsonl`` and ``<name>_labels.jsonl`` with ``n`` conversations cycling through the intents."""
    chat, labels = folder / f"{name}.jsonl", folder / f"{name}_labels.jsonl"
    intents = list(INTENT_QUESTIONS)
    with chat.open("w", encoding="utf-8") as c, labels.open("w", encoding="utf-8") as lab:
        for i in range(n):
            intent = intents[(i + offset) % len(intents)]
            question = INTENT_QUESTIONS[intent][(i + offset) // len(intents) % 4]
            messages = [SYSTEM, {"role": "user", "content": question},
                        {"role": "assistant", "content": f"Happy to help with your {intent} issue. Restart first."}]
            if multi_turn_every and i % multi_turn_every == 0:
                messages += [{"role": "user", "content": "It still fails."},
                             {"role": "assistant", "content": "Then contact Xbox Support, please."}]
            c.write(json.dumps({"messages": messages}) + "\n")
            lab.write(json.dumps({"line": i + 1, "intent": intent}) + "\n")
    return chat


def make_tiny_phi3(folder: Path, hidden: int = 32) -> Path:
    """A 2-layer Phi-3 with random weights and the stand-in's tokenizer, saved like a catalog model."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    from phi3lab.models import load_tokenizer

    tokenizer = load_tokenizer("phi3-tiny-offline")
    torch.manual_seed(0)
    config = Phi3Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                        tie_word_embeddings=True, sliding_window=None)
    Phi3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
