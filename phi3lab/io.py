"""Atomic file and directory writes: a crash leaves either the old content or the new, never half.

What is written gets the permissions the user's umask gives any new file (``tempfile`` would leave it
private, 0600/0700), and a folder or permission in the way is a ``FileAccessError`` naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from .errors import file_errors


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[TextIO]:
    """A text handle into a temp file beside ``path``, renamed over it only when the block succeeds.

    Streams, so files of any size can be written without holding them in memory.
    """
    path = Path(path)
    with file_errors(path, "write"):
        if path.is_dir():  # found now, not at the rename: a second output opened beside this one stays unwritten
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        with file_errors(path, "write"):
            os.chmod(tmp, 0o666 & ~current_umask())
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temp file in the same folder and an atomic rename."""
    with atomic_open(path) as handle:
        handle.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, data) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder beside ``path``; on success it replaces ``path`` in one rename.

    If the block raises (or the process dies), ``path`` keeps its previous content.
    """
    path = Path(path)
    with file_errors(path, "write"):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        os.chmod(tmp, 0o777 & ~current_umask())
    try:
        yield tmp
        old = None
        with file_errors(path, "write"):
            if path.exists():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, old)
            os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only be read by setting it, which
    would briefly give files that other threads create the wrong mode)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # no /proc (macOS): read it the only other way
    os.umask(mask)
    return mask


@functools.cache
def _settings_loader():
    """PyYAML's safe loader, minus aliases, plus floats written without a dot.

    Settings files need no aliases, and an alias bomb (329 bytes) expands into a value whose repr is
    35 MB. YAML 1.1 reads ``2e-4`` as a string, which a strictly typed float field would refuse.
    """
    import re

    import yaml

    class SettingsLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in settings files; "
                                                              "write the value out", mark)
            return super().compose_node(parent, index)

    SettingsLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"))
    return SettingsLoader


def _yaml_problem(exc) -> str:
    """The parser's complaint and where, on one line (its own message spans lines, quoting the line)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{getattr(exc, 'problem', None) or exc}{where}"


def read_yaml_mapping(path: str | os.PathLike, error: type[Exception], redact=lambda text: text) -> dict:
    """A YAML/JSON file that must hold a mapping; problems raise ``error`` naming the file.

    ``redact`` cleans the parser's message (it quotes the offending line, which may hold a secret).
    Aliases are refused (see ``_settings_loader``).
    """
    import yaml

    path = Path(path)
    with file_errors(path, "read", error):
        text = path.read_text(encoding="utf-8")
    try:
        data = yaml.load(text, Loader=_settings_loader()) or {}  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise error(f"{path} is not valid YAML/JSON: {redact(_yaml_problem(exc))}") from None
    if not isinstance(data, dict):
        raise error(f"{path} must hold a mapping of setting: value, got {type(data).__name__}")
    return data


def safetensors_complete(path: Path) -> bool:
    """Whether a safetensors file was written whole: its header parses and the file is as long as the header
    says. Hand-written because the safetensors library only finds a truncated file when it loads the weights."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            header_len = struct.unpack("<Q", handle.read(8))[0]
            if header_len <= 0 or header_len > size:
                return False
            header = json.loads(handle.read(header_len))
        end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
        return size == 8 + header_len + end
    except (OSError, ValueError, KeyError, struct.error):
        return False
