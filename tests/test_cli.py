"""The phi3lab command: help, version, the offline doctor report, and one-line errors for every subcommand."""

import json
import subprocess
import sys

import pytest

from phi3lab import __version__
from phi3lab.cli import main


def test_version_and_help(capsys):
    for args in (["--version"], ["--help"]):
        try:
            main(args)
        except SystemExit as exc:
            assert exc.code == 0
    out = capsys.readouterr().out
    assert f"phi3lab {__version__}" in out and "doctor" in out


def test_doctor_works_offline_and_hides_secrets(monkeypatch, capsys):
    secret = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", secret)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["doctor", "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    for key in ("python", "torch", "device", "offline model cache", "hub reachable", "azure settings"):
        assert key in report
    assert report["hub reachable"].startswith("no")
    assert secret not in out


def test_errors_are_one_line_not_tracebacks():
    result = subprocess.run([sys.executable, "-m", "phi3lab", "model", "list"], capture_output=True, text=True)
    assert result.returncode == 0 and "phi3-tiny-offline" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "phi3lab", "doctor"], capture_output=True, text=True,
                         env={"PHI3LAB_MODEL": "nope", "PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "unknown model 'nope'" in bad.stderr


# ----- issue 19: every subcommand answers bad input with one line, never a traceback --------------------------------
ALIAS_BOMB = 'a: &a ["x", "x"]\nb: &b [*a, *a]\ntarget_modules: [*b, *b]\n'
# Each subcommand, a bad input for it, and words its one-line error must contain. Azure commands run with a binary
# azure-settings.yaml; the paths in braces are made by the ``bad_files`` fixture.
BAD_INPUT = {
    "azure check": (["azure", "check"], "is not UTF-8 text"),
    "azure register-provider": (["azure", "register-provider", "--confirm"], "is not UTF-8 text"),
    "azure submit": (["azure", "submit", "--config", "{bomb}"], "aliases (*name) are not allowed"),
    "azure monitor": (["azure", "monitor", "job-1"], "is not UTF-8 text"),
    "azure metrics": (["azure", "metrics", "job-1", "--out", "{folder}"], "is not UTF-8 text"),
    "azure cleanup": (["azure", "cleanup"], "is not UTF-8 text"),
    "azure delete-resource-group": (["azure", "delete-resource-group"], "is not UTF-8 text"),
    "azure train-job": (["azure", "train-job", "--config", "{binary}"], "is not UTF-8 text"),
    "azure launch-command": (["azure", "launch-command", "--config", "{a-file}/c.yaml", "--gpus", "2"],
                             "does not exist"),
    "course": (["course", "99"], "no notebook matches '99'"),
    "data validate": (["data", "validate", "{utf16}"], "is UTF-16 LE text"),
    "data clean": (["data", "clean", "{chat}", "{folder}", "--structure-only"], "is a folder, where a file is needed"),
    "data split": (["data", "split", "{chat}", "{a-file}/t.jsonl", "{tmp}/v.jsonl"], "is a file, where a folder"),
    "data stats": (["data", "stats", "{empty}", "--structure-only"], "has no valid conversation to describe"),
    "data cost": (["data", "cost", "{missing}", "--epochs", "1", "--price-per-1k", "0.1"], "does not exist"),
    "doctor": (["doctor"], "unknown model 'nope'"),
    "export": (["export", "--run", "no-such-run"], "there is no run 'no-such-run'"),
    "model prepare": (["model", "prepare"], "is a file, where a folder is needed"),
    "model list": (["model", "list"], "unknown model 'nope'"),
    "serve": (["serve", "--host", "0.0.0.0", "--base"], "needs an API key"),
    "train": (["train", "--config", "{binary}"], "is not UTF-8 text"),
    "train (run folder is a file)": (["train", "--run-name", "taken"], "taken is a file, where a folder is needed"),
    "generate": (["generate", "--adapter", "{missing}", "--prompt", "hi"], "is not a trained adapter folder"),
    "launch": (["launch", "--config", "{binary}", "--print-only"], "is not UTF-8 text"),
}


def _subcommands(parser, prefix=()) -> set[str]:
    import argparse

    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        return {" ".join(prefix)}
    return {name for group in groups for command, sub in group.choices.items()
            for name in _subcommands(sub, (*prefix, command))}


def _registered() -> set[str]:
    from phi3lab.cli import build_parser

    return _subcommands(build_parser())


def test_every_subcommand_has_a_bad_input_case():
    assert _registered() <= {case.split(" (")[0] for case in BAD_INPUT}


@pytest.fixture
def bad_files(tmp_path, monkeypatch):
    """The files the bad inputs name, a runs root where run 'taken' is a file, broken Azure settings, no model."""
    import phi3lab.azure.settings

    files = {"tmp": tmp_path, "folder": tmp_path / "folder", "a-file": tmp_path / "a-file",
             "binary": tmp_path / "binary.yaml", "bomb": tmp_path / "bomb.yaml", "utf16": tmp_path / "utf16.jsonl",
             "chat": tmp_path / "chat.jsonl", "empty": tmp_path / "empty.jsonl", "missing": tmp_path / "missing"}
    files["folder"].mkdir()
    files["a-file"].write_text("x")
    files["binary"].write_bytes(b"\xff\xfe\x00\x89PNG\x00")
    files["bomb"].write_text(ALIAS_BOMB)
    files["utf16"].write_bytes('{"messages": []}\n'.encode("utf-16"))
    files["chat"].write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                              {"role": "assistant", "content": "a"}]}) + "\n"
                                     for i in range(4)))
    files["empty"].write_text("\n\n")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "taken").write_text("not a folder")
    monkeypatch.setenv("PHI3LAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(phi3lab.azure.settings, "SETTINGS_FILE", files["binary"])
    monkeypatch.delenv("PHI3LAB_API_KEY", raising=False)
    return files


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_line_naming_the_problem(case, bad_files, monkeypatch, capsys):
    argv, words = BAD_INPUT[case]
    if case.split(" (")[0] not in _registered():
        pytest.skip(f"'{case}' is not a subcommand in this checkout")
    if argv[0] in ("doctor", "model") and argv[-1] != "prepare":
        monkeypatch.setenv("PHI3LAB_MODEL", "nope")
    if argv[-1] == "prepare":
        monkeypatch.setenv("PHI3LAB_CACHE", str(bad_files["a-file"]))  # the cache folder is a file
    assert main([a.format(**bad_files) for a in argv]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]) and "Traceback" not in err, err[-2000:]
    assert words in errors[0]


def test_a_closed_pipe_exits_quietly(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{bad\n" * 5000)  # a report of about 1 MB, far more than a pipe holds
    reader = subprocess.Popen([sys.executable, "-m", "phi3lab", "data", "validate", str(bad), "--json",
                               "--structure-only"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout.readline().strip() == b"{"
    reader.stdout.close()  # what `| head -1` does once it has its line
    _, err = reader.communicate(timeout=120)
    assert reader.returncode == 141 and err == b"", err.decode()[-2000:]
