"""Atomic writes: the user's umask decides the mode (not tempfile's private 0600/0700), and a path that cannot be
written is a one-line FileAccessError naming it, still an OSError for callers that catch those."""

from __future__ import annotations

import json
import os
import stat

import pytest

from phi3lab.cli import main as cli
from phi3lab.errors import FileAccessError, Phi3LabError
from phi3lab.io import atomic_directory, atomic_write_json, atomic_write_text, current_umask


@pytest.fixture(params=[0o022, 0o027, 0o002], ids=["022", "027", "002"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_umask_is_read_without_changing_it(umask):
    assert current_umask() == umask and current_umask() == umask


def test_files_and_folders_get_the_mode_the_umask_gives(tmp_path, umask):
    text = atomic_write_text(tmp_path / "a.txt", "x")
    data = atomic_write_json(tmp_path / "sub" / "b.json", {"a": 1})
    with atomic_directory(tmp_path / "folder") as folder:
        (folder / "inside.txt").write_text("y")
    assert mode(text) == mode(data) == 0o666 & ~umask
    assert mode(tmp_path / "folder") == 0o777 & ~umask


def test_a_replaced_file_gets_the_umask_mode_too(tmp_path, umask):
    path = tmp_path / "a.txt"
    path.write_text("old")
    path.chmod(0o600)
    atomic_write_text(path, "new")
    assert mode(path) == 0o666 & ~umask and path.read_text() == "new"


def test_data_cli_outputs_respect_the_umask(tmp_path, umask, capsys):
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"messages": [{"role": "system", "content": "s"},
                                                     {"role": "user", "content": f"q{i}"},
                                                     {"role": "assistant", "content": "a"}]}) + "\n" for i in range(5)))
    assert cli(["data", "clean", str(chat), str(tmp_path / "clean.jsonl"), "--structure-only"]) == 0
    assert cli(["data", "split", str(chat), str(tmp_path / "t.jsonl"), str(tmp_path / "v.jsonl")]) == 0
    assert {mode(tmp_path / name) for name in ("clean.jsonl", "t.jsonl", "v.jsonl")} == {0o666 & ~umask}


@pytest.mark.parametrize("target, words", [
    ("folder", "is a folder, where a file is needed"),
    ("a-file/out.txt", "a-file is a file, where a folder is needed (to write"),
    ("a-file/deeper/out.txt", "a-file is a file, where a folder is needed"),
])
def test_unwritable_targets_are_named_with_the_fix(tmp_path, target, words):
    (tmp_path / "folder").mkdir()
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(FileAccessError, match="Fix:") as failure:
        atomic_write_text(tmp_path / target, "x")
    assert words in str(failure.value) and isinstance(failure.value, OSError | Phi3LabError)
    assert (tmp_path / "a-file").read_text() == "x" and not list((tmp_path / "folder").iterdir())


def test_a_directory_that_cannot_replace_a_file_is_named(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(FileAccessError, match="a-file is a file, where a folder is needed"):
        with atomic_directory(tmp_path / "a-file" / "run"):
            pass
