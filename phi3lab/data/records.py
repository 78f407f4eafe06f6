"""Reading chat JSONL line by line and checking each record's structure.

No library validates the chat fine-tuning format with line numbers (``datasets`` loads JSONL but
stops at the first bad line, and jsonschema cannot express role order or duplicates), so the
checks are written here. Everything streams: one line in memory at a time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import file_errors
from ..paths import REPO_ROOT, repo_path
from .report import SEVERITY, DataError, Finding

ROLES = ("system", "user", "assistant")
RECORD_KEYS = {"messages"}
MESSAGE_KEYS = {"role", "content", "name"}
MAX_LINE_BYTES = 8 * 1024 * 1024  # a longer line is reported and skipped, never read whole
BOM = b"\xef\xbb\xbf"
# The byte-order marks of UTF-16/32 (see ``wide_encoding``). UTF-32 first: its LE mark starts like UTF-16's.
_WIDE_MARKS = ((b"\xff\xfe\x00\x00", "UTF-32 LE"), (b"\x00\x00\xfe\xff", "UTF-32 BE"),
               (b"\xff\xfe", "UTF-16 LE"), (b"\xfe\xff", "UTF-16 BE"))


@dataclass(slots=True)  # not frozen: frozen dataclasses are slow to build, and this is built per line
class RawLine:
    number: int  # 1-based
    data: bytes | None  # without line ending and BOM; None when the line was too long to read
    size: int  # bytes in the file, line ending included
    crlf: bool = False
    bom: bool = False


def finding(line: int, code: str, field: str, message: str) -> Finding:
    return Finding(line, code, field, message, SEVERITY[code])


def wide_encoding(start: bytes) -> str | None:
    """"UTF-16 LE" etc. when a file starting with ``start`` (its first 4 bytes) is UTF-16/32 text, else None.

    Without a byte-order mark, RFC 4627's rule: JSON starts with two ASCII characters, so the places of
    the zero bytes give the encoding away. Other binary data is left to the line checks.
    """
    for mark, name in _WIDE_MARKS:
        if start.startswith(mark):
            return name
    head = start[:4]
    if len(head) < 4 or max(head) >= 0x80:
        return None
    zeros = tuple(byte == 0 for byte in head)
    return {(True, True, True, False): "UTF-32 BE", (False, True, True, True): "UTF-32 LE",
            (True, False, True, False): "UTF-16 BE", (False, True, False, True): "UTF-16 LE"}.get(zeros)


def iter_raw_lines(path: str | os.PathLike) -> Iterator[RawLine]:
    """Physical lines of a file as bytes, with line-ending and BOM flags, in bounded memory.

    A UTF-16 or UTF-32 file is a DataError naming its encoding: its lines cannot even be split.
    """
    path = repo_path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file. Fix: check the path (relative paths start at "
                        f"the repository root, {REPO_ROOT}).")
    with file_errors(path, "read", DataError):
        handle = path.open("rb")
    with handle:
        encoding = wide_encoding(handle.read(4))
        if encoding:
            raise DataError(f"{path} is {encoding} text; chat JSONL must be UTF-8. Fix: save it as UTF-8 (in an "
                            f"editor: Save with Encoding, UTF-8; or `iconv -f {encoding.replace(' ', '')} -t UTF-8`).")
        handle.seek(0)
        number = 0
        while chunk := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(chunk) > MAX_LINE_BYTES:
                size = len(chunk)
                while not chunk.endswith(b"\n") and (chunk := handle.readline(1 << 20)):
                    size += len(chunk)
                yield RawLine(number, None, size)
                continue
            size = len(chunk)
            bom = number == 1 and chunk.startswith(BOM)
            if bom:
                chunk = chunk[len(BOM):]
            crlf = chunk.endswith(b"\r\n")
            yield RawLine(number, chunk[:-2] if crlf else chunk.rstrip(b"\n"), size, crlf, bom)


def line_findings(raw: RawLine) -> list[Finding]:
    """Findings about the physical line itself (before JSON parsing)."""
    if raw.data is not None and not raw.bom:
        return []
    found = []
    if raw.bom:
        found.append(finding(raw.number, "bom", "", "file starts with a UTF-8 byte-order mark; some JSON "
                                                    "readers reject it"))
    if raw.data is None:
        found.append(finding(raw.number, "line_too_long", "", f"line is {raw.size:,} bytes, over the "
                                                              f"{MAX_LINE_BYTES:,}-byte limit; skipped unread"))
    return found


def parse(raw: RawLine) -> tuple[object | None, Finding | None]:
    """Decode and parse one line; the error names the byte or column."""
    try:
        text = raw.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, finding(raw.number, "encoding", "", f"not valid UTF-8 at byte {exc.start + 1} of the line "
                                                         f"(0x{raw.data[exc.start]:02x}); save the file as UTF-8")
    try:
        return json.loads(text), None
    except RecursionError:
        return None, finding(raw.number, "invalid_json", "", "JSON nested too deeply to read")
    except ValueError as exc:  # JSONDecodeError, and int() refusing absurdly long numbers
        detail = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)[:120]
        return None, finding(raw.number, "invalid_json", "", f"not valid JSON: {detail}")


def check_record(record, line: int, raw: bytes = b"") -> list[Finding]:
    """Structural checks of one parsed line: shape, keys, roles, content, role order."""
    messages = record.get("messages") if type(record) is dict and len(record) == 1 else None
    if type(messages) is list and messages and all(map(_message_ok, messages)) and not _maybe_surrogate(raw):
        # Fast path for the common case (keeps validation well above 20k lines/s); anything
        # unusual falls through to the detailed checks below, which name every problem.
        roles = tuple(m["role"] for m in messages)
        n = len(roles)
        return [] if n >= 3 and n % 2 and roles == ("system",) + ("user", "assistant") * (n // 2) else _check_order(list(roles), line)
    return _detailed_checks(record, line, raw)


def _message_ok(message) -> bool:
    if type(message) is not dict or not message.keys() <= MESSAGE_KEYS or message.get("role") not in ROLES:
        return False
    content, name = message.get("content"), message.get("name", "")
    return type(content) is str and type(name) is str and content != "" and not content.isspace()


def _maybe_surrogate(raw: bytes) -> bool:
    return b"\\ud" in raw or b"\\uD" in raw


def _detailed_checks(record, line: int, raw: bytes) -> list[Finding]:
    if not isinstance(record, dict):
        return [finding(line, "not_object", "", f"line holds a JSON {_json_type(record)}, expected an object "
                                                f'like {{"messages": [...]}}')]
    found = [finding(line, "unknown_key", key, 'only "messages" is part of the chat format; the key is '
                                               'ignored here and dropped by clean (keep labels in a separate file)')
             for key in record if key not in RECORD_KEYS]
    messages = record.get("messages")
    if messages is None:
        return found + [finding(line, "missing_messages", "messages", 'no "messages" list')]
    if not isinstance(messages, list):
        return found + [finding(line, "messages_not_list", "messages", f"is a {_json_type(messages)}, "
                                                                       f"expected a list of messages")]
    if not messages:
        return found + [finding(line, "empty_messages", "messages", "the list is empty")]
    roles = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            found.append(finding(line, "message_not_object", where, f"is a {_json_type(message)}, expected "
                                                                    f'{{"role": ..., "content": ...}}'))
            roles.append(None)
            continue
        found += [finding(line, "unknown_message_key", f"{where}.{key}", f"unknown key; allowed: "
                                                                         f"{', '.join(sorted(MESSAGE_KEYS))}")
                  for key in message if key not in MESSAGE_KEYS]
        roles.append(_check_role(message, where, line, found))
        _check_content(message, where, line, raw, found)
    if None not in roles:
        found += _check_order(roles, line)
    return found


def _check_role(message: dict, where: str, line: int, found: list) -> str | None:
    if "role" not in message:
        found.append(finding(line, "missing_role", f"{where}.role", "message has no role"))
        return None
    role = message["role"]
    if role not in ROLES:
        if isinstance(role, str) and role.strip().lower() in ROLES:
            hint = f'roles are lower case: "{role.strip().lower()}" (clean fixes this)'
        else:
            hint = f"use one of {', '.join(ROLES)}"
        found.append(finding(line, "unknown_role", f"{where}.role", f"{_short(role)} is not a role; {hint}"))
        return None
    return role


def _check_content(message: dict, where: str, line: int, raw: bytes, found: list) -> None:
    if not isinstance(message.get("name", ""), str):
        found.append(finding(line, "name_not_string", f"{where}.name", f"is a {_json_type(message['name'])}, "
                                                                       f"expected text"))
    if "content" not in message:
        found.append(finding(line, "missing_content", f"{where}.content", "message has no content"))
        return
    content = message["content"]
    if not isinstance(content, str):
        found.append(finding(line, "content_not_string", f"{where}.content",
                             f"is a {_json_type(content)} ({_short(content)}), expected text"))
    elif not content.strip():
        found.append(finding(line, "empty_content", f"{where}.content", "is empty or only whitespace"))
    elif _maybe_surrogate(raw) and not _encodable(content):
        found.append(finding(line, "bad_unicode", f"{where}.content", "holds a lone UTF-16 surrogate "
                                                                      "(\\ud800-\\udfff) that no tokenizer accepts"))


def _check_order(roles: list[str], line: int) -> list[Finding]:
    found = []
    if "assistant" not in roles:
        found.append(finding(line, "no_assistant", "messages", "no assistant message: nothing to learn from"))
    for index, role in enumerate(roles[1:], start=1):
        if role == "system":
            found.append(finding(line, "system_not_first", f"messages[{index}].role",
                                 "a system message may only come first"))
    start = 1 if roles[0] == "system" else 0
    body = [r for r in roles[start:] if r != "system"]
    if not body or body[0] != "user":
        found.append(finding(line, "first_not_user", f"messages[{start}].role",
                             "the conversation must open with a user message (after an optional system one)"))
    for index in range(start + 1, len(roles)):
        if roles[index] == roles[index - 1] and roles[index] != "system":
            found.append(finding(line, "not_alternating", f"messages[{index}].role",
                                 f"two {roles[index]} messages in a row; user and assistant must alternate"))
    if "assistant" in roles and roles[-1] != "assistant":
        found.append(finding(line, "last_not_assistant", f"messages[{len(roles) - 1}].role",
                             f"the last message is from {roles[-1]}; it must be the assistant's answer"))
    if "system" not in roles:
        found.append(finding(line, "no_system", "messages[0]", "no system prompt; training without the one "
                                                               "you will deploy with weakens it"))
    return found


def fingerprint(messages: list) -> int:
    """A 64-bit hash of a valid conversation, for duplicate detection in constant memory per line.

    Python's string hashes are cached and fast; a false match among a million lines has a chance
    of about 1 in 20 million.
    """
    return hash(tuple((m["role"], m["content"], m.get("name")) for m in messages))


def is_error(found: list[Finding]) -> bool:
    return any(f.severity == "error" for f in found)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_type(value) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _short(value, width: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, float) else repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
