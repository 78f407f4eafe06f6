"""Evaluate a chat model on the validation set, and compare the base model with the fine-tuned one.

Metrics (all on the validation conversations):

* **perplexity** and **next-token accuracy** on the assistant's tokens only, the same tokens
  training learns (masks from ``phi3lab.training.chat_format.tokenize_conversation``);
* **token F1** and **ROUGE-L** between each generated reply and the reference reply.
"""

from __future__ import annotations

import contextlib
import copy
import html
import math
import os
import re
import string
import time
from collections import Counter
from dataclasses import dataclass, field

from .config import is_ci_profile
from .errors import Phi3LabError
from .paths import repo_path
from .runs import RunFolder
from .training.chat_format import IGNORE_INDEX, tokenize_conversation

DEFAULT_VALIDATION = "data/validation.jsonl"
CI_LIMIT = 12  # validation conversations scored under the CI profile
CI_NEW_TOKENS = 24


class EvaluationError(Phi3LabError):
    """The evaluation cannot run on this input; the message says what to change."""


def load_validation(source: str | os.PathLike | RunFolder | None = None, limit: int | None = None) -> list[list[dict]]:
    """The validation conversations of a run (its ``validation_file``) or of a file; by default the course's
    validation set. The first ``limit`` are kept; under the CI profile at most ``CI_LIMIT``."""
    from itertools import islice

    from .data import read_conversations

    if isinstance(source, RunFolder):
        source = source.config().validation_file
    path = repo_path(source or DEFAULT_VALIDATION)
    limit = limit if limit is not None else CI_LIMIT if is_ci_profile() else None
    conversations = list(islice(read_conversations(path), limit))
    if not conversations:
        raise EvaluationError(f"the validation set {path} has no conversations, so there is nothing to evaluate. "
                              f"Fix: split the data (phi3lab data split) or point at a file with conversations.")
    return conversations


# ----- perplexity and next-token accuracy ------------------------------------------------------
@dataclass
class LanguageMetrics:
    """Cross-entropy on assistant tokens, micro-averaged over tokens, and what follows from it."""

    loss: float
    token_accuracy: float
    tokens: int
    conversations: int
    seconds: float

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)


@contextlib.contextmanager
def _eval_mode(model):
    """Evaluation mode (no dropout) for the block, then back to the mode the model was in."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def _causal_parts(model):
    """(decoder, lm_head) of a causal LM, peft-wrapped or not (LoRA layers live inside the decoder)."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    return causal.get_decoder(), causal.get_output_embeddings()


def _shared_prefix(rows: list[dict]) -> int:
    """Leading tokens every conversation shares (the system prompt), stopping before any labelled token."""
    shared = len(os.path.commonprefix([r["input_ids"] for r in rows]))
    first_labelled = min(next(i for i, label in enumerate(r["labels"]) if label != IGNORE_INDEX) for r in rows)
    return max(min(shared, first_labelled) - 1, 0)  # the last shared token stays in each row: its logits predict the next one


def _pad_batch(batch: list[dict], prefix_len: int, pad_id: int):
    """Right-padded ``input_ids`` and ``labels`` after the shared prefix, and the attention mask over prefix + rest."""
    import torch

    width = max(len(r["input_ids"]) for r in batch) - prefix_len
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), prefix_len + width), dtype=torch.long)
    for i, row in enumerate(batch):
        n = len(row["input_ids"]) - prefix_len
        ids[i, :n] = torch.tensor(row["input_ids"][prefix_len:])
        labels[i, :n] = torch.tensor(row["labels"][prefix_len:])
        mask[i, :prefix_len + n] = 1
    return ids, labels, mask


