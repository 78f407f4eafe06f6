"""Batched chat replies from a base or fine-tuned model, through the model's own chat template."""

from __future__ import annotations

import contextlib


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a reply: the tokenizer's eos plus the model's generation-config eos list.

    Phi-3 lists ``<|endoftext|>``, ``<|assistant|>`` and ``<|end|>`` in its generation config; the
    stand-in ends turns with ``<|im_end|>``.
    """
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is not None:
        ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    end = tokenizer.convert_tokens_to_ids("<|end|>") if "<|end|>" in tokenizer.get_vocab() else None
    ids.add(end)
    return sorted(i for i in ids if i is not None)


def prompt_messages(conversation: list[dict]) -> list[dict]:
    """The prompt part of a conversation: a trailing assistant turn (a reference answer) is left out."""
    if conversation and conversation[-1].get("role") == "assistant":
        return conversation[:-1]
    return conversation


@contextlib.contextmanager
def _left_padding(tokenizer):
    # Decoder-only generation needs the prompt's last token at the right edge of every row.
    previous = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = previous


def generate(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 128,
             do_sample: bool = False, batch_size: int = 8) -> list[str]:
    """The model's reply to each conversation (new text only), generated in left-padded batches."""
    import torch

    texts = [tokenizer.apply_chat_template(prompt_messages(c), tokenize=False, add_generation_prompt=True)
             for c in conversations]
    stops = stop_token_ids(model, tokenizer)
    device = next(model.parameters()).device
    replies: list[str] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(texts), batch_size):
            with _left_padding(tokenizer):
                batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                                  add_special_tokens=False).to(device)
            with torch.inference_mode():
                output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                        eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
                                        **({} if do_sample else {"temperature": None, "top_p": None, "top_k": None}))
            new_tokens = output[:, batch["input_ids"].shape[1]:]
            replies.extend(t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return replies


def compare_replies(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 96):
    """A table of base and fine-tuned replies to the same prompts, side by side.

    ``model`` is a peft model: the base replies come from the same weights with the adapter
    switched off, so no second copy of the base model is loaded.
    """
    import pandas as pd

    with model.disable_adapter():
        base = generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens)
    tuned = generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens)
    table = pd.DataFrame({
        "user": [prompt_messages(c)[-1]["content"] for c in conversations],
        "base model": base,
        "fine-tuned": tuned,
    })
    references = [c[-1]["content"] if c and c[-1].get("role") == "assistant" else "" for c in conversations]
    if any(references):
        table["reference"] = references
    return table.style.set_properties(**{"text-align": "left", "white-space": "pre-wrap", "vertical-align": "top"})
