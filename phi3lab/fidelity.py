"""How closely an ONNX export answers like the PyTorch model it came from, and what int4 costs.

``measure_fidelity(run)`` answers the run's validation prompts greedily with PyTorch (the adapter on its base
model, as the course evaluates it) and with the run's exports, and reports for each:

* **first N tokens = PyTorch's**: the share of prompts whose first ``prefix_tokens`` generated tokens (fewer
  when the reply ends sooner, its end-of-turn token included) are exactly PyTorch's. fp32 should be
  (almost) always; int4 rounds every weight to 16 levels per block of 32, so its replies drift;
  **tokens agreeing** says how soon: the mean number of those tokens before the first difference;
* **token F1** and **ROUGE-L** of the replies against the reference answers;
* **perplexity** of the reference answers (teacher forcing on the assistant tokens, as
  ``evaluation.language_metrics``): the quality cost of int4 without the noise of greedy decoding;
* **tokens/s**: generation speed, batches of 8 on this machine (shared machines vary).

``benchmarks/export_fidelity.py`` runs it on the whole validation set and keeps the result.
"""

from __future__ import annotations

import html
import math
import os
import time
from dataclasses import dataclass

from .config import is_ci_profile
from .evaluation import LanguageMetrics, language_metrics, load_validation, rouge_l, token_f1
from .export import OnnxChatModel, export_onnx
from .runs import RunFolder, find_run
from .training.chat_format import IGNORE_INDEX, tokenize_conversation

CI_NEW_TOKENS = 32


@dataclass
class BackendResult:
    """One backend's greedy replies (token ids and text) to the prompts, and its scores."""

    backend: str
    reply_ids: list[list[int]]
    replies: list[str]
    seconds: float
    language: LanguageMetrics
    size_mb: float | None = None

    @property
    def tokens_per_s(self) -> float:
        return sum(map(len, self.reply_ids)) / self.seconds if self.seconds else float("nan")


@dataclass(repr=False)
class FidelityReport:
    pytorch: BackendResult
    exports: list[BackendResult]
    references: list[str]
    prefix_tokens: int

    def matches(self, result: BackendResult) -> list[bool]:
        """Per prompt: the first ``prefix_tokens`` tokens equal PyTorch's."""
        n = self.prefix_tokens
        return [a[:n] == b[:n] for a, b in zip(self.pytorch.reply_ids, result.reply_ids, strict=True)]

    def agreeing(self, result: BackendResult) -> list[int]:
        """Per prompt: how many of the first ``prefix_tokens`` tokens agree with PyTorch's before the first difference."""
        n = self.prefix_tokens
        return [len(os.path.commonprefix([a[:n], b[:n]])) for a, b in zip(self.pytorch.reply_ids, result.reply_ids,
                                                                          strict=True)]

    def rows(self) -> list[dict]:
        rows = []
        for result in (self.pytorch, *self.exports):
            matched = self.matches(result)
            rows.append({"backend": result.backend,
                         f"first {self.prefix_tokens} tokens = PyTorch's": sum(matched) / len(matched),
                         "tokens agreeing (mean)": _mean(self.agreeing(result)),
                         "token F1": _mean(map(token_f1, result.replies, self.references)),
                         "ROUGE-L": _mean(map(rouge_l, result.replies, self.references)),
                         "perplexity": result.language.perplexity, "tokens/s": result.tokens_per_s,
                         "size (MB)": result.size_mb})
        return rows

    def table(self) -> str:
        rows = self.rows()
        keys = list(rows[0])
        lines = ["  ".join(f"{k:>14}" for k in keys)]
        lines += ["  ".join(f"{_fmt(row[k]):>14}" for k in keys) for row in rows]
        return "\n".join(lines) + f"\n({len(self.references)} validation prompts, greedy)"

    def __str__(self) -> str:
        return self.table()

    __repr__ = __str__  # the table, not every reply's token ids

    def _repr_html_(self) -> str:
        rows = self.rows()
        head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row.values()) + "</tr>"
                       for row in rows)
        return (f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                f"<p>{len(self.references)} validation prompts, greedy decoding</p>")

    def to_dict(self) -> dict:
        return {"prompts": len(self.references), "prefix_tokens": self.prefix_tokens, "rows": self.rows(),
                "mismatched_prompts": {r.backend: [i for i, ok in enumerate(self.matches(r)) if not ok]
                                       for r in self.exports}}


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def measure_fidelity(run: str | os.PathLike | RunFolder | None = None, conversations: list[list[dict]] | None = None,
                     precisions: tuple[str, ...] | None = None, prefix_tokens: int = 32,
                     max_new_tokens: int | None = None, batch_size: int = 8) -> FidelityReport:
    """PyTorch against the run's CPU exports (built when missing) on ``conversations`` (default: the run's
    validation set; under the CI profile its first few, and int4 only, so notebooks stay fast)."""
    run = find_run(run)
    conversations = conversations or load_validation(run)
    precisions = precisions or (("int4",) if is_ci_profile() else ("fp32", "int4"))
    max_new_tokens = max(prefix_tokens, max_new_tokens or (CI_NEW_TOKENS if is_ci_profile() else 96))
    references = [c[-1]["content"] if c[-1]["role"] == "assistant" else "" for c in conversations]
    exports, results = [export_onnx(run, precision=p) for p in precisions], []
    for exported in exports:
        onnx = OnnxChatModel(exported.folder)
        results.append(_onnx_result(onnx, conversations, max_new_tokens, batch_size, exported.size_mb))
    prompts = [onnx.encode(c) for c in conversations]  # the run's tokenizer and template, as every export's
    pytorch = _pytorch_result(run, prompts, conversations, onnx.stop_ids, max_new_tokens, batch_size)
    return FidelityReport(pytorch, results, references, prefix_tokens)