def language_metrics(model, tokenizer, conversations: list[list[dict]], max_length: int = 2048,
                     batch_size: int = 8, share_prefix: bool = True) -> LanguageMetrics:
    """Perplexity and next-token accuracy on the assistant tokens of ``conversations``.

    Conversations are sorted by length and batched with right padding (little padding). The
    system prompt every conversation shares is run once and its key/value cache reused for every
    batch, and the output layer runs only where there is an assistant token to score: together
    this roughly halves the work on the course data without changing the result.
    """
    import torch
    import torch.nn.functional as F


    if not conversations:
        raise EvaluationError("no conversations to evaluate. Fix: pass at least one validation conversation.")
    started = time.perf_counter()
    rows = [tokenize_conversation(tokenizer, c, max_length) for c in conversations]
    rows = sorted((r for r in rows if any(label != IGNORE_INDEX for label in r["labels"])),
                  key=lambda r: len(r["input_ids"]))
    if not rows:
        raise EvaluationError(f"no conversation has assistant text within the first {max_length} tokens. "
                              f"Fix: raise max_length or check that conversations end with an assistant turn.")
    decoder, lm_head = _causal_parts(model)
    device = next(model.parameters()).device
    total_loss, correct, count = 0.0, 0, 0
    with torch.inference_mode(), _eval_mode(model):
        prefix_len = _shared_prefix(rows) if share_prefix else 0
        prefix_cache = None
        if prefix_len:
            prefix = torch.tensor([rows[0]["input_ids"][:prefix_len]], device=device)
            prefix_cache = decoder(input_ids=prefix, use_cache=True).past_key_values
        for start in range(0, len(rows), batch_size):
            ids, labels, mask = (t.to(device) for t in _pad_batch(rows[start:start + batch_size], prefix_len,
                                                                  tokenizer.pad_token_id))
            cache = None
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(ids.shape[0])
            positions = torch.arange(prefix_len, prefix_len + ids.shape[1], device=device).expand(ids.shape[0], -1)
            hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                             use_cache=cache is not None).last_hidden_state
            # hidden[:, t] predicts token t+1: keep only positions whose next token is an assistant token
            targets = labels[:, 1:]
            scored = targets != IGNORE_INDEX
            logits = lm_head(hidden[:, :-1][scored]).float()
            wanted = targets[scored]
            total_loss += F.cross_entropy(logits, wanted, reduction="sum").item()
            correct += int((logits.argmax(-1) == wanted).sum())
            count += int(wanted.numel())
    return LanguageMetrics(loss=total_loss / count, token_accuracy=correct / count, tokens=count,
                           conversations=len(rows), seconds=time.perf_counter() - started)


# ----- generation metrics ----------------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> list[str]:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, split on whitespace."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split()


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall after normalisation (the SQuAD F1).

    Written here because no pinned package provides it (``evaluate`` would add a large dependency
    for five lines); ROUGE-L below comes from the ``rouge_score`` package.
    """
    pred, ref = normalize_answer(prediction), normalize_answer(reference)
    if not pred or not ref:
        return float(pred == ref)
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure: the longest common subsequence of words, relative to both lengths."""
    return _rouge().score(reference, prediction)["rougeL"].fmeasure


def _rouge():
    from rouge_score import rouge_scorer

    global _ROUGE
    if _ROUGE is None:
        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return _ROUGE


_ROUGE = None


@dataclass
class GenerationMetrics:
    token_f1: float
    rouge_l: float
    replies: list[str]
    references: list[str]
    seconds: float
    backend: str = "PyTorch"  # what generated the replies


