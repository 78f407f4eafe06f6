"""Findings and the validation report: what is wrong, on which line, and how to fix it."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from ..errors import Phi3LabError

# Findings kept in memory per severity; beyond this only the per-code counts grow, so a
# gigabyte of garbage still gives a bounded report.
MAX_KEPT_FINDINGS = 10_000
CLEAN_HINT = "run `phi3lab data clean SRC DST` (writes a cleaned copy and lists every dropped or fixed line)"


class DataError(Phi3LabError, ValueError):
    """A data file is unreadable, invalid, or does not match its labels."""


@dataclass(frozen=True)
class Finding:
    line: int  # 1-based physical line in the file; 0 for the file as a whole
    code: str  # stable identifier, e.g. "invalid_json", "unknown_role"
    field: str  # where in the record, e.g. "messages[2].role"; "" for the whole line
    message: str
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        field_part = f" {self.field}:" if self.field else ""
        return f"{where:>10}  {self.code:<20}{field_part} {self.message}"


@dataclass
class TokenStats:
    """Distribution of token counts (linear-interpolation percentiles, as numpy computes them)."""

    count: int = 0
    total: int = 0
    min: int = 0
    mean: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: int = 0

    @classmethod
    def of(cls, values) -> TokenStats:
        import numpy as np

        array = np.asarray(values, dtype=np.int64)
        if array.size == 0:
            return cls()
        p50, p90, p95, p99 = np.percentile(array, [50, 90, 95, 99])
        return cls(count=int(array.size), total=int(array.sum()), min=int(array.min()), mean=float(array.mean()),
                   p50=float(p50), p90=float(p90), p95=float(p95), p99=float(p99), max=int(array.max()))

    def row(self, name: str) -> str:
        return (f"{name:>12}  n={self.count:<7} mean={self.mean:7.1f}  p50={self.p50:7.1f}  p90={self.p90:7.1f}  "
                f"p95={self.p95:7.1f}  p99={self.p99:7.1f}  max={self.max}")


@dataclass
class ValidationReport:
    path: str
    n_lines: int = 0
    n_valid: int = 0
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # code -> number of findings (all, not just kept)
    tokenizer: str | None = None
    max_tokens: int | None = None
    token_stats: dict[str, TokenStats] = field(default_factory=dict)  # "conversation", "system", "user", ...

    @property
    def ok(self) -> bool:
        return self.n_errors == 0

    @property
    def n_errors(self) -> int:
        return sum(n for code, n in self.counts.items() if SEVERITY.get(code, "error") == "error")

    @property
    def n_warnings(self) -> int:
        return sum(n for code, n in self.counts.items() if SEVERITY.get(code) == "warning")

    def add(self, finding: Finding) -> None:
        self.counts[finding.code] += 1
        kept = self.errors if finding.severity == "error" else self.warnings
        if len(kept) < MAX_KEPT_FINDINGS:
            kept.append(finding)

    def summary(self, limit: int = 20) -> str:
        verdict = "valid" if self.ok else "INVALID"
        lines = [f"{self.path}: {verdict} - {self.n_lines} lines, {self.n_valid} valid conversations, "
                 f"{self.n_errors} errors, {self.n_warnings} warnings"]
        for title, findings, total in (("errors", self.errors, self.n_errors),
                                       ("warnings", self.warnings, self.n_warnings)):
            if findings:
                lines.append(f"{title}:")
                lines += [f"  {f}" for f in findings[:limit]]
                if total > limit:
                    lines.append(f"  ... and {total - limit} more {title}")
        if self.token_stats:
            limit_text = f"limit {self.max_tokens}" if self.max_tokens else "no limit known"
            lines.append(f"tokens (tokenizer {self.tokenizer}, chat template, {limit_text}):")
            lines += [f"  {stats.row(name)}" for name, stats in self.token_stats.items()]
        if not self.ok:
            lines.append(f"fix: {self.fix}")
        return "\n".join(lines)

    @property
    def fix(self) -> str:
        """The fix for what is wrong: clean repairs lines, but cannot fill an empty file."""
        if {code for code in self.counts if SEVERITY.get(code, "error") == "error"} == {"no_conversations"}:
            return 'add one conversation per line, {"messages": [...]} (see data/README.md); clean cannot add any'
        return f"{CLEAN_HINT}, or correct the lines above by hand"

    __str__ = summary

    def to_dict(self) -> dict:
        return {
            "path": self.path, "ok": self.ok, "n_lines": self.n_lines, "n_valid": self.n_valid,
            "n_errors": self.n_errors, "n_warnings": self.n_warnings, "counts": dict(sorted(self.counts.items())),
            "errors": [asdict(f) for f in self.errors], "warnings": [asdict(f) for f in self.warnings],
            "tokenizer": self.tokenizer, "max_tokens": self.max_tokens,
            "token_stats": {name: asdict(s) for name, s in self.token_stats.items()},
        }

    def raise_for_errors(self, shown: int = 3) -> ValidationReport:
        """Raise ``DataError`` naming the first few bad lines and the fix; return self when valid."""
        if self.ok:
            return self
        first = "; ".join(f"line {f.line} {f.code}{' ' + f.field if f.field else ''}: {f.message}"
                          for f in self.errors[:shown])
        raise DataError(f"{self.path} has {self.n_errors} error(s), first: {first}. Fix: {self.fix}.")


# Severity of every finding code. Warnings do not make a file invalid.
SEVERITY = {
    "bom": "warning", "crlf": "warning", "blank_line": "warning", "unknown_key": "warning",
    "no_system": "warning", "duplicate": "warning",
    "line_too_long": "error", "encoding": "error", "invalid_json": "error", "not_object": "error",
    "missing_messages": "error", "messages_not_list": "error", "empty_messages": "error",
    "message_not_object": "error", "unknown_message_key": "error", "missing_role": "error",
    "missing_content": "error", "unknown_role": "error", "content_not_string": "error",
    "bad_unicode": "error", "name_not_string": "error", "empty_content": "error", "no_assistant": "error", "system_not_first": "error",
    "first_not_user": "error", "not_alternating": "error", "last_not_assistant": "error", "too_long": "error",
    "no_conversations": "error",
}
