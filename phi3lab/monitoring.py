"""A local log of every endpoint call the course makes, and summaries of it.

One JSON object per line in ``runs/monitoring/endpoint_calls.jsonl`` (``phi3lab.runs.call_log_file``,
under ``PHI3LAB_RUNS`` when set): time, endpoint name and kind, the prompt, latency, token counts,
status, and an error message when there was one. Keys and headers are never written: a record is
built field by field from the call's result, and prompt and error text pass through
``phi3lab.secrets.mask_secrets`` first.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

from .runs import call_log_file
from .secrets import mask_secrets

PROMPT_CHARS = 500  # enough to recognise a prompt; keeps the log small

# What to watch in production, shown by the notebook next to the plots.
PRODUCTION_SIGNALS = {
    "p95 latency": "rising p95 with flat volume means the model or the service slowed down",
    "error rate": "429 = rate limit reached (slow down or raise the quota); 5xx = service problem; "
                  "400 from the content filter = a prompt or answer was blocked",
    "token volume": "what you pay for on serverless endpoints; sudden growth means a client loops or prompts grew",
    "finish reason 'length'": "answers cut off at max_tokens; raise it or ask for shorter answers",
    "quality drift": "re-run the evaluation set regularly; inputs change over time",
}


class CallLog:
    """Appends call records to a JSONL file (``path=None`` keeps them in memory only; see ``default_log``)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.records: list[dict] = []
        self._lock = threading.Lock()

    def record(self, endpoint, result) -> dict:
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "endpoint": endpoint.name,
            "kind": endpoint.kind,
            "prompt": mask_secrets(result.prompt)[:PROMPT_CHARS],
            "latency_s": round(result.latency_s, 4),
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "status": result.status,
            "error": mask_secrets(result.error) if result.error else None,
        }
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self.records.append(entry)
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # Append mode with one write per line: concurrent writers never interleave a line,
                # and an interrupted run loses at most its last line (read_log skips a torn one).
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(line)
        return entry


_DEFAULT: CallLog | None = None


def default_log() -> CallLog:
    """The course's shared call log: one per process and runs root (``PHI3LAB_RUNS`` is read on every call)."""
    global _DEFAULT
    path = call_log_file()
    if _DEFAULT is None or _DEFAULT.path != path:
        _DEFAULT = CallLog(path)
    return _DEFAULT


def read_log(path: str | Path | None = None, since: datetime | None = None) -> list[dict]:
    """Records from a call log (default: the course's), oldest first; lines that are not valid JSON records are skipped."""
    path = Path(path) if path else call_log_file()
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
            entry["_time"] = datetime.fromisoformat(entry["time"])
        except (ValueError, KeyError, TypeError):
            continue
        if since is None or entry["_time"] >= since:
            records.append(entry)
    return records


def summarize(records: list[dict]) -> list[dict]:
    """Per endpoint: calls, errors, error rate, p50/p95 latency of successful calls, tokens."""
    rows = []
    for name in sorted({r["endpoint"] for r in records}):
        mine = [r for r in records if r["endpoint"] == name]
        ok = [r["latency_s"] for r in mine if r["status"] == 200]
        errors = len(mine) - len(ok)
        rows.append({"endpoint": name, "calls": len(mine), "errors": errors,
                     "error_rate": round(errors / len(mine), 3),
                     "p50_s": _round(percentile(ok, 50)), "p95_s": _round(percentile(ok, 95)),
                     "prompt_tokens": sum(r.get("prompt_tokens") or 0 for r in mine),
                     "completion_tokens": sum(r.get("completion_tokens") or 0 for r in mine)})
    return rows


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear interpolation as numpy does; None when there are no values."""
    import numpy as np

    return float(np.percentile(values, q)) if values else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
