"""Chat-JSONL data for fine-tuning: validate, clean, split, statistics and cost.

The format (the one Azure AI Foundry's chat-completion fine-tuning takes) is one JSON object
per line: ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``.
Intent labels live in a separate file (see ``labels``) so the chat files upload unchanged.
Every function streams its input line by line and never modifies it.
"""

from .clean import CleanReport, clean
from .diversity import near_duplicate_pairs, near_duplicate_share
from .labels import load_labels, read_label_map
from .records import MAX_LINE_BYTES, ROLES
from .report import DataError, Finding, TokenStats, ValidationReport
from .split import SplitResult, split
from .stats import PRICE_SOURCE, CostEstimate, DataStats, estimate_cost, stats
from .validate import read_conversations, validate

__all__ = [
    "MAX_LINE_BYTES", "PRICE_SOURCE", "ROLES", "CleanReport", "CostEstimate", "DataError", "DataStats", "Finding",
    "SplitResult", "TokenStats", "ValidationReport", "clean", "estimate_cost", "load_labels", "near_duplicate_pairs",
    "near_duplicate_share", "read_conversations",
    "read_label_map", "split", "stats", "validate",
]