def generation_metrics(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int | None = None,
                       batch_size: int = 8, backend=None) -> GenerationMetrics:
    """Generate a reply to each conversation's last prompt (greedy, batched) and score it against the
    conversation's final assistant message.

    ``backend``: an ONNX export loaded with ``phi3lab.export.load_export`` generates the replies instead of
    ``model`` (which may then be None): ONNX Runtime GenAI, several times faster on a CPU; fp32 exports
    answer token for token like PyTorch (``benchmarks/export_fidelity.py``)."""
    from .generation import generate, prompt_messages

    if not conversations:
        raise EvaluationError("no conversations to generate replies for. Fix: pass validation conversations.")
    references = [c[-1]["content"] if c[-1]["role"] == "assistant" else "" for c in conversations]
    prompts = [prompt_messages(c) for c in conversations]
    max_new_tokens = max_new_tokens or (CI_NEW_TOKENS if is_ci_profile() else 96)
    started = time.perf_counter()
    if backend is None:
        replies = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    else:
        replies = backend.generate(prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    n = len(replies)
    return GenerationMetrics(token_f1=sum(map(token_f1, replies, references)) / n,
                             rouge_l=sum(map(rouge_l, replies, references)) / n,
                             replies=replies, references=references, seconds=time.perf_counter() - started,
                             backend=backend.backend if backend is not None else "PyTorch")


# ----- one model, and base versus fine-tuned ------------------------------------------------------
@dataclass
class ModelReport:
    name: str
    language: LanguageMetrics
    generation: GenerationMetrics

    def scores(self) -> dict[str, float]:
        return {"perplexity": self.language.perplexity, "next-token accuracy": self.language.token_accuracy,
                "token F1": self.generation.token_f1, "ROUGE-L": self.generation.rouge_l}


def evaluate_model(model, tokenizer, conversations: list[list[dict]], name: str = "model",
                   max_new_tokens: int | None = None) -> ModelReport:
    return ModelReport(name, language_metrics(model, tokenizer, conversations),
                       generation_metrics(model, tokenizer, conversations, max_new_tokens))


LOWER_IS_BETTER = {"perplexity"}


@dataclass
class Comparison:
    """Every metric for the base and the fine-tuned model, plus example replies side by side."""

    base: ModelReport
    tuned: ModelReport
    prompts: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[str, float, float, str]]:
        rows = []
        for metric, before in self.base.scores().items():
            after = self.tuned.scores()[metric]
            change = (after - before) / before * 100 if before else float("nan")
            better = (after < before) if metric in LOWER_IS_BETTER else (after > before)
            rows.append((metric, before, after, f"{change:+.1f}% {'better' if better else 'worse'}"))
        return rows

    def table(self) -> str:
        lines = [f"{'metric':<20}{self.base.name:>12}{self.tuned.name:>12}   change"]
        lines += [f"{m:<20}{b:>12.3f}{a:>12.3f}   {c}" for m, b, a, c in self.rows()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in ("metric", self.base.name, self.tuned.name, "change"))
        body = "".join(f"<tr><td>{html.escape(m)}</td><td>{b:.3f}</td><td>{a:.3f}</td><td>{html.escape(c)}</td></tr>"
                       for m, b, a, c in self.rows())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def bar_scores(self) -> dict[str, dict[str, float]]:
        """The 0-to-1 metrics per model, for ``plots.plot_metric_bars``."""
        return {r.name: {k: v for k, v in r.scores().items() if k not in LOWER_IS_BETTER}
                for r in (self.base, self.tuned)}

    def examples(self, n: int = 3) -> Examples:
        return Examples([{"prompt": p, "reference": ref, self.base.name: b, self.tuned.name: t}
                         for p, ref, b, t in zip(self.prompts, self.base.generation.references,
                                                 self.base.generation.replies, self.tuned.generation.replies,
                                                 strict=True)][:n])

    def to_dict(self) -> dict:
        return {r.name: {**r.scores(), "loss": r.language.loss, "assistant_tokens": r.language.tokens,
                         "conversations": r.language.conversations} for r in (self.base, self.tuned)}