def _onnx_result(onnx: OnnxChatModel, conversations, max_new_tokens: int, batch_size: int,
                 size_mb: float) -> BackendResult:
    prompts = [onnx.encode(c) for c in conversations]
    started = time.perf_counter()
    ids = [reply for start in range(0, len(prompts), batch_size)
           for reply in onnx.generate_ids(prompts[start:start + batch_size], max_new_tokens)]
    seconds = time.perf_counter() - started
    return BackendResult(onnx.backend, ids, [onnx.decode(r) for r in ids], seconds,
                         onnx_language_metrics(onnx, conversations), size_mb)


def _pytorch_result(run: RunFolder, prompts: list[list[int]], conversations, stop_ids: list[int],
                    max_new_tokens: int, batch_size: int) -> BackendResult:
    from .training.artifacts import load_trained

    model, tokenizer = load_trained(run)
    started = time.perf_counter()
    ids = [reply for start in range(0, len(prompts), batch_size)
           for reply in _pytorch_ids(model, tokenizer, prompts[start:start + batch_size], stop_ids, max_new_tokens)]
    seconds = time.perf_counter() - started
    replies = [tokenizer.decode([t for t in r if t not in stop_ids], skip_special_tokens=True).strip() for r in ids]
    device = next(model.parameters()).device
    return BackendResult(f"PyTorch ({device.type})", ids, replies, seconds,
                         language_metrics(model, tokenizer, conversations))


def _pytorch_ids(model, tokenizer, prompts: list[list[int]], stop_ids: list[int], max_new_tokens: int):
    """Greedy new token ids for one left-padded batch, each cut after its first stop id."""
    import torch

    pad, width = tokenizer.pad_token_id, max(map(len, prompts))
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    device = next(model.parameters()).device
    with torch.inference_mode():
        output = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop_ids,
                                pad_token_id=pad, temperature=None, top_p=None, top_k=None)
    replies = []
    for row in output[:, width:].tolist():
        end = next((i + 1 for i, t in enumerate(row) if t in stop_ids), len(row))
        replies.append(row[:end])
    return replies


def onnx_language_metrics(onnx: OnnxChatModel, conversations: list[list[dict]], max_length: int = 2048):
    """Perplexity and next-token accuracy of an export on the assistant tokens of ``conversations`` (the tokens
    ``evaluation.language_metrics`` scores), by teacher forcing one token at a time."""
    import numpy as np

    started = time.perf_counter()
    total, correct, count, scored_rows = 0.0, 0, 0, 0
    for conversation in conversations:
        row = tokenize_conversation(onnx.tokenizer, conversation, max_length)
        ids = row["input_ids"]
        positions = [t for t in range(1, len(ids)) if row["labels"][t] != IGNORE_INDEX]
        scored_rows += bool(positions)
        for position, logits in zip(positions, onnx.next_token_logits(ids, positions), strict=True):
            logits = logits.astype(np.float64)
            log_z = logits.max() + math.log(np.exp(logits - logits.max()).sum())
            total += log_z - logits[ids[position]]
            correct += int(logits.argmax() == ids[position])
            count += 1
    return LanguageMetrics(loss=total / count, token_accuracy=correct / count, tokens=count,
                           conversations=scored_rows, seconds=time.perf_counter() - started)
