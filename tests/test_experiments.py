"""Which run a notebook evaluates, its curves, and the short runs notebook 04 compares (all under PHI3LAB_RUNS)."""

import math
from types import SimpleNamespace

import pytest
from evaluation_fixtures import make_tiny_phi3

from phi3lab import evaluation, experiments
from phi3lab.config import TrainConfig
from phi3lab.history import MetricsHistory
from phi3lab.runs import RunNotFoundError


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PHI3LAB_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def fake_finished_run(name: str, final_validation: float = 2.5, **settings):
    """A run folder as train() leaves it: config.yaml, adapter/ with its config, history and summary."""
    config = TrainConfig(run_name=name, **settings)
    run = config.run
    run.adapter_dir.mkdir(parents=True)
    config.save(run.config_file)
    config.save(run.adapter_dir / "config.yaml")
    (run.adapter_dir / "adapter_config.json").write_text("{}")
    history_with(final_validation).save(run.history_file)
    run.summary_file.write_text('{"steps": 4}')
    return run


def history_with(final_validation: float) -> MetricsHistory:
    history = MetricsHistory(run="x")
    history.add(1, "train", 3.0)
    history.add(4, "train", 2.0)
    history.add(4, "validation", final_validation)
    return history


def test_the_latest_finished_run_is_evaluated_without_training(runs_root, capsys):
    fake_finished_run("lora")
    run = experiments.run_to_evaluate()
    assert run.folder == runs_root / "lora"
    assert "Evaluating run 'lora'" in capsys.readouterr().out


def test_a_named_run_without_adapter_is_a_clear_error(runs_root):
    with pytest.raises(RunNotFoundError, match="no finished adapter"):
        experiments.run_to_evaluate("no-such-run")


def test_missing_run_trains_a_short_one_elsewhere_and_says_so(runs_root, capsys, monkeypatch):
    import phi3lab.training.trainer as training

    seen = []

    def fake_train(config, progress=True):  # the real training is covered by tests/test_training.py
        seen.append(config)
        fake_finished_run(config.run_name)

    monkeypatch.setattr(training, "train", fake_train)
    (runs_root / "lora" / "checkpoint-2").mkdir(parents=True)  # notebook 02 still running: no adapter yet
    run = experiments.run_to_evaluate()
    assert run.folder == runs_root / experiments.FALLBACK_RUN and seen[0].max_steps > 0
    assert sorted(p.name for p in (runs_root / "lora").iterdir()) == ["checkpoint-2"], "02's run must not be touched"
    assert "training a short one now" in capsys.readouterr().out
    # the next time, the short run is found as the latest finished run instead of training again
    assert experiments.run_to_evaluate().folder == run.folder and len(seen) == 1


def test_training_histories_add_the_azure_job_when_notebook_03_saved_one(runs_root, capsys):
    run = fake_finished_run("lora")
    assert list(experiments.training_histories(run)) == ["local"]
    assert "No Azure job metrics yet" in capsys.readouterr().out

    azure = history_with(2.2)
    azure.source = "azure"
    azure.save(runs_root / "azure" / "history.json")
    histories = experiments.training_histories()  # default: the latest run
    assert list(histories) == ["local", "Azure"] and histories["Azure"].source == "azure"


def test_experiment_table_ranks_runs_by_validation_loss():
    results = {name: SimpleNamespace(history=history_with(loss), summary={"steps": 4})
               for name, loss in (("lr 5e-5", 2.9), ("lr 5e-4", 2.1))}
    experiment = experiments.Experiment({"lr 5e-5": {"learning_rate": 5e-5}, "lr 5e-4": {"learning_rate": 5e-4}},
                                        results)
    assert experiment.best() == "lr 5e-4"
    lines = experiment.table().splitlines()
    assert "learning_rate=0.0005" in lines[2] and f"{math.exp(2.1):.2f}" in lines[2]
    assert set(experiment.histories()) == {"lr 5e-5", "lr 5e-4"}


def test_experiment_trains_each_variant_and_scores_it_on_the_ci_subset(runs_root, monkeypatch, tmp_path_factory):
    from phi3lab import models, runs

    tiny_dir = make_tiny_phi3(tmp_path_factory.mktemp("tiny-exp"))
    monkeypatch.setattr(models, "model_source", lambda name: str(tiny_dir))
    monkeypatch.setenv("PHI3LAB_PROFILE", "ci")
    fake_finished_run("lora")
    experiment = experiments.run_experiment({"slow": {"learning_rate": 1e-5}, "fast": {"learning_rate": 5e-3}},
                                            root="exp")
    assert set(experiment.results) == {"slow", "fast"} and experiment.best() in {"slow", "fast"}
    for name, result in experiment.results.items():
        assert result.summary["steps"] == 4
        assert result.history.series("validation")[0] == [0, 4]  # the base model, then the end
        assert (runs_root / "exp" / name / "adapter" / "adapter_config.json").is_file()
    subset = runs_root / "exp" / "validation-ci.jsonl"
    assert len(subset.read_text().splitlines()) == evaluation.CI_LIMIT
    assert runs.latest_run().name == "lora", "experiment runs in sub-folders are not 'the latest run'"


def test_the_validation_set_comes_from_the_run(runs_root, tmp_path):
    from evaluation_fixtures import write_chat

    chat = write_chat(tmp_path, "held-out", 3)
    run = fake_finished_run("mine", validation_file=str(chat))
    assert len(evaluation.load_validation(run)) == 3
