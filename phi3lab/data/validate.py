"""``validate``: every problem in a chat JSONL file, with line numbers; and streaming readers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .records import RawLine, check_record, finding, fingerprint, is_error, iter_raw_lines, line_findings, parse
from .report import CLEAN_HINT, DataError, Finding, TokenStats, ValidationReport
from .tokens import TokenCounter, resolve_tokenizer, tokenizer_name

NO_CONVERSATIONS = "the file holds no conversations: it is empty or has only blank lines"


@dataclass(slots=True)
class Scanned:
    raw: RawLine
    record: object | None  # the parsed (and possibly fixed) line; None when unreadable or blank
    findings: list[Finding] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.record is not None and not is_error(self.findings)


def scan(path: str | os.PathLike, fix: Callable[[object], list[str]] | None = None) -> Iterator[Scanned]:
    """Read, parse, optionally fix, and check each line; flags repeats of earlier valid conversations."""
    first_seen: dict[int, int] = {}
    for raw in iter_raw_lines(path):
        item = Scanned(raw, None, line_findings(raw))
        if raw.data is not None and not raw.data.strip():
            item.findings.append(finding(raw.number, "blank_line", "", "empty line; clean removes it"))
        elif raw.data is not None:
            record, error = parse(raw)
            if error:
                item.findings.append(error)
            else:
                item.fixes = fix(record) if fix else []
                item.record = record
                item.findings += check_record(record, raw.number, raw.data)
        if item.valid:
            key = fingerprint(item.record["messages"])
            if key in first_seen:
                item.findings.append(finding(raw.number, "duplicate", "messages",
                                             f"same conversation as line {first_seen[key]}"))
            else:
                first_seen[key] = raw.number
        yield item


def validate(path: str | os.PathLike, tokenizer=None, max_tokens: int | None = None) -> ValidationReport:
    """Check every line of a chat JSONL file; never raises for bad content, only for a missing or
    unreadable file (a folder, no permission, UTF-16/32 text).

    ``tokenizer``: the model's tokenizer (or a catalog model name). With it, each conversation is
    counted through the chat template and checked against ``max_tokens`` (default: the model's
    context length), and per-role token statistics are added to the report.
    """
    tokenizer, context = resolve_tokenizer(tokenizer)
    max_tokens = max_tokens or context
    report = ValidationReport(str(path), max_tokens=max_tokens,
                              tokenizer=tokenizer_name(tokenizer) if tokenizer is not None else None)
    counter = TokenCounter(tokenizer) if tokenizer is not None else None
    crlf_lines, first_crlf = 0, 0
    for item in scan(path):
        report.n_lines += 1
        if item.raw.crlf:
            crlf_lines += 1
            first_crlf = first_crlf or item.raw.number
        for found in item.findings:
            report.add(found)
        if item.valid:
            report.n_valid += 1
            if counter is not None:
                _check_lengths(counter.add(item.raw.number, item.record["messages"]), report)
    if counter is not None:
        _check_lengths(counter.flush(), report)
        report.token_stats = {name: TokenStats.of(values) for name, values in counter.lengths.items() if values}
    if crlf_lines:
        report.add(finding(first_crlf, "crlf", "", f"{crlf_lines} line(s) end in CRLF (Windows line endings), "
                                                   f"first here; clean converts them to LF"))
    if report.n_valid == 0 and report.n_errors == 0:  # nothing wrong on any line, yet nothing to train on
        report.add(finding(0, "no_conversations", "", f"{NO_CONVERSATIONS} ({report.n_lines} line(s))"))
    _sort_findings(report)
    return report


def _check_lengths(counted, report: ValidationReport) -> None:
    for line, _, tokens in counted:
        if report.max_tokens and tokens > report.max_tokens:
            report.n_valid -= 1
            report.add(finding(line, "too_long", "messages", f"{tokens} tokens with the chat template, over the "
                                                             f"limit of {report.max_tokens}; shorten or drop it"))


def _sort_findings(report: ValidationReport) -> None:
    report.errors.sort(key=lambda f: f.line)
    report.warnings.sort(key=lambda f: f.line)


def read_conversations(path: str | os.PathLike, on_error: str = "raise") -> Iterator[list[dict]]:
    """Stream the message lists of a chat JSONL file, one conversation at a time.

    ``on_error="raise"`` (default) stops at the first invalid line with a ``DataError`` naming it
    and the fix; ``"skip"`` silently passes over invalid lines. Blank lines are always skipped.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")
    for _, messages in iter_valid(path, on_error):
        yield messages


def iter_valid(path: str | os.PathLike, on_error: str = "raise") -> Iterator[tuple[int, list[dict]]]:
    """(line number, messages) of each valid conversation; see ``read_conversations``.

    With ``on_error="raise"`` a file without any conversation is an error too: training on it could only fail later.
    """
    found = False
    for item in scan(path):
        if item.valid:
            found = True
            yield item.raw.number, item.record["messages"]
        elif on_error == "raise" and is_error(item.findings):
            bad = next(f for f in item.findings if f.severity == "error")
            raise DataError(f"{path} line {bad.line} is invalid ({bad.code}{' ' + bad.field if bad.field else ''}: "
                            f"{bad.message}). Fix: {CLEAN_HINT}; `phi3lab data validate {path}` lists every "
                            f"problem.")
    if not found and on_error == "raise":
        raise DataError(f"{path}: {NO_CONVERSATIONS}. Fix: add one chat conversation per line, "
                        f'{{"messages": [{{"role": "user", ...}}, {{"role": "assistant", ...}}]}} (see data/README.md)')
