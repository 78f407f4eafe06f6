"""Chat conversations as training rows: the loss covers assistant tokens only.

Used by training, by run planning (the widget's timed step) and by evaluation (perplexity over the
same tokens training learns), so this module imports neither the trainer nor a model.
"""

from __future__ import annotations

import math
import os

from ..config import TrainConfig
from .errors import TrainingError, notice

IGNORE_INDEX = -100  # the label value PyTorch's cross-entropy skips
# Without a validation file, this share of the training conversations (seeded) becomes the validation set.
VALIDATION_FRACTION = 0.1
_NEXT_TURN = {"role": "user", "content": "?"}  # shows where a turn's own text ends and the next one would begin


# ----- the labels mask ---------------------------------------------------------------------------
def assistant_char_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans the model must learn to write.

    The stand-in's and Phi-3's chat templates have no ``{% generation %}`` markers, so
    ``return_assistant_tokens_mask`` cannot be used. Instead each assistant turn is located by
    rendering prefixes of the conversation with the model's own template: the turn starts where
    the prompt up to it (with the generation prompt) ends, and runs as far as the conversation
    through that turn agrees with the same conversation continued by another user turn. That end
    includes the end-of-turn token (``<|im_end|>``, ``<|end|>``), so the model learns to stop, and
    excludes what a template appends after the last turn only (Phi's eos token).
    """
    def render(msgs, prompt=False):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=prompt)

    full = render(messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(messages[:i], prompt=True)
        if not full.startswith(prompt):
            raise TrainingError("the model's chat template renders a conversation differently from its prefixes; "
                                "assistant tokens cannot be located. Use a catalog model's tokenizer.")
        through = messages[:i + 1]
        end = len(os.path.commonprefix([render(through), render([*through, _NEXT_TURN]), full]))
        spans.append((len(prompt), end))
    return full, spans


def tokenize_conversation(tokenizer, messages: list[dict], max_length: int) -> dict:
    """``input_ids`` and ``labels`` for one conversation, truncated to ``max_length`` tokens.

    ``labels`` equal ``input_ids`` on assistant tokens (each turn's end-of-turn token included) and
    -100 everywhere else, so cross-entropy trains only what the assistant says.
    """
    text, spans = assistant_char_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                        truncation=True, max_length=max_length)
    labels = []
    for token_id, (lo, hi) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        # A token is trained when it ends inside a span. The character-level end can stop partway
        # into the next turn's first special token (e.g. "<|" of "<|user|>"), which is excluded so.
        trained = hi > lo and any(start < hi <= end for start, end in spans)
        labels.append(token_id if trained else IGNORE_INDEX)
    return {"input_ids": list(encoded["input_ids"]), "labels": labels,
            "attention_mask": [1] * len(encoded["input_ids"])}


def label_preview(tokenizer, messages: list[dict], max_length: int = 4096) -> str:
    """The rendered conversation with the trained tokens wrapped in [[ ]], to see what the loss covers."""
    row = tokenize_conversation(tokenizer, messages, max_length)
    pieces, trained_run = [], []
    for token_id, label in zip(row["input_ids"], row["labels"], strict=True):
        if label != IGNORE_INDEX:
            trained_run.append(token_id)
            continue
        if trained_run:
            pieces.append(f"[[{tokenizer.decode(trained_run)}]]")
            trained_run = []
        pieces.append(tokenizer.decode([token_id]))
    if trained_run:
        pieces.append(f"[[{tokenizer.decode(trained_run)}]]")
    return "".join(pieces)


# ----- datasets ----------------------------------------------------------------------------------
def training_rows(tokenizer, conversations, max_length: int, notices: list[str] | None = None,
                  limit: int | None = None) -> list[dict]:
    """``input_ids`` and ``labels`` of the conversations with something left to train (up to ``limit`` rows).

    A conversation whose assistant text starts beyond ``max_length`` tokens has nothing to learn and is dropped.
    """
    kept, skipped = [], 0
    for messages in conversations:
        row = tokenize_conversation(tokenizer, messages, max_length)
        if all(label == IGNORE_INDEX for label in row["labels"]):
            skipped += 1
            continue
        kept.append({"input_ids": row["input_ids"], "labels": row["labels"]})
        if limit is not None and len(kept) == limit:
            break
    if skipped:
        notice(f"{skipped} conversation(s) have no assistant tokens within max_seq_length={max_length} and are "
               f"skipped", notices)
    if not kept:
        raise TrainingError(f"no conversation has assistant text within the first {max_length} tokens; raise "
                            f"max_seq_length or shorten the system/user messages")
    return kept


def build_dataset(tokenizer, conversations, max_length: int, notices: list[str] | None = None):
    """A ``datasets.Dataset`` of the tokenized conversations that have something to train."""
    from datasets import Dataset

    return Dataset.from_list(training_rows(tokenizer, conversations, max_length, notices))


def automatic_validation_size(conversations: int) -> int:
    """Conversations the automatic split holds out for validation (at least one)."""
    return math.ceil(conversations * VALIDATION_FRACTION)


def load_splits(config: TrainConfig, tokenizer, notices: list[str] | None = None):
    """(train, validation) datasets; without a validation file, ``VALIDATION_FRACTION`` of the training data."""
    from ..data import read_conversations

    train_conversations = list(read_conversations(config.resolve(config.train_file)))
    train_set = build_dataset(tokenizer, train_conversations, config.max_seq_length, notices)
    if config.validation_file is None:
        split = train_set.train_test_split(test_size=automatic_validation_size(len(train_set)), seed=config.seed)
        return split["train"], split["test"]
    validation = list(read_conversations(config.resolve(config.validation_file)))
    return train_set, build_dataset(tokenizer, validation, config.max_seq_length, notices)


def make_collator(tokenizer, packing: bool, attn_implementation: str):
    """Padding-free batches (one flattened row, positions restart per conversation) or dynamic padding.

    With packing, every token in a batch is a real token; the attention stays within each
    conversation (flash-attention gets sequence boundaries, sdpa/eager a block-diagonal mask built
    by transformers from the restarting ``position_ids``).
    """
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if packing:
        return DataCollatorWithFlattening(return_flash_attn_kwargs=attn_implementation == "flash_attention_2")
    return DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=IGNORE_INDEX,
                                  return_tensors="pt")
