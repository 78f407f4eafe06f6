"""``stats`` (token and turn distributions, label balance) and ``estimate_cost``."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .labels import read_label_map
from .report import DataError, TokenStats
from .tokens import TokenCounter, resolve_tokenizer, tokenizer_name
from .validate import scan

PRICE_SOURCE = ("Azure has no pricing API. Read the price per 1,000 training tokens for your model, region and "
                "currency on the model's \"Pricing and terms\" tab in the Azure AI Foundry portal (model catalog "
                "-> your model -> Fine-tune), or on the Azure AI Foundry pricing page. Hosting the fine-tuned "
                "model is billed separately (per hour), see notebook 05.")


@dataclass
class DataStats:
    path: str
    n_conversations: int = 0
    n_skipped_lines: int = 0  # invalid or blank lines, not counted
    n_with_system: int = 0
    turns: Counter = field(default_factory=Counter)  # assistant replies per conversation -> conversations
    label_counts: Counter = field(default_factory=Counter)
    tokenizer: str | None = None
    tokens: dict[str, TokenStats] = field(default_factory=dict)  # "conversation", "system", "user", "assistant"
    conversation_tokens: list[int] = field(default_factory=list, repr=False)  # for the histogram

    @property
    def multi_turn_share(self) -> float:
        multi = sum(n for turns, n in self.turns.items() if turns > 1)
        return multi / self.n_conversations if self.n_conversations else 0.0

    @property
    def balance_ratio(self) -> float | None:
        """Largest label count over the smallest (1.0 is perfectly balanced)."""
        if not self.label_counts:
            return None
        return max(self.label_counts.values()) / min(self.label_counts.values())

    def summary(self) -> str:
        lines = [f"{self.path}: {self.n_conversations} conversations"
                 + (f" ({self.n_skipped_lines} invalid or blank lines skipped)" if self.n_skipped_lines else ""),
                 f"with a system prompt: {self.n_with_system}",
                 "assistant replies per conversation: "
                 + ", ".join(f"{turns}: {n}" for turns, n in sorted(self.turns.items()))
                 + f"  (multi-turn: {self.multi_turn_share:.1%})"]
        if self.tokens:
            lines.append(f"tokens (tokenizer {self.tokenizer}):")
            lines += [f"  {stats.row(name)}" for name, stats in self.tokens.items()]
        if self.label_counts:
            lines.append(f"labels: {len(self.label_counts)}, largest/smallest = {self.balance_ratio:.2f}")
            lines += [f"  {label:<22}{n:>5}" for label, n in sorted(self.label_counts.items())]
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        return {"path": self.path, "n_conversations": self.n_conversations, "n_skipped_lines": self.n_skipped_lines,
                "n_with_system": self.n_with_system, "turns": dict(sorted(self.turns.items())),
                "multi_turn_share": self.multi_turn_share, "label_counts": dict(sorted(self.label_counts.items())),
                "balance_ratio": self.balance_ratio, "tokenizer": self.tokenizer,
                "tokens": {name: asdict(s) for name, s in self.tokens.items()}}


def stats(path: str | os.PathLike, tokenizer=None, labels: str | os.PathLike | None = None) -> DataStats:
    """Distributions over the valid conversations of ``path`` (invalid lines are skipped and counted)."""
    tokenizer, _ = resolve_tokenizer(tokenizer)
    label_map = read_label_map(labels) if labels is not None else None
    result = DataStats(str(path), tokenizer=tokenizer_name(tokenizer) if tokenizer is not None else None)
    counter = TokenCounter(tokenizer) if tokenizer is not None else None
    for item in scan(path):
        if not item.valid:
            result.n_skipped_lines += 1
            continue
        messages = item.record["messages"]
        result.n_conversations += 1
        result.n_with_system += messages[0]["role"] == "system"
        result.turns[sum(m["role"] == "assistant" for m in messages)] += 1
        if label_map is not None:
            if item.raw.number not in label_map:
                raise DataError(f"{labels} has no label for line {item.raw.number} of {path}. Fix: use the labels "
                                f"file written together with this chat file.")
            result.label_counts[label_map[item.raw.number]] += 1
        if counter is not None:
            counter.add(item.raw.number, messages)
    if result.n_conversations == 0:  # distributions (and a cost) of nothing would only mislead
        raise DataError(f"{path} has no valid conversation to describe ({result.n_skipped_lines} line(s) invalid or "
                        f"blank). Fix: `phi3lab data validate {path}` lists the problems.")
    if counter is not None:
        counter.flush()
        result.conversation_tokens = counter.lengths["conversation"]
        result.tokens = {name: TokenStats.of(values) for name, values in counter.lengths.items() if values}
    return result


@dataclass
class CostEstimate:
    path: str
    n_conversations: int
    tokens_per_epoch: int  # with the chat template
    billable_tokens_per_epoch: int  # each conversation capped at max_tokens
    n_capped: int  # conversations longer than max_tokens (truncated in training, billed up to the cap)
    max_tokens: int | None
    epochs: int
    billable_tokens: int  # per epoch x epochs
    price_per_1k_tokens: float
    total: float
    tokenizer: str = ""  # whose tokenizer counted the tokens: the count is only right for that model
    price_source: str = PRICE_SOURCE

    def summary(self) -> str:
        cap = f"capped at {self.max_tokens} tokens each ({self.n_capped} capped)" if self.max_tokens else "no cap"
        counted = f" (counted with the {self.tokenizer} tokenizer)" if self.tokenizer else ""
        return (f"{self.n_conversations} conversations, {self.tokens_per_epoch:,} tokens per epoch{counted}; "
                f"billable {self.billable_tokens_per_epoch:,} per epoch, {cap}\n"
                f"{self.billable_tokens_per_epoch:,} x {self.epochs} epoch(s) = {self.billable_tokens:,} billable tokens"
                f"\n{self.billable_tokens:,} / 1000 x {self.price_per_1k_tokens} per 1K tokens = {self.total:.4f} "
                f"(training only)\nwhere the price comes from: {self.price_source}")

    __str__ = summary

    def to_dict(self) -> dict:
        return asdict(self)


def estimate_cost(path: str | os.PathLike, tokenizer, epochs: int, price_per_1k_tokens: float,
                  max_tokens: int | None = None) -> CostEstimate:
    """Training cost: billable tokens (each conversation capped at ``max_tokens``) x epochs x price.

    ``price_per_1k_tokens`` is in your billing currency; see ``PRICE_SOURCE`` for where to read it.
    ``max_tokens`` defaults to the model's context length.
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ConfigError(f"epochs={epochs!r} is invalid: use a whole number of at least 1.")
    if not isinstance(price_per_1k_tokens, (int, float)) or not 0 <= price_per_1k_tokens < 1e6:
        raise ConfigError(f"price_per_1k_tokens={price_per_1k_tokens!r} is invalid: use a number >= 0. "
                          f"{PRICE_SOURCE}")
    tokenizer, context = resolve_tokenizer(tokenizer)
    if tokenizer is None:
        raise ConfigError("estimate_cost needs the model's tokenizer (or a catalog model name): token counts "
                          "differ between models.")
    max_tokens = max_tokens or context
    lengths = stats(path, tokenizer).conversation_tokens
    billable = sum(min(n, max_tokens) if max_tokens else n for n in lengths)
    return CostEstimate(path=str(path), n_conversations=len(lengths), tokens_per_epoch=sum(lengths),
                        billable_tokens_per_epoch=billable,
                        n_capped=sum(1 for n in lengths if max_tokens and n > max_tokens), max_tokens=max_tokens,
                        epochs=epochs, billable_tokens=billable * epochs, price_per_1k_tokens=price_per_1k_tokens,
                        total=billable * epochs / 1000 * price_per_1k_tokens,
                        tokenizer=Path(getattr(tokenizer, "name_or_path", "") or "").name)