@dataclass
class Examples:
    """Example replies: plain text in a terminal, a table in a notebook."""

    items: list[dict]

    def __str__(self) -> str:
        return "\n\n".join("\n".join(f"{key:>10}: {value}" for key, value in item.items()) for item in self.items)

    def _repr_html_(self) -> str:
        if not self.items:
            return "<p>no examples</p>"
        keys = list(self.items[0])
        head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
        body = "".join("<tr>" + "".join(f"<td style='text-align:left;vertical-align:top'>{html.escape(item[k])}</td>"
                                        for k in keys) + "</tr>" for item in self.items)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def compare(model, tokenizer, conversations: list[list[dict]], base=None, max_new_tokens: int | None = None,
            names: tuple[str, str] = ("base", "fine-tuned")) -> Comparison:
    """Evaluate the fine-tuned ``model`` and its base on the same conversations.

    With a peft model the base is the same weights with the adapter switched off
    (``disable_adapter``), so no second copy of the model is loaded; pass ``base`` for a merged model.
    """
    before, tuned = base_and_tuned(model, base, lambda m, name: evaluate_model(m, tokenizer, conversations, name,
                                                                             max_new_tokens), names)
    prompts = [next(m["content"] for m in reversed(c[:-1]) if m["role"] == "user") for c in conversations]
    return Comparison(before, tuned, prompts)


def base_and_tuned(model, base, measure, names: tuple[str, str] = ("base", "fine-tuned")):
    """``measure(model, name)`` for the base model and for the fine-tuned one: the base is ``base`` when given,
    else ``model`` with its adapter switched off."""
    tuned = measure(model, names[1])
    if base is not None:
        return measure(base, names[0]), tuned
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            return measure(model, names[0]), tuned
    raise EvaluationError("the comparison needs the base model: pass base=..., or a peft model whose adapter can be "
                          "switched off (load it with phi3lab.training.artifacts.load_trained(adapter_dir)).")


# ----- behaviour: does the model decline what it should, and answer what it should? --------------------
BEHAVIOUR_PROMPTS = "data/behaviour_prompts.jsonl"
EXPECTATIONS = ("decline", "answer")
CI_BEHAVIOUR_PROMPTS = 4  # per expectation, under the CI profile
# How the course data declines ("I can only help with Xbox products", "I don't rank games", "outside what I
# can answer", ...). tests/test_evaluation.py checks it on every reply of the data set: each off-topic reply
# matches and no Xbox answer does.
DECLINE = re.compile(r"""
    \bI(?:\s+(?:can't|cannot|can\s+not|won't|will\s+not|don't|do\s+not)|(?:'m|\s+am)\s+(?:not\s+able|unable|not\s+equipped)\s+to)\s+
        (?:help|give|offer|share|recommend|comment|speculate|predict|write|provide|answer|check|tell|rate|rank
           |cover|compare|assist|discuss|decide|play|review)\b
  | \bI\s+(?:can\s+)?only\s+(?:help|answer|cover|troubleshoot|handle|assist|discuss)\b
  | \b(?:help|handle|support)\s+(?:with\s+)?Xbox\s+(?:support\s+)?(?:questions|topics|products)?\s*only\b
  | \bonly\s+(?:here\s+)?for\s+Xbox
  | \boutside\s+(?:of\s+)?(?:my\s+(?:area|scope|role)|what\s+I\s+can)
  | \bI'll\s+(?:pass|leave|stay\s+in\s+my\s+role)
  | \b(?:isn't|is\s+not|not)\s+something\s+I\s+(?:can|help|cover)
  | \bI\s+don't\s+have\s+(?:personal\s+)?(?:opinions|favou?rites|preferences|feelings)
  | \bmatter\s+of\s+(?:personal\s+)?(?:opinion|preference|taste)
""", re.IGNORECASE | re.VERBOSE)


def declines(reply: str) -> bool:
    """Whether a reply declines the request (in the ways the course data does), rather than answering it."""
    return bool(DECLINE.search(reply.replace("\u2019", "'")))


