"""``clean``: write a cleaned copy of a chat JSONL file and say what happened to every line."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field

from ..io import atomic_open
from ..paths import repo_path
from .labels import read_label_map, write_labels
from .output import refuse_collisions
from .records import RECORD_KEYS, ROLES
from .report import MAX_KEPT_FINDINGS, DataError
from .tokens import TokenCounter, resolve_tokenizer
from .validate import Scanned, scan


@dataclass
class CleanReport:
    src: str
    dst: str
    labels_dst: str | None = None
    n_read: int = 0
    n_kept: int = 0
    dropped: list[tuple[int, str, str]] = field(default_factory=list)  # (line, code, why)
    fixed: list[tuple[int, str]] = field(default_factory=list)  # (line, what changed)
    counts: Counter = field(default_factory=Counter)  # "dropped: <code>" / "fixed: <what>" -> lines

    def drop(self, line: int, code: str, why: str) -> None:
        self.counts[f"dropped: {code}"] += 1
        if len(self.dropped) < MAX_KEPT_FINDINGS:
            self.dropped.append((line, code, why))

    def fix(self, line: int, what: str) -> None:
        self.counts[f"fixed: {_kind(what)}"] += 1
        if len(self.fixed) < MAX_KEPT_FINDINGS:
            self.fixed.append((line, what))

    @property
    def n_dropped(self) -> int:
        return sum(n for key, n in self.counts.items() if key.startswith("dropped"))

    def summary(self, limit: int = 50) -> str:
        lines = [f"{self.src} -> {self.dst}: read {self.n_read} lines, kept {self.n_kept} conversations, "
                 f"dropped {self.n_dropped} lines, fixed {len({line for line, _ in self.fixed})} lines"]
        if self.dropped:
            lines.append("dropped:")
            lines += [f"  line {line:>5}  {code:<20} {why}" for line, code, why in self.dropped[:limit]]
            lines += [f"  ... and {self.n_dropped - limit} more"] if self.n_dropped > limit else []
        if self.fixed:
            lines.append("fixed:")
            lines += [f"  line {line:>5}  {what}" for line, what in self.fixed[:limit]]
            lines += [f"  ... and {len(self.fixed) - limit} more"] if len(self.fixed) > limit else []
        if self.labels_dst:
            lines.append(f"labels for the kept conversations: {self.labels_dst}")
        lines.append(f"the input file {self.src} was not modified")
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        return {"src": self.src, "dst": self.dst, "labels_dst": self.labels_dst, "n_read": self.n_read,
                "n_kept": self.n_kept, "n_dropped": self.n_dropped,
                "dropped": [{"line": ln, "code": c, "why": w} for ln, c, w in self.dropped],
                "fixed": [{"line": ln, "what": w} for ln, w in self.fixed], "counts": dict(sorted(self.counts.items()))}


def clean(src: str | os.PathLike, dst: str | os.PathLike, tokenizer=None, max_tokens: int | None = None,
          system_prompt: str | None = None, labels: str | os.PathLike | None = None,
          labels_dst: str | os.PathLike | None = None) -> CleanReport:
    """Write the valid, de-duplicated conversations of ``src`` to ``dst``; ``src`` is never touched.

    Fixed in place: a byte-order mark, CRLF endings, keys outside the chat format, role names in the
    wrong case (``"User"``); with ``system_prompt``, conversations without one get it. Dropped (with
    the reason): unreadable lines, blank lines, every structural error, repeats of an earlier
    conversation, and, with a ``tokenizer``, conversations over ``max_tokens`` (default: the
    model's context). ``labels`` (the labels file of ``src``) are carried to ``labels_dst``.
    """
    shown = CleanReport(str(src), str(dst), str(labels_dst) if labels_dst else None)  # paths as the learner wrote them
    src, dst, labels, labels_dst = (repo_path(p) if p is not None else None for p in (src, dst, labels, labels_dst))
    refuse_collisions([src, labels], [dst, labels_dst])
    tokenizer, context = resolve_tokenizer(tokenizer)
    max_tokens = max_tokens or context
    label_map = read_label_map(labels) if labels is not None else None
    if label_map is not None and labels_dst is None:
        raise DataError("labels given without labels_dst. Fix: pass labels_dst (where the kept conversations' "
                        "labels go).")
    report = shown
    kept_labels: list[str] = []
    counter = TokenCounter(tokenizer) if tokenizer is not None else None

    pending_fixes: dict[int, list[str]] = {}  # fixes are reported only for lines that are kept

    def keep(batch) -> None:
        for line, messages, tokens in batch:
            fixes = pending_fixes.pop(line)
            if max_tokens and tokens > max_tokens:
                report.drop(line, "too_long", f"{tokens} tokens with the chat template, over {max_tokens}")
                continue
            for what in fixes:
                report.fix(line, what)
            out.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
            report.n_kept += 1
            if label_map is not None:
                if line not in label_map:
                    raise DataError(f"{labels} has no label for line {line} of {src}. Fix: label every "
                                    f"conversation, one {{\"line\": n, \"intent\": ...}} per line.")
                kept_labels.append(label_map[line])

    with atomic_open(dst) as out:
        for item in scan(src, fix=lambda record: fix_record(record, system_prompt)):
            report.n_read += 1
            if _dropped(item, report):
                continue
            pending_fixes[item.raw.number] = _line_fixes(item) + item.fixes
            line, messages = item.raw.number, item.record["messages"]
            keep(counter.add(line, messages) if counter is not None else [(line, messages, 0)])
        if counter is not None:
            keep(counter.flush())
        if report.n_kept == 0:  # raised inside the block, so dst is left as it was: never an empty training file
            first = min(report.dropped, default=None)
            why = f"; first: line {first[0]} {first[1]}: {first[2]}" if first else ""
            raise DataError(f"{src}: no conversation could be kept ({report.n_read} line(s) read, none valid{why}), "
                            f"so {dst} was not written. Fix: `phi3lab data validate {src}` lists every problem.")
    report.dropped.sort()
    report.fixed.sort(key=lambda entry: entry[0])
    if label_map is not None:
        with atomic_open(labels_dst) as handle:
            write_labels(handle, kept_labels)
    return report


def fix_record(record, system_prompt: str | None = None) -> list[str]:
    """Repair what can be repaired without guessing; returns what was changed."""
    if not isinstance(record, dict):
        return []
    fixes = []
    for key in [k for k in record if k not in RECORD_KEYS]:
        del record[key]
        fixes.append(f"removed unknown key {json.dumps(key, ensure_ascii=True)}")
    messages = record.get("messages")
    if not isinstance(messages, list):
        return fixes
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if isinstance(role, str) and role not in ROLES and role.strip().lower() in ROLES:
            message["role"] = role.strip().lower()
            fixes.append(f"messages[{index}].role {json.dumps(role, ensure_ascii=True)} -> \"{message['role']}\"")
    first = messages[0] if messages else None
    if system_prompt and isinstance(first, dict) and first.get("role") != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
        fixes.append("added the system prompt")
    return fixes


def _dropped(item: Scanned, report: CleanReport) -> bool:
    line = item.raw.number
    errors = [f for f in item.findings if f.severity == "error"]
    if errors:
        first = errors[0]
        report.drop(line, first.code, f"{first.field + ': ' if first.field else ''}{first.message}")
    elif item.record is None:
        report.drop(line, "blank_line", "empty line")
    elif any(f.code == "duplicate" for f in item.findings):
        report.drop(line, "duplicate", next(f.message for f in item.findings if f.code == "duplicate"))
    else:
        return False
    return True


def _line_fixes(item: Scanned) -> list[str]:
    return (["removed the byte-order mark"] if item.raw.bom else []) + \
           (["CRLF line ending -> LF"] if item.raw.crlf else [])


def _kind(what: str) -> str:
    """The kind of a fix, without its specifics: 'messages[2].role "User" -> ...' -> 'messages.role'."""
    return re.sub(r'\[\d+\]|\s*".*', "", what)
