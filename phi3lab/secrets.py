"""One vocabulary for secrets: the patterns that both mask runtime output and flag notebooks.

Every entry of ``PATTERNS`` serves two callers. ``mask_secrets`` hides what it matches in text the
course prints or logs (Azure errors and dry-run requests, endpoint errors, the call log, server
logs). ``find_secrets`` reports the same matches for the notebook hygiene scan (committed
notebooks, nbval outputs, course runs). So a format is either hidden everywhere or nowhere.

A match counts only when its value looks real: placeholders (``<your key>``, ``your-api-key``,
``****``), plain words and numbers after a key name, hashes labelled as such, and the public GUIDs
of Azure's built-in roles stay readable. Each entry carries made-up samples; the tests run every
sample through both masking and detection.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .azure.roles import ROLE_NAMES

ZERO_GUID = "00000000-0000-0000-0000-000000000000"  # the placeholder subscription of dry runs without settings
# The same in every tenant, so printing them reveals nothing: the built-in role definitions the course names.
PUBLIC_GUIDS = frozenset(ROLE_NAMES)

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_PLACEHOLDER = re.compile(r"(?i)your|<|>|\{|\}|\$|\*\*|…|\.\.\.|xxxx|example|placeholder|dummy|redacted|masked"
                          r"|changeme")
# Words that label a hex string as a hash or an identifier, not a key.
_HASH_LABEL = re.compile(r"(?i)(?:sha\d*|md5|hash|digest|checksum|etag|commit|revision|version|(?<![a-z])id)"
                         r"[\s:=\"'(]{0,4}$")


def _not_placeholder(match: re.Match) -> bool:
    return not _PLACEHOLDER.search(match.group("secret"))


def _random_looking(match: re.Match) -> bool:
    """Letters and digits mixed: keys are random, while words, numbers and identifiers usually are not."""
    value = match.group("secret")
    return _not_placeholder(match) and any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _unlabelled_hex(match: re.Match) -> bool:
    before = match.string[max(0, match.start() - 24):match.start()]
    return _random_looking(match) and not _HASH_LABEL.search(before)


def _private_guid(match: re.Match) -> bool:
    return match.group("secret").lower() not in PUBLIC_GUIDS


def _always(match: re.Match) -> bool:
    return True


def _not_the_placeholder_guid(match: re.Match) -> bool:
    return match.group("secret") != ZERO_GUID


@dataclass(frozen=True)
class SecretPattern:
    """One secret format: the regex (group ``secret`` is what gets hidden) and made-up samples of it."""

    kind: str
    regex: re.Pattern
    samples: tuple[str, ...]
    looks_real: Callable[[re.Match], bool] = _not_placeholder
    keep: int = 0  # leading characters of the secret left visible (GUIDs keep 4, enough to tell them apart)
    # Masked yet no finding: the all-zero subscription of dry runs is shortened like a real one, so
    # output looks the same with and without settings, but a notebook may show it.
    reported: Callable[[re.Match], bool] = _always

    def masked(self, match: re.Match) -> str:
        start, end = match.span("secret")
        whole = match.group(0)
        offset = match.start()
        return whole[:start - offset] + mask(match.group("secret"), self.keep) + whole[end - offset:]


# Pieces of the samples are joined at import time so that no line of this file is itself a token.
_B64_88 = "q9Lx" + "Zr2mT4vW8yB1nC3dE5fG7hJ9kM0pQ2sU4wY6zA8cE0gI2kO4mS6uW8yA1bD3fH5jL7nP9rT1vX3zB5dF7h=="
_KEY_84 = "7Gq" + "Xz2LmN4pR6tV8xB0dF2hJ4kM6nQ8sU0wY2aC4eG6iK8mO0qS2uW4yA6cE8gI0kM2oQ4sU6wY8aC0eJQQJ"
_HEX_32 = "9f8e7d6c" + "5b4a39281706f5e4d3c2b1a0"

PATTERNS: tuple[SecretPattern, ...] = (
    SecretPattern(
        "storage connection-string key",
        re.compile(r"(?i)(?<![A-Za-z0-9])(?:AccountKey|SharedAccessKey)\s*=\s*(?P<secret>[A-Za-z0-9+/]{16,}={0,2})"),
        ("DefaultEndpointsProtocol=https;AccountName=stdemo;AccountKey=" + _B64_88 + ";EndpointSuffix=core.windows.net",
         "Endpoint=sb://demo.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=" + "Ab3dE6" * 7 + "="),
        _random_looking),
    SecretPattern(
        "storage SharedKey signature",
        re.compile(r"\bSharedKey\s+[A-Za-z0-9_.\-]+:(?P<secret>[A-Za-z0-9+/]{16,}={0,2})"),
        ("Authorization: SharedKey stdemo:" + "Zk4" + "pQ9rT2vW5yB8nC1dE4fG7hJ0kM3pQ6sU9wY2zA5cE8=",)),
    SecretPattern(
        "named key, token, secret or password",
        re.compile(r"(?i)(?<![A-Za-z0-9])(?:api[_-]?key|ocp-apim-subscription-key|subscription[_-]?key|primary[_-]?key"
                   r"|secondary[_-]?key|key[12]|access[_-]?key|account[_-]?key|client[_-]?secret|secret|password|passwd"
                   r"|pwd|access[_-]?token|auth[_-]?token|refresh[_-]?token|sas[_-]?token|token|key)"
                   r"[\"']?\s*[:=]\s*[\"']?(?P<secret>[A-Za-z0-9+/=_~.\-]{8,})"),
        ("EndpointAuthKeys(primary_key='" + _HEX_32 + "', secondary_key='0a1b2c3d4e5f" + "60718293a4b5c6d7e8f9')",
         "{'primaryKey': 'Qm9" + "vY2tTZWNyZXQxMjM0NTY3ODkw'}",
         '{"key1": "4f3e2d1c' + '0b9a88776655443322110ffe", "key2": "…"}',
         "AZURE_CLIENT_SECRET=" + "kR7" + "yT2vW9bN4mQ8xZ3cL6pH1dF5gJ0sA",
         "Ocp-Apim-Subscription-Key: " + "3c5e7a9b" + "1d2f4a6c8e0b3d5f7a9c1e2b",
         "api_key = 'a1b2c3d4e5f6" + "a7b8c9d0e1f2a3b4c5d6'",
         "password=Winter" + "2026Secret!"),
        _random_looking),
    SecretPattern(
        "password in a URL",
        re.compile(r"(?i)\b[a-z][a-z0-9+.\-]*://[^\s/:@'\"]+:(?P<secret>[^\s/@'\"]+)@"),
        ("https://user:" + "pass@host.internal/data", "postgresql://phi3lab:" + "T0ps3cret@db.internal:5432/course")),
    SecretPattern(
        "SAS signature",
        re.compile(r"(?i)[?&]sig=(?P<secret>[A-Za-z0-9%+/=]{16,})"),
        ("https://stdemo.blob.core.windows.net/c/train.jsonl?sv=2024-05-04&sr=b&sp=r&sig=" + "Xy7" + "Rz9Tq2Wv4%2BBn6Mc8%3D",)),
    SecretPattern(
        "function key (?code=)",
        re.compile(r"(?i)[?&]code=(?P<secret>[A-Za-z0-9_\-%=]{20,})"),
        ("https://fn-demo.azurewebsites.net/api/score?code=" + "aB3dE" + "fG6hI9jK2lM5nO8pQ1rS4tU7vW0x%3D%3D",),
        _random_looking),
    SecretPattern(
        "bearer token",
        re.compile(r"(?i)\bBearer\s+(?P<secret>[A-Za-z0-9\-._~+/]{16,}=*)"),
        ("Authorization: Bearer " + "0a1B2c3D" + "4e5F6g7H8i9J0k1L2m3N",)),
    SecretPattern(
        "JSON web token",
        re.compile(r"\b(?P<secret>eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*)"),
        ("token " + "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + "eyJhdWQiOiJodHRwczovL21hbmFnZW1lbnQifQ.c2lnbmF0dXJl",)),
    SecretPattern(
        "Hugging Face token",
        re.compile(r"\bhf_(?P<secret>[A-Za-z0-9]{30,})"),
        ("HF_TOKEN " + "hf_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",)),
    SecretPattern(
        "OpenAI-style key (sk-)",
        re.compile(r"\bsk-(?P<secret>(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,})"),
        ("OPENAI_API_KEY " + "sk-" + "proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34",),
        _random_looking),
    SecretPattern(
        "GitHub token",
        re.compile(r"\b(?:github_pat_|gh[pousr]_)(?P<secret>[A-Za-z0-9_]{30,})"),
        ("github_pat_" + "11AB2CD3E0" + "aBcDeFgHiJkLmN_oPqRsTuVwXyZ0123456789aBcDeFgHiJkLmNoPqRsTuV",
         "ghp_" + "aBcDeFgHiJkLmNoPq" + "RsTuVwXyZ0123456789a")),
    SecretPattern(
        "Entra client secret",
        re.compile(r"(?<![A-Za-z0-9_~.\-])(?P<secret>[A-Za-z0-9_~.\-]{3}\dQ~[A-Za-z0-9_~.\-]{31,34})(?![A-Za-z0-9_~.\-])"),
        ("client secret " + "Xy78Q~" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ01234.67",)),
    SecretPattern(
        "Azure key (84-88 characters)",
        re.compile(r"(?<![A-Za-z0-9+/=_\-])(?P<secret>[A-Za-z0-9+/]{84,86}={0,2})(?![A-Za-z0-9+/=_\-])"),
        ("AZURE_AI_KEY " + _KEY_84, "storage key " + _B64_88),
        _random_looking),
    SecretPattern(
        "bare 32-hex key",
        re.compile(r"(?<![A-Za-z0-9_\-])(?P<secret>[0-9a-fA-F]{32})(?![A-Za-z0-9_\-])"),
        ("AzureKeyCredential('" + _HEX_32 + "')",),
        _unlabelled_hex),
    SecretPattern(
        "GUID (subscription, tenant or client ID)",
        re.compile(rf"(?<![0-9a-fA-F-])(?P<secret>{_GUID})(?![0-9a-fA-F-])"),
        ("/subscriptions/3f2b8c1e-9a4d-" + "4e6f-b1c2-7d8e9f0a1b2c/resourceGroups/rg",),
        _private_guid, keep=4, reported=_not_the_placeholder_guid),
)


def mask(value: str | None, keep: int = 4) -> str:
    """``"12345678-…"`` → ``"1234…"``: at most ``keep`` leading characters stay visible (``keep=0``: ``***``)."""
    if not value:
        return ""
    value = str(value)
    if keep <= 0:
        return "***"
    return "…" if len(value) <= keep else value[:keep] + "…"


def _scan(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The text with every secret masked, and (kind, masked match) for each one found."""
    findings: list[tuple[str, str]] = []
    for pattern in PATTERNS:
        def hide(match: re.Match, pattern: SecretPattern = pattern) -> str:
            if not pattern.looks_real(match):
                return match.group(0)
            masked = pattern.masked(match)
            if pattern.reported(match):
                findings.append((pattern.kind, masked[:60]))
            return masked

        # One pattern after another over the already-masked text, so a secret is reported once.
        text = pattern.regex.sub(hide, text)
    return text, findings


def mask_secrets(text: str) -> str:
    """``text`` with keys, tokens, passwords, signatures and subscription/tenant IDs hidden."""
    return _scan(str(text))[0]


def find_secrets(text: str) -> list[tuple[str, str]]:
    """(kind, masked match) for every secret-looking string in ``text``."""
    return _scan(str(text))[1]
