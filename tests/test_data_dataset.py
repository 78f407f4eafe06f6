"""The committed course data set meets its requirements and is exactly what the build script makes."""

import importlib.util
import json
from collections import Counter

import pytest

from phi3lab.data import load_labels, read_conversations, stats, validate
from phi3lab.data.diversity import near_duplicate_pairs, near_duplicate_share
from phi3lab.paths import DATA_DIR

SPLITS = ("train", "validation")


def conversations_and_labels():
    pairs = []
    for name in SPLITS:
        chat = DATA_DIR / f"{name}.jsonl"
        pairs += zip(read_conversations(chat), load_labels(chat, DATA_DIR / f"{name}_labels.jsonl"), strict=True)
    return pairs


def test_files_are_valid_and_pure_chat_format():
    for name in SPLITS:
        report = validate(DATA_DIR / f"{name}.jsonl")
        assert report.ok and not report.warnings, report.summary()
        for line in (DATA_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            assert list(json.loads(line)) == ["messages"]


def test_size_intents_balance_and_multi_turn():
    pairs = conversations_and_labels()
    counts = Counter(label for _, label in pairs)
    assert len(pairs) >= 600
    assert len(counts) >= 10
    assert max(counts.values()) <= 2 * min(counts.values())
    assert sum(len(m) > 3 for m, _ in pairs) / len(pairs) >= 0.15
    assert len(list(read_conversations(DATA_DIR / "validation.jsonl"))) >= 60


def test_split_is_stratified():
    train = Counter(load_labels(DATA_DIR / "train.jsonl", DATA_DIR / "train_labels.jsonl"))
    validation = Counter(load_labels(DATA_DIR / "validation.jsonl", DATA_DIR / "validation_labels.jsonl"))
    assert set(train) == set(validation)
    for label in train:
        assert 0.05 <= validation[label] / (train[label] + validation[label]) <= 0.15


def test_user_turns_are_not_near_duplicates():
    turns = [m["content"] for messages, _ in conversations_and_labels() for m in messages if m["role"] == "user"]
    assert near_duplicate_share(turns, threshold=0.8) <= 0.02


def test_near_duplicate_measure_detects_template_filling():
    templated = [f"My Xbox {device} keeps losing its Wi-Fi connection every evening when we start playing online"
                 for device in ("One", "Series X", "Series S")]
    assert near_duplicate_share(templated + ["How do I redeem a gift card?"]) == 0.75
    assert near_duplicate_pairs(["a b c d e", "a b c d f"], 0.6) == [(0, 1, pytest.approx(4 / 6))]


def test_conversations_are_short(tokenizer):
    lengths = stats(DATA_DIR / "train.jsonl", tokenizer).conversation_tokens
    assert sum(n < 200 for n in lengths) / len(lengths) >= 0.9


def test_build_script_reproduces_the_committed_files(tmp_path):
    spec = importlib.util.spec_from_file_location("build_dataset", DATA_DIR / "source" / "build_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(tmp_path)
    for name in ("train.jsonl", "validation.jsonl", "train_labels.jsonl", "validation_labels.jsonl"):
        assert (tmp_path / name).read_bytes() == (DATA_DIR / name).read_bytes(), name


@pytest.fixture(scope="module")
def tokenizer():
    from phi3lab.models import load_tokenizer

    return load_tokenizer("phi3-tiny-offline")
