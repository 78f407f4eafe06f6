"""One owner of run locations (phi3lab.runs) and one rule for relative paths (the repository root)."""

import os
import subprocess
import sys
import time

import pytest

from phi3lab import runs
from phi3lab.config import TrainConfig
from phi3lab.errors import ConfigError
from phi3lab.paths import REPO_ROOT


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PHI3LAB_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def finish(name: str, labels: bool = False) -> runs.RunFolder:
    run = TrainConfig(run_name=name).run
    run.adapter_dir.mkdir(parents=True)
    TrainConfig(run_name=name).save(run.config_file)
    TrainConfig(run_name=name).save(run.adapter_dir / runs.CONFIG_NAME)
    (run.adapter_dir / "adapter_config.json").write_text("{}")
    (run.summary_file).write_text("{}")
    if labels:
        (run.adapter_dir / runs.CLASSIFIER_LABELS_NAME).write_text("{}")
    time.sleep(0.01)  # distinct modification times order the runs
    return run


def test_runs_root_follows_the_environment_at_call_time(runs_root, monkeypatch):
    assert runs.runs_root() == runs_root and TrainConfig().run.folder == runs_root / "lora"
    assert runs.server_dir() == runs_root / "serving" and runs.azure_history_file().parent == runs_root / "azure"
    monkeypatch.delenv("PHI3LAB_RUNS")
    assert runs.runs_root() == REPO_ROOT / "runs"


def test_a_run_is_found_by_name_by_path_or_by_its_adapter_folder(runs_root):
    run = finish("lora")
    assert runs.run_folder("lora") == run
    assert runs.run_folder(run.folder) == run
    assert runs.run_folder(run.adapter_dir) == run
    assert runs.find_run("lora").config().run_name == "lora"


def test_latest_run_is_the_learners_last_finished_chat_run(runs_root):
    assert runs.latest_run() is None
    finish("lora")
    (runs_root / "started").mkdir()
    TrainConfig(run_name="started").save(runs_root / "started" / runs.CONFIG_NAME)  # no adapter yet
    finish("experiments/fast")  # an experiment: in a sub-folder
    finish("intent", labels=True)  # an intent classifier, not a chat run
    assert runs.latest_run().name == "lora"
    assert [r.name for r in runs.training_runs()] == ["lora", "fast"]
    finish("lora-r32")
    assert runs.latest_run().name == "lora-r32"


def test_no_finished_run_is_one_clear_error(runs_root):
    with pytest.raises(runs.RunNotFoundError, match="no finished training run .* Fix: train one"):
        runs.find_run()


def test_later_notebooks_continue_with_the_runs_settings(runs_root, capsys):
    assert runs.config_for().run_name == "lora"
    assert "default settings" in capsys.readouterr().out
    run = TrainConfig(run_name="mine", learning_rate=1e-3).run
    finish("mine")
    TrainConfig(run_name="mine", learning_rate=1e-3).save(run.adapter_dir / runs.CONFIG_NAME)
    assert runs.config_for().learning_rate == 1e-3
    assert "run 'mine'" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["../outside", "/tmp/abs", "a b", "", "runs/../x"])
def test_run_names_that_would_leave_the_runs_root_are_refused(name):
    with pytest.raises(ConfigError, match="run_name"):
        TrainConfig.create(run_name=name)


def test_old_configs_with_output_dir_still_load(tmp_path):
    (tmp_path / "old.yaml").write_text("output_dir: runs/lora-r8\nlora_r: 8\n")
    config = TrainConfig.load(tmp_path / "old.yaml")
    assert config.run_name == "lora-r8" and config.lora_r == 8


def test_relative_paths_start_at_the_repository_root_from_any_working_directory(tmp_path, monkeypatch):
    """The one rule, for functions and the CLI alike, run from a folder outside the repository."""
    from phi3lab.classifier import load_intents
    from phi3lab.data import split, validate

    monkeypatch.chdir(tmp_path)
    assert validate("data/validation.jsonl").ok
    assert len(load_intents("data/validation.jsonl", "data/validation_labels.jsonl").texts) > 0
    assert TrainConfig().resolve(TrainConfig().train_file) == REPO_ROOT / "data" / "train.jsonl"
    out = tmp_path / "out"
    result = split("data/validation.jsonl", out / "a.jsonl", out / "b.jsonl")
    assert result.n_train + result.n_validation > 0 and (out / "a.jsonl").is_file()

    cli = subprocess.run([sys.executable, "-m", "phi3lab", "data", "validate", "data/validation.jsonl",
                          "--structure-only"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=120)
    assert cli.returncode == 0, cli.stdout + cli.stderr