def load_behaviour_prompts(path: str | os.PathLike | None = None) -> list[dict]:
    """``{"prompt", "expect"}`` rows (``expect``: "decline" or "answer"); under the CI profile the first
    ``CI_BEHAVIOUR_PROMPTS`` of each kind."""
    import json

    path = repo_path(path or BEHAVIOUR_PROMPTS)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    bad = [n for n, row in enumerate(rows, start=1) if row.get("expect") not in EXPECTATIONS or not row.get("prompt")]
    if bad:
        raise EvaluationError(f"{path} line {bad[0]}: each line needs a 'prompt' and 'expect' set to one of "
                              f"{', '.join(EXPECTATIONS)}.")
    if is_ci_profile():
        rows = [r for kind in EXPECTATIONS for r in [x for x in rows if x["expect"] == kind][:CI_BEHAVIOUR_PROMPTS]]
    return rows


@dataclass
class BehaviourReport:
    """One model's replies to the behaviour prompts, and the two shares the system prompt asks for."""

    name: str
    rows: list[dict]  # prompt, expect, reply, declined

    def share(self, expect: str) -> float:
        """Of the prompts expecting ``expect``, the share the model handled that way."""
        rows = [r for r in self.rows if r["expect"] == expect]
        return sum(r["declined"] == (expect == "decline") for r in rows) / len(rows) if rows else float("nan")

    def scores(self) -> dict[str, float]:
        return {"off-topic declined": self.share("decline"), "Xbox answered": self.share("answer")}


@dataclass
class BehaviourComparison:
    base: BehaviourReport
    tuned: BehaviourReport

    def table(self) -> str:
        lines = [f"{'behaviour':<22}{self.base.name:>12}{self.tuned.name:>12}"]
        lines += [f"{metric:<22}{before:>12.0%}{self.tuned.scores()[metric]:>12.0%}"
                  for metric, before in self.base.scores().items()]
        counts = {kind: sum(r["expect"] == kind for r in self.base.rows) for kind in EXPECTATIONS}
        lines.append(f"({counts['decline']} off-topic or opinion prompts, {counts['answer']} Xbox prompts)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def bar_scores(self) -> dict[str, dict[str, float]]:
        """The shares per model, for ``plots.plot_metric_bars``."""
        return {r.name: r.scores() for r in (self.base, self.tuned)}

    def examples(self, n: int = 4) -> Examples:
        """Replies that show the difference: prompts where the two models behaved differently come first."""
        pairs = list(zip(self.base.rows, self.tuned.rows, strict=True))
        pairs.sort(key=lambda p: p[0]["declined"] == p[1]["declined"])
        return Examples([{"prompt": b["prompt"], "expected": b["expect"], self.base.name: b["reply"],
                          self.tuned.name: t["reply"]} for b, t in pairs[:n]])


def behaviour(model, tokenizer, system_prompt: str, prompts: list[dict] | None = None, name: str = "model",
              max_new_tokens: int | None = None) -> BehaviourReport:
    """Ask each behaviour prompt (after ``system_prompt``) and record whether the reply declines."""
    from .generation import generate

    prompts = prompts if prompts is not None else load_behaviour_prompts()
    conversations = [[{"role": "system", "content": system_prompt}, {"role": "user", "content": p["prompt"]}]
                     for p in prompts]
    max_new_tokens = max_new_tokens or (CI_NEW_TOKENS if is_ci_profile() else 48)
    replies = generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens)
    return BehaviourReport(name, [{**p, "reply": reply, "declined": declines(reply)}
                                  for p, reply in zip(prompts, replies, strict=True)])


def compare_behaviour(model, tokenizer, system_prompt: str, prompts: list[dict] | None = None, base=None,
                      names: tuple[str, str] = ("base", "fine-tuned")) -> BehaviourComparison:
    """The behaviour shares of the base model and the fine-tuned one (see ``compare`` for how the base is found)."""
    prompts = prompts if prompts is not None else load_behaviour_prompts()
    before, tuned = base_and_tuned(model, base, lambda m, name: behaviour(m, tokenizer, system_prompt, prompts, name),
                                   names)
    return BehaviourComparison(before, tuned)
