"""One owner of run locations: with PHI3LAB_RUNS pointing elsewhere, every reader and writer finds the same folder.

A tiny real training run writes the run; loading it, the server's default adapter, evaluation's history
lookup and cleanup must all look in that same folder (before, training wrote under the repository's runs/
while `phi3lab serve` looked under PHI3LAB_RUNS).
"""

import pytest
from evaluation_fixtures import make_tiny_phi3, write_chat

from phi3lab import experiments, models
from phi3lab.cleanup import plan_local_cleanup
from phi3lab.config import TrainConfig
from phi3lab.paths import REPO_ROOT
from phi3lab.serving.app import default_adapter
from phi3lab.training.artifacts import load_trained
from phi3lab.training.trainer import train


@pytest.fixture
def finished_run(tmp_path, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("PHI3LAB_RUNS", str(tmp_path / "elsewhere"))
    tiny = make_tiny_phi3(tmp_path_factory.mktemp("tiny"))
    monkeypatch.setattr(models, "model_source", lambda name: str(tiny))
    config = TrainConfig(run_name="handoff", train_file=str(write_chat(tmp_path, "train", 12)),
                         validation_file=str(write_chat(tmp_path, "validation", 4)), max_steps=4, batch_size=4,
                         eval_steps=2, save_steps=2, logging_steps=1, max_seq_length=128)
    repo_runs_before = sorted((REPO_ROOT / "runs").rglob("*")) if (REPO_ROOT / "runs").exists() else []
    result = train(config, progress=False)
    repo_runs_after = sorted((REPO_ROOT / "runs").rglob("*")) if (REPO_ROOT / "runs").exists() else []
    assert repo_runs_after == repo_runs_before, "training wrote into the repository's runs/"
    return tmp_path / "elsewhere" / "handoff", result


def test_every_reader_finds_the_folder_training_wrote(finished_run):
    folder, result = finished_run
    assert result.adapter_dir == folder / "adapter" and (folder / "config.yaml").is_file()

    model, _ = load_trained(result.adapter_dir)
    assert type(model).__name__.startswith("PeftModel")
    assert default_adapter() == folder / "adapter"
    assert experiments.run_to_evaluate().folder == folder
    assert experiments.training_histories()["local"].last("validation") is not None

    checkpoints = [item.path for item in plan_local_cleanup(servers=False) if item.kind == "checkpoint"]
    assert checkpoints and all(path.parent == folder for path in checkpoints)
    everything = [item.path for item in plan_local_cleanup(servers=False, runs=True)]
    assert folder in everything
