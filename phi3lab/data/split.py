"""``split``: a seeded train/validation split, stratified by intent when labels are given.

This is what the Azure AI Foundry wizard's "automatic split" option does for you; doing it here
keeps the validation set fixed, so local and Azure runs are evaluated on the same conversations.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..io import atomic_open
from ..paths import repo_path
from .labels import load_labels, write_labels
from .output import refuse_collisions
from .report import DataError
from .validate import iter_valid


@dataclass
class SplitResult:
    train_path: str
    validation_path: str
    n_train: int
    n_validation: int
    train_labels_path: str | None = None
    validation_labels_path: str | None = None
    label_counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # label -> (train, validation)

    def summary(self) -> str:
        total = self.n_train + self.n_validation
        lines = [f"train: {self.n_train} conversations -> {self.train_path}",
                 f"validation: {self.n_validation} conversations ({self.n_validation / max(total, 1):.0%}) -> "
                 f"{self.validation_path}"]
        if self.label_counts:
            lines.append(f"{'label':<22}{'train':>7}{'validation':>12}")
            lines += [f"{label:<22}{t:>7}{v:>12}" for label, (t, v) in sorted(self.label_counts.items())]
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        return {**self.__dict__, "label_counts": {k: list(v) for k, v in sorted(self.label_counts.items())}}


def split(path: str | os.PathLike, train_path: str | os.PathLike, validation_path: str | os.PathLike,
          labels: str | os.PathLike | None = None, validation_fraction: float = 0.1, seed: int = 42,
          train_labels: str | os.PathLike | None = None,
          validation_labels: str | os.PathLike | None = None) -> SplitResult:
    """Write the valid conversations of ``path`` into a train and a validation file.

    Each output keeps the input's order. With ``labels`` the split is stratified (every intent
    gets the same share in validation) and the labels are written beside the outputs, by default
    as ``<train stem>_labels.jsonl`` and ``<validation stem>_labels.jsonl``.
    """
    from sklearn.model_selection import train_test_split

    if not 0 < validation_fraction < 1:
        raise DataError(f"validation_fraction={validation_fraction} is out of range. Fix: pick a value between 0 "
                        f"and 1 (exclusive), e.g. 0.1.")
    shown = (str(train_path), str(validation_path))  # paths as the learner wrote them
    path, train_path, validation_path, labels, train_labels, validation_labels = (
        repo_path(p) if p is not None else None
        for p in (path, train_path, validation_path, labels, train_labels, validation_labels))
    if labels is not None:
        train_labels = train_labels or _labels_beside(train_path)
        validation_labels = validation_labels or _labels_beside(validation_path)
    refuse_collisions([path, labels], [train_path, validation_path, train_labels, validation_labels])
    n = sum(1 for _ in iter_valid(path))  # also stops at the first invalid line, naming it
    label_list = load_labels(path, labels) if labels is not None else None
    if n < 2:
        raise DataError(f"{path} has {n} conversation(s); a split needs at least 2.")
    try:
        _, held_out = train_test_split(range(n), test_size=validation_fraction, random_state=seed,
                                       stratify=label_list)
    except ValueError as exc:
        raise DataError(f"cannot split {path}: {exc}. Fix: every label needs at least 2 conversations, and the "
                        f"validation share must leave at least one conversation per label on each side "
                        f"(or split without labels).") from None
    held_out = set(held_out)
    train_out, val_out = [], []
    with atomic_open(train_path) as train, atomic_open(validation_path) as validation:
        for index, (_, messages) in enumerate(iter_valid(path)):
            chosen, bucket = (validation, val_out) if index in held_out else (train, train_out)
            chosen.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
            bucket.append(index)
    result = SplitResult(*shown, len(train_out), len(val_out))
    if label_list is not None:
        for target, indices in ((train_labels, train_out), (validation_labels, val_out)):
            with atomic_open(target) as handle:
                write_labels(handle, [label_list[i] for i in indices])
        train_counts = Counter(label_list[i] for i in train_out)
        val_counts = Counter(label_list[i] for i in val_out)
        result.train_labels_path, result.validation_labels_path = str(train_labels), str(validation_labels)
        result.label_counts = {label: (train_counts[label], val_counts[label]) for label in set(label_list)}
    return result


def _labels_beside(chat_path: str | os.PathLike) -> Path:
    chat_path = Path(chat_path)
    return chat_path.with_name(f"{chat_path.stem}_labels.jsonl")
