"""A damaged newest checkpoint (truncated weights or optimiser, broken JSON or config) is found before resuming,
removed with a one-line note, and the run resumes from the previous intact checkpoint instead of failing on every
rerun with a raw SafetensorError."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

from phi3lab.config import TrainConfig
from phi3lab.history import MetricsHistory
from phi3lab.runs import CONFIG_NAME, HISTORY_NAME
from phi3lab.training.checkpoints import checkpoint_problem, complete_checkpoints, resume_point

CONFIG = TrainConfig(run_name="run", max_steps=4)


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A run folder with two complete checkpoints (steps 1 and 2), files as Trainer and publishing leave them."""
    monkeypatch.setenv("PHI3LAB_RUNS", str(tmp_path / "runs"))
    run = CONFIG.run
    for step in (1, 2):
        folder = run.checkpoint_dir(step)
        folder.mkdir(parents=True)
        save_file({"lora_A": np.zeros((4, 8), dtype=np.float32)}, folder / "adapter_model.safetensors")
        with zipfile.ZipFile(folder / "optimizer.pt", "w") as optimizer:  # torch.save writes a zip archive
            optimizer.writestr("archive/data.pkl", b"\x80\x04" + bytes(512))
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        CONFIG.save(folder / CONFIG_NAME)
        MetricsHistory(run="run").save(folder / HISTORY_NAME)
    return run


def _truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "truncated adapter weights": (lambda f: _truncate(f / "adapter_model.safetensors"), "adapter_model.safetensors"),
    "truncated optimiser": (lambda f: _truncate(f / "optimizer.pt"), "optimizer.pt is truncated"),
    "broken trainer state": (lambda f: (f / "trainer_state.json").write_text('{"global_step": '),
                             "trainer_state.json is not readable JSON"),
    "binary config": (lambda f: (f / CONFIG_NAME).write_bytes(b"\xff\xfe\x00binary"), "is not UTF-8 text"),
}


def test_intact_checkpoints_pass(run):
    assert [checkpoint_problem(path) for path in complete_checkpoints(run)] == [None, None]
    assert resume_point(CONFIG, run, resume=True) == run.checkpoint_dir(2)


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_intact_one(run, damage, capsys):
    harm, problem = DAMAGE[damage]
    harm(run.checkpoint_dir(2))
    assert problem in checkpoint_problem(run.checkpoint_dir(2))
    notices = []
    assert resume_point(CONFIG, run, resume=True, notices=notices) == run.checkpoint_dir(1)
    assert len(notices) == 1 and "checkpoint-2 is damaged" in notices[0] and problem in notices[0]
    assert capsys.readouterr().out.count("\n") == 1  # the note is one line
    assert not run.checkpoint_dir(2).exists()  # so the next rerun (and pruning) never sees it again
    assert resume_point(CONFIG, run, resume=True, notices=notices) == run.checkpoint_dir(1) and len(notices) == 1


def test_when_every_checkpoint_is_damaged_the_run_starts_over(run):
    for step in (1, 2):
        _truncate(run.checkpoint_dir(step) / "adapter_model.safetensors")
    notices = []
    assert resume_point(CONFIG, run, resume=True, notices=notices) is None
    assert len(notices) == 2 and run.checkpoint_dirs() == []


def test_a_truncated_checkpoint_in_a_real_run_is_a_note_and_the_rerun_finishes(tmp_path, monkeypatch):
    from test_training import tiny_config

    from phi3lab.training import train

    monkeypatch.setenv("PHI3LAB_RUNS", str(tmp_path / "runs"))  # not the repository's runs/
    config = tiny_config(tmp_path, max_steps=2, eval_steps=2)
    first = train(config, progress=False)
    run = config.run
    assert [p.name for p in complete_checkpoints(run)] == ["checkpoint-1", "checkpoint-2"]
    run.summary_file.unlink()  # as if killed after the last checkpoint, before the adapter was published
    _truncate(run.checkpoint_dir(2) / "adapter_model.safetensors")
    second = train(config, progress=False)
    assert second.summary["resumed_from_step"] == 1 and second.summary["steps"] == first.summary["steps"] == 2
    assert any("checkpoint-2 is damaged" in note for note in second.summary.get("notices", []))
