"""Intent labels, kept beside a chat file so the chat file stays in the pure upload format.

A labels file has one JSON object per conversation: ``{"line": <1-based line in the chat file>,
"intent": "<label>"}``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .records import iter_raw_lines
from .report import DataError

LABEL_HINT = ("labels must come from the same version of the chat file; after `phi3lab data clean` or "
              "`split`, use the labels file they wrote (pass --labels to carry labels along)")


def read_label_map(labels_path: str | os.PathLike) -> dict[int, str]:
    """{chat line: intent} from a labels file, with errors naming the labels file's own line."""
    labels: dict[int, str] = {}
    for raw in iter_raw_lines(labels_path):
        if raw.data is None or not raw.data.strip():
            continue
        try:
            entry = json.loads(raw.data.decode("utf-8"))
            line, intent = entry["line"], entry["intent"]
        except (ValueError, TypeError, KeyError, RecursionError):
            raise DataError(f"{labels_path} line {raw.number}: expected {{\"line\": <int>, \"intent\": \"<label>\"}}"
                            ". Fix: correct that line.") from None
        if not isinstance(line, int) or isinstance(line, bool) or line < 1 or not isinstance(intent, str) or not intent:
            raise DataError(f"{labels_path} line {raw.number}: \"line\" must be a positive integer and \"intent\" a "
                            f"non-empty string. Fix: correct that line.")
        if line in labels:
            raise DataError(f"{labels_path} line {raw.number}: chat line {line} is labelled twice. Fix: keep one.")
        labels[line] = intent
    return labels


def load_labels(chat_path: str | os.PathLike, labels_path: str | os.PathLike) -> list[str]:
    """Labels in the order of ``read_conversations(chat_path)``: one per valid conversation.

    Raises ``DataError`` when a conversation has no label, or a label points at a line that is not
    a valid conversation of the chat file (the usual sign of labels from another version of it).
    """
    from .validate import iter_valid

    labels = read_label_map(labels_path)
    ordered, missing = [], []
    for line, _ in iter_valid(chat_path):
        if line in labels:
            ordered.append(labels.pop(line))
        else:
            missing.append(line)
    problems = []
    if missing:
        problems.append(f"{len(missing)} conversation(s) have no label (chat lines {_lines(missing)})")
    if labels:
        problems.append(f"{len(labels)} label(s) point at lines that are not conversations in the chat file "
                        f"(lines {_lines(sorted(labels))})")
    if problems:
        raise DataError(f"{labels_path} does not match {Path(chat_path).name}: {'; '.join(problems)}. "
                        f"Fix: {LABEL_HINT}.")
    return ordered


def write_labels(handle, labels: list[str]) -> None:
    for number, intent in enumerate(labels, start=1):
        handle.write(json.dumps({"line": number, "intent": intent}) + "\n")


def _lines(numbers: list[int], shown: int = 5) -> str:
    text = ", ".join(map(str, numbers[:shown]))
    return text + (", ..." if len(numbers) > shown else "")
