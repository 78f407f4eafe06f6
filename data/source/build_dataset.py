"""Build the course data set from the hand-written conversations in ``conversations.txt``.

    python data/source/build_dataset.py

Every conversation is written by hand (one per block in conversations.txt); this script only adds
the system prompt, shuffles with a fixed seed, checks the data set's requirements, and writes a
stratified 90/10 train/validation split with ``phi3lab.data.split``. Running it twice gives
byte-identical files.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

from phi3lab.data import split, validate
from phi3lab.data.diversity import near_duplicate_share
from phi3lab.paths import DATA_DIR

SOURCE = Path(__file__).with_name("conversations.txt")
SEED = 42
VALIDATION_FRACTION = 0.1
# The seeds' Xbox support agent (their system prompt, in English).
SYSTEM_PROMPT = ("You are an Xbox customer support agent whose primary goal is to help users with issues they "
                 "are experiencing with their Xbox devices. You are friendly and concise. You only provide "
                 "factual answers to queries, and do not provide answers that are not related to Xbox.")
ROLE_OF = {"U:": "user", "A:": "assistant"}


def parse(text: str) -> list[tuple[str, list[dict]]]:
    """(intent, messages) for every block; raises on a malformed block, naming its line."""
    conversations, intent, block = [], None, []

    def close(line_no: int) -> None:
        if block:
            roles = [m["role"] for m in block]
            if roles[0] != "user" or roles[-1] != "assistant" or any(a == b for a, b in zip(roles, roles[1:], strict=False)):
                raise ValueError(f"{SOURCE.name}: block ending at line {line_no} does not alternate U:/A:")
            conversations.append((intent, [{"role": "system", "content": SYSTEM_PROMPT}, *block]))
            block.clear()

    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("#"):
            continue
        if line.startswith("== "):
            close(number)
            intent = line[3:].strip()
        elif not line.strip():
            close(number)
        elif line[:2] in ROLE_OF and intent:
            block.append({"role": ROLE_OF[line[:2]], "content": line[2:].strip()})
        else:
            raise ValueError(f"{SOURCE.name} line {number}: expected '== intent', 'U: ...', 'A: ...' or a blank line")
    close(number)
    return conversations


def check(conversations: list[tuple[str, list[dict]]]) -> dict:
    """The data set's requirements; returns the measured numbers, raises when one is missed."""
    counts = Counter(intent for intent, _ in conversations)
    user_turns = [m["content"] for _, messages in conversations for m in messages if m["role"] == "user"]
    facts = {
        "conversations": len(conversations),
        "intents": len(counts),
        "balance_ratio": round(max(counts.values()) / min(counts.values()), 3),
        "multi_turn_share": round(sum(len(m) > 3 for _, m in conversations) / len(conversations), 3),
        "user_turns": len(user_turns),
        "near_duplicate_user_turn_share": round(near_duplicate_share(user_turns, 0.8), 4),
    }
    rules = {"conversations": facts["conversations"] >= 600, "intents": facts["intents"] >= 10,
             "balance_ratio": facts["balance_ratio"] <= 2.0, "multi_turn_share": facts["multi_turn_share"] >= 0.15,
             "near_duplicate_user_turn_share": facts["near_duplicate_user_turn_share"] <= 0.02}
    failed = [name for name, ok in rules.items() if not ok]
    if failed:
        raise SystemExit(f"data set requirements not met: {failed}: {facts}")
    return facts


def build(out_dir: Path = DATA_DIR) -> dict:
    conversations = parse(SOURCE.read_text(encoding="utf-8"))
    facts = check(conversations)
    random.Random(SEED).shuffle(conversations)
    with tempfile.TemporaryDirectory() as tmp:
        chat, labels = Path(tmp) / "all.jsonl", Path(tmp) / "all_labels.jsonl"
        chat.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for _, m in conversations),
                        encoding="utf-8")
        labels.write_text("".join(json.dumps({"line": n, "intent": intent}) + "\n"
                                  for n, (intent, _) in enumerate(conversations, start=1)), encoding="utf-8")
        validate(chat).raise_for_errors()
        result = split(chat, out_dir / "train.jsonl", out_dir / "validation.jsonl", labels=labels,
                       validation_fraction=VALIDATION_FRACTION, seed=SEED)
    return {**facts, "train": result.n_train, "validation": result.n_validation}


if __name__ == "__main__":
    print(json.dumps(build(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA_DIR), indent=2))
