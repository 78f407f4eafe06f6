"""One vocabulary for secrets: every format is both masked in runtime output and flagged by the notebook scan."""

from __future__ import annotations

import pytest

from phi3lab.azure.roles import ROLE_NAMES
from phi3lab.course import find_secrets as course_find_secrets
from phi3lab.paths import DATA_DIR
from phi3lab.secrets import PATTERNS, find_secrets, mask, mask_secrets

SAMPLES = [(pattern, sample) for pattern in PATTERNS for sample in pattern.samples]


def secret_of(pattern, sample: str) -> str:
    match = pattern.regex.search(sample)
    assert match and pattern.looks_real(match), f"the sample of {pattern.kind!r} does not match its own pattern"
    return match.group("secret")


@pytest.mark.parametrize("pattern, sample", SAMPLES, ids=[f"{p.kind}-{i}" for i, (p, _) in enumerate(SAMPLES)])
def test_every_sample_is_masked_and_detected(pattern, sample):
    secret = secret_of(pattern, sample)
    masked = mask_secrets(sample)
    assert secret not in masked and secret[pattern.keep:] not in masked, masked
    findings = find_secrets(sample)
    assert pattern.kind in [kind for kind, _ in findings], findings
    assert all(secret not in shown for _, shown in findings)  # a finding shows the masked text only


def test_every_pattern_has_a_sample():
    assert all(pattern.samples for pattern in PATTERNS)


LEAKS = [
    "subscription: 3f2b8c1e-9a4d-4e6f-b1c2-7d8e9f0a1b2c",
    "/subscriptions/3F2B8C1E-9A4D-4E6F-B1C2-7D8E9F0A1B2C/resourceGroups/rg",
    "Authorization: Bearer eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL21h.sig",
    "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=q1w2e3r4t5y6u7i8o9p0asdfghjk==;",
    "https://x.blob.core.windows.net/c/f?sv=2024&sig=Abc123def456ghi789jkl0mn%3D",
    "api_key = 'a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6'",
    '{"primaryKey": "9f8e7d6c5b4a39281706f5e4d3c2b1a0"}',
    "token hf_abcdefghijklmnopqrstuvwxyz0123456789",
    "EndpointAuthKeys(primary_key='Zx9Yw8Vu7Ts6Rq5P', secondary_key='Po4Nm3Lk2Ji1Hg0F')",
    "key=supersecret42value",
]


@pytest.mark.parametrize("text", LEAKS)
def test_leaks_are_caught_and_hidden(text):
    assert find_secrets(text), text
    assert mask_secrets(text) != text


HARMLESS = [
    "role: Azure AI Developer (64702f94-c441-49e6-a78b-ef80e0188fee)",
    "api_key = '<your key>'  # Authorization: Bearer <token>",
    "key: ****a1b2 (masked)",
    "api_key = 'your-api-key-goes-here-please'",
    "pad_token: <|endoftext|> id 0, max_new_tokens=256, learning_rate: 0.0002",
    "model_id 9f8e7d6c5b4a39281706f5e4d3c2b1a0 sha256 3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b",
    "sorted(rows, key=operator.itemgetter) and token: 12345678 tokens",
    "id chatcmpl-0123456789abcdef0123456789abcdef, data asset phi3lab-train:3f2b8c1e9a4d4e6f",
    "https://phi3lab-chat.eastus2.models.ai.azure.com/v1/chat/completions?api-version=2024-05-01-preview",
    "git+https://github.com/huggingface/transformers@v5.23.0 and postgres://localhost:5432/db",
    "The password: reset it from Settings > Security, then sign in again.",
    "task-specific-adapter-for-customer-support and sk-learn",
]


@pytest.mark.parametrize("text", HARMLESS)
def test_harmless_text_is_neither_flagged_nor_changed(text):
    assert find_secrets(text) == []
    assert mask_secrets(text) == text


def test_the_placeholder_subscription_is_shortened_like_a_real_one_but_is_no_finding():
    text = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/your-resource-group"
    assert mask_secrets(text) == "/subscriptions/0000…/resourceGroups/your-resource-group"
    assert find_secrets(text) == []


def test_public_role_guids_stay_readable():
    text = " ".join(ROLE_NAMES)
    assert mask_secrets(text) == text and find_secrets(text) == []


def test_the_course_dataset_trips_nothing():
    files = sorted(DATA_DIR.rglob("*.jsonl"))
    assert files
    found = {path.name: find_secrets(path.read_text(encoding="utf-8")) for path in files}
    assert not any(found.values()), found


def test_the_notebook_scan_uses_the_same_table():
    assert course_find_secrets is find_secrets


def test_mask_keeps_a_short_prefix_at_most():
    assert mask("12345678-90ab-cdef-1234-567890abcdef") == "1234…"
    assert mask("abc") == "…" and mask(None) == "" and mask("secret-value", keep=0) == "***"
