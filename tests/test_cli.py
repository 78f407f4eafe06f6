"""The phi3lab command: help, version and the offline doctor report."""

import json
import subprocess
import sys

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
