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


def test_experiment_table_ranks_runs_by_validation_loss(runs_root):
    results = {name: SimpleNamespace(history=history_with(loss), run=fake_finished_run(f"exp/{folder}", loss))
               for name, folder, loss in (("lr 5e-5", "slow", 2.9), ("lr 5e-4", "fast", 2.1))}
    experiment = experiments.Experiment({"lr 5e-5": {"learning_rate": 5e-5}, "lr 5e-4": {"learning_rate": 5e-4}},
                                        results)
    assert experiment.best() == "lr 5e-4"
    lines = str(experiment).splitlines()
    assert lines[0].split()[:2] == ["run", "steps"] and "changed from the experiment's base" in lines[0]
    assert lines[2].startswith("lr 5e-4") and "learning_rate=0.0005" in lines[2] and f"{math.exp(2.1):.2f}" in lines[2]
    assert "<td style='text-align:left'>lr 5e-5</td>" in experiment._repr_html_()
    assert set(experiment.histories()) == {"lr 5e-5", "lr 5e-4"}
    assert experiment.diagnosis().splitlines()[0].startswith("lr 5e-5: unknown: needs the validation loss")


def test_the_lab_curves_sit_side_by_side():
    from phi3lab import plots

    histories = {"A": history_with(2.5), "B": history_with(2.9), "C": history_with(4.0)}
    figure = plots.plot_loss_panels(histories, title="lab")
    assert [ax.get_title() for ax in figure.axes] == ["A", "B", "C"]
    assert all(len(ax.lines) == 2 for ax in figure.axes), "training and validation loss in every panel"


def test_experiment_trains_each_variant_and_scores_it_on_the_ci_subset(runs_root, monkeypatch, tmp_path_factory,
                                                                      capsys):
    from phi3lab import models, runs

    tiny_dir = make_tiny_phi3(tmp_path_factory.mktemp("tiny-exp"))
    monkeypatch.setattr(models, "model_source", lambda name: str(tiny_dir))
    monkeypatch.setenv("PHI3LAB_PROFILE", "ci")
    fake_finished_run("lora")
    variants = {"slow": {"learning_rate": 1e-5}, "few": {"train_subset": 6, "max_steps": 50, "epochs": 3}}
    experiment = experiments.run_experiment(variants, root="exp")
    assert set(experiment.results) == {"slow", "few"} and experiment.best() in {"slow", "few"}
    for name, result in experiment.results.items():
        assert result.summary["steps"] == 4, "under the CI profile its step limit wins over the variant's"
        assert result.history.series("validation")[0] == [0, 4]  # the base model, then the end
        assert (runs_root / "exp" / name / "adapter" / "adapter_config.json").is_file()
    subset = runs_root / "exp" / f"validation-first{evaluation.CI_LIMIT}.jsonl"
    assert len(subset.read_text().splitlines()) == evaluation.CI_LIMIT
    assert len((runs_root / "exp" / "train-first6.jsonl").read_text().splitlines()) == 6
    few = runs.find_run("exp/few").config()
    assert few.train_file.endswith("train-first6.jsonl") and few.epochs == 3
    assert runs.latest_run().name == "lora", "experiment runs in sub-folders are not 'the latest run'"

    capsys.readouterr()
    again = experiments.run_experiment(variants, root="exp")  # the same settings: the finished runs are reused
    assert "already finished" in capsys.readouterr().out
    assert again.results["slow"].summary == experiment.results["slow"].summary
    assert [r["run"] for r in runs.run_records("exp")] == ["exp/slow", "exp/few"]


def test_the_validation_set_comes_from_the_run(runs_root, tmp_path):
    from evaluation_fixtures import write_chat

    chat = write_chat(tmp_path, "held-out", 3)
    run = fake_finished_run("mine", validation_file=str(chat))
    assert len(evaluation.load_validation(run)) == 3


