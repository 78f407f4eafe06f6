"""Speed of validation perplexity (``phi3lab.evaluation.language_metrics``) for 200 conversations.

    python benchmarks/eval_perplexity.py [--conversations 200] [--threads 2] [--json out.json]

Measured in one run, with the offline stand-in on CPU, on the same conversations (the course
validation set, topped up from the training set to reach the count):
- baseline: one conversation at a time through the model's own ``labels=`` loss (full output
  layer on every token), token-weighted;
- batched: length-sorted batches with right padding, output layer only on assistant tokens;
- ours (the default): batched, plus the shared system prompt run once and its KV cache reused.
All three must give the same perplexity. Goal: 200 conversations in at most 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from itertools import islice

import torch

from phi3lab.data import read_conversations
from phi3lab.evaluation import language_metrics
from phi3lab.models import OFFLINE_MODEL, load_model, load_tokenizer
from phi3lab.paths import DATA_DIR
from phi3lab.training.chat_format import IGNORE_INDEX, tokenize_conversation

GOAL_SECONDS = 60.0


def course_conversations(n: int) -> list[list[dict]]:
    validation = list(read_conversations(DATA_DIR / "validation.jsonl"))
    return validation + list(islice(read_conversations(DATA_DIR / "train.jsonl"), max(0, n - len(validation))))


def baseline(model, tokenizer, conversations) -> tuple[float, int]:
    """Per-conversation loss from the model itself: the straightforward way to compute perplexity."""
    total = count = 0
    with torch.inference_mode():
        for messages in conversations:
            row = tokenize_conversation(tokenizer, messages, 2048)
            labels = torch.tensor([row["labels"]])
            n = int((labels[:, 1:] != IGNORE_INDEX).sum())
            total += model(input_ids=torch.tensor([row["input_ids"]]), labels=labels).loss.item() * n
            count += n
    return total / count, count


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the goal is for 2 cores)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(OFFLINE_MODEL, device="cpu"), load_tokenizer(OFFLINE_MODEL)
    conversations = course_conversations(args.conversations)
    language_metrics(model, tokenizer, conversations[:4])  # warm-up: first-call allocations

    ours, ours_s = timed(lambda: language_metrics(model, tokenizer, conversations, batch_size=args.batch_size))
    batched, batched_s = timed(lambda: language_metrics(model, tokenizer, conversations,
                                                        batch_size=args.batch_size, share_prefix=False))
    (base_loss, base_tokens), base_s = timed(lambda: baseline(model, tokenizer, conversations))
    assert ours.tokens == batched.tokens == base_tokens, "the three paths scored different tokens"
    for loss in (ours.loss, batched.loss):
        assert math.isclose(loss, base_loss, rel_tol=1e-4), f"perplexity differs: {loss} vs {base_loss}"

    results = {
        "conversations": len(conversations), "assistant_tokens": base_tokens, "threads": args.threads,
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip(),
        "perplexity": round(math.exp(ours.loss), 4),
        "baseline_seconds": round(base_s, 2), "batched_seconds": round(batched_s, 2), "ours_seconds": round(ours_s, 2),
        "speedup_vs_baseline": round(base_s / ours_s, 2), "goal_seconds": GOAL_SECONDS,
        "meets_goal": ours_s <= GOAL_SECONDS,
    }
    print(json.dumps(results, indent=2))
    print(f"""
| perplexity of {len(conversations)} conversations, {args.threads} threads | seconds | conversations/s |
| --- | ---: | ---: |
| baseline: one conversation at a time, model's own loss | {base_s:.1f} | {len(conversations) / base_s:.1f} |
| batched, length-sorted, output layer on assistant tokens only | {batched_s:.1f} | {len(conversations) / batched_s:.1f} |
| ours: batched + shared system-prompt KV cache | {ours_s:.1f} | {len(conversations) / ours_s:.1f} |

Same perplexity on all three paths ({results['perplexity']}). Goal {GOAL_SECONDS:.0f} s: \
{'met' if results['meets_goal'] else 'NOT met'}; {results['speedup_vs_baseline']}x the baseline.""")
    if args.json:
        from phi3lab.io import atomic_write_json

        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
