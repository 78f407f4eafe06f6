"""Token counts with the chosen model's own tokenizer and chat template, in batches.

Counting with another model's tokenizer is a classic mistake (lengths differ by 10-30%), so the
tokenizer is always the one the model will be trained with, and the count covers the chat template
(role markers, end-of-turn tokens), which is what training and Azure billing see.
"""

from __future__ import annotations

from pathlib import Path

BATCH_SIZE = 256
UNBOUNDED = 10**7  # tokenizers without a recorded limit report a huge model_max_length


def resolve_tokenizer(tokenizer):
    """Accept a tokenizer or a catalog model name; return (tokenizer, context length or None)."""
    if tokenizer is None:
        return None, None
    if isinstance(tokenizer, str):
        from ..models import get_spec, load_tokenizer

        return load_tokenizer(tokenizer), get_spec(tokenizer).context_length
    return tokenizer, context_length(tokenizer)


def context_length(tokenizer) -> int | None:
    """The model's context length: from the catalog when the tokenizer is a catalog model's."""
    from ..models import CATALOG, OFFLINE_MODEL, offline_model_dir

    source = str(getattr(tokenizer, "name_or_path", ""))
    for spec in CATALOG.values():
        if spec.hub_id and spec.hub_id == source:
            return spec.context_length
    if source and Path(source) == offline_model_dir():
        return CATALOG[OFFLINE_MODEL].context_length
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < UNBOUNDED else None


def tokenizer_name(tokenizer) -> str:
    from ..models import OFFLINE_MODEL, offline_model_dir

    source = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    return OFFLINE_MODEL if source and Path(source) == offline_model_dir() else source


def conversation_lengths(tokenizer, conversations: list[list[dict]]) -> list[int]:
    """Tokens of each whole conversation as the chat template renders it for training."""
    if not conversations:
        return []
    encoded = tokenizer.apply_chat_template(conversations, tokenize=True, return_dict=True)
    return [len(ids) for ids in encoded["input_ids"]]


def content_lengths(tokenizer, texts: list[str]) -> list[int]:
    """Tokens of bare message contents (no template), for per-role statistics."""
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


class TokenCounter:
    """Collects conversations, counts them in batches, and keeps per-role length lists."""

    def __init__(self, tokenizer, batch_size: int = BATCH_SIZE):
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.pending: list[tuple[int, list[dict]]] = []
        self.lengths: dict[str, list[int]] = {"conversation": [], "system": [], "user": [], "assistant": []}

    def add(self, line: int, messages: list[dict]) -> list[tuple[int, list[dict], int]]:
        """Queue a conversation; returns counted ones (line, messages, tokens) when a batch is full."""
        self.pending.append((line, messages))
        return self.flush() if len(self.pending) >= self.batch_size else []

    def flush(self) -> list[tuple[int, list[dict], int]]:
        batch, self.pending = self.pending, []
        conversations = [messages for _, messages in batch]
        totals = conversation_lengths(self.tokenizer, conversations)
        self.lengths["conversation"] += totals
        for role in ("system", "user", "assistant"):
            texts = [m["content"] for messages in conversations for m in messages if m["role"] == role]
            self.lengths[role] += content_lengths(self.tokenizer, texts)
        return [(line, messages, n) for (line, messages), n in zip(batch, totals, strict=True)]