# ----- naming and listing runs -------------------------------------------------------------------------
def test_a_run_is_named_from_what_differs_from_the_defaults():
    from phi3lab.runs import changed_settings, suggest_run_name

    assert suggest_run_name(TrainConfig()) == "lora"
    assert suggest_run_name(TrainConfig(eval_steps=7, save_steps=3, run_name="x")) == "lora", "bookkeeping is no change"
    config = TrainConfig(learning_rate=5e-4, lora_r=8, validation_file=None, target_modules=["qkv_proj", "o_proj"])
    name = suggest_run_name(config)
    assert name == "lora-val-auto-lr5e-4-r8-targets-qkv_proj.o_proj"
    assert TrainConfig(run_name=name).run_name == name, "the suggestion is a valid run name"
    assert suggest_run_name(TrainConfig(learning_rate=1.5e-5, packing=False)) == "lora-lr1.5e-5-packing-off"
    base = TrainConfig(lora_r=8)
    assert suggest_run_name(TrainConfig(lora_r=8, epochs=3), defaults=base, prefix="A") == "A-epochs3"
    assert changed_settings(config) == {"validation_file": None, "learning_rate": 5e-4, "lora_r": 8,
                                        "target_modules": ["qkv_proj", "o_proj"]}


def test_compare_runs_lists_settings_and_final_losses(runs_root):
    fake_finished_run("lora", 2.6)
    fake_finished_run("lora-lr5e-4", 2.4, learning_rate=5e-4)
    fake_finished_run("experiments/lab/C", 3.9, learning_rate=1e-2, train_file="runs/x/train-first8.jsonl")
    (runs_root / "unfinished" / "checkpoint-2").mkdir(parents=True)
    table = experiments.compare_runs()
    assert [row["run"] for row in table.rows] == ["lora", "lora-lr5e-4", "experiments/lab/C"]
    lines = str(table).splitlines()
    assert lines[0].split()[:6] == ["run", "steps", "train", "loss", "val", "loss"]
    assert lines[1].split()[1:] == ["4", "2.000", "2.600", f"{math.exp(2.6):.2f}", "0.0", "nothing"]
    assert lines[2].endswith("learning_rate=0.0005")
    assert lines[3].endswith("train_file=train-first8.jsonl, learning_rate=0.01")
    assert [row["run"] for row in experiments.compare_runs("experiments").rows] == ["experiments/lab/C"]
    assert str(experiments.compare_runs("nothing-here")) == "no finished runs yet"


def diagnosis_of(validation: list[float], train: list[float] | None = None) -> str:
    history = MetricsHistory(run="x")
    for step, loss in enumerate(validation):
        history.add(step * 5, "validation", loss)
    for step, loss in enumerate(train or []):
        history.add(step * 5 + 1, "train", loss)
    return experiments.diagnose(history).pattern


FALLING = [3.5, 3.0, 2.4, 1.8, 1.2]  # training loss that keeps falling (memorising)
JUMPING = [3.5, 6.0, 9.0, 5.0, 4.5]  # training loss that jumps and never settles


@pytest.mark.parametrize("validation, train, pattern", [
    ([3.3, 3.0, 2.8, 2.7], FALLING, "healthy"),
    ([3.3, 2.9, 2.7, 2.8, 3.0], FALLING, "overfitting"),
    ([3.3, 2.9, 2.7, 3.1, 3.6], FALLING, "overfitting"),  # ends above its start, but it is memorising
    ([3.3, 4.5, 6.0, 5.1], JUMPING, "unstable"),
    ([3.3, 3.0, 3.4, 3.2], JUMPING, "unstable"),
    ([3.3, 3.29, 3.27], [3.5, 3.5, 3.4], "too slow"),
    ([3.3], FALLING, "unknown"),
])
def test_diagnose_names_the_loss_pattern(validation, train, pattern):
    assert diagnosis_of(validation, train) == pattern


def test_a_diagnosis_gives_its_evidence():
    history = MetricsHistory(run="x")
    for step, loss in [(0, 3.3), (10, 2.7), (20, 3.0)]:
        history.add(step, "validation", loss)
    for step, loss in [(1, 3.4), (10, 2.0), (20, 1.1)]:
        history.add(step, "train", loss)
    assert str(experiments.diagnose(history)) == ("overfitting: validation loss 3.30 at step 0, lowest 2.70 at step "
                                                  "10, 3.00 at step 20: rose again after its lowest point while the "
                                                  "training loss fell to 1.10")
