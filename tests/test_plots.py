"""Evaluation figures: each returns a styled Figure drawn from real inputs (local or Azure history)."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from phi3lab import plots
from phi3lab.history import MetricsHistory

INTENTS = ["network", "controllers", "account"]


def make_history(source: str) -> MetricsHistory:
    history = MetricsHistory(source=source, run="run-1")
    for step in range(1, 11):
        history.add(step, "train", 3.0 - 0.1 * step, epoch=step / 10)
    for step in (5, 10):
        history.add(step, "validation", 2.9 - 0.05 * step)
    return history


def lines_by_label(fig: Figure) -> dict:
    return {line.get_label(): line for line in fig.axes[0].get_lines()}


@pytest.mark.parametrize("source, title", [("local", "Loss during local training"),
                                           ("azure", "Loss during Azure fine-tuning job")])
def test_loss_curves_read_local_and_azure_histories_alike(source, title):
    fig = plots.plot_loss_curves(make_history(source))
    lines = lines_by_label(fig)
    assert set(lines) == {"train", "validation"}
    assert list(lines["train"].get_xdata()) == list(range(1, 11))
    assert list(lines["validation"].get_ydata()) == pytest.approx([2.65, 2.4])
    assert fig.get_suptitle() == title


def test_loss_curves_from_a_saved_azure_history_file(tmp_path):
    path = make_history("azure").save(tmp_path / "history.json")
    fig = plots.plot_loss_curves(str(path))
    assert lines_by_label(fig)["train"].get_ydata()[-1] == pytest.approx(2.0)


def test_loss_curves_compare_runs_with_one_colour_each():
    fig = plots.plot_loss_curves({"lr 1e-4": make_history("local"), "lr 5e-4": make_history("local")})
    lines = lines_by_label(fig)
    assert set(lines) == {"lr 1e-4 train", "lr 1e-4 validation", "lr 5e-4 train", "lr 5e-4 validation"}
    assert lines["lr 1e-4 train"].get_color() == lines["lr 1e-4 validation"].get_color()
    assert lines["lr 1e-4 train"].get_color() != lines["lr 5e-4 train"].get_color()


def test_empty_history_says_so_instead_of_drawing_nothing():
    fig = plots.plot_loss_curves(MetricsHistory())
    assert "no loss values" in fig.axes[0].texts[0].get_text()


def test_perplexity_bars_show_values_and_relative_change():
    fig = plots.plot_perplexity(20.0, 12.0)
    ax = fig.axes[0]
    assert [bar.get_height() for bar in ax.patches] == [20.0, 12.0]
    assert ax.get_title() == "change: -40.0%"


def test_metric_bars_group_series_per_metric():
    scores = {"base": {"token F1": 0.2, "ROUGE-L": 0.1}, "fine-tuned": {"token F1": 0.5, "ROUGE-L": 0.4}}
    fig = plots.plot_metric_bars(scores)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["token F1", "ROUGE-L"]
    assert sorted(bar.get_height() for bar in ax.patches) == [0.1, 0.2, 0.4, 0.5]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["base", "fine-tuned"]


def test_confusion_matrix_cells_and_axis_names():
    matrix = [[3, 1, 0], [0, 4, 0], [1, 0, 2]]  # as ClassifierReport stores it (JSON-friendly lists)
    fig = plots.plot_confusion_matrix(matrix, INTENTS)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == INTENTS
    assert sorted(int(t.get_text()) for t in ax.texts) == sorted(np.ravel(matrix).tolist())
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted intent", "true intent")


def test_figures_use_the_course_style():
    fig = plots.plot_perplexity(2.0, 1.0)
    assert fig.axes[0].yaxis.label.get_fontsize() == plots.STYLE["axes.labelsize"]


def test_trainer_log_becomes_the_shared_history_skipping_non_finite_loss():
    log = [{"step": 0, "eval_loss": 3.4, "epoch": 0.0}, {"step": 5, "loss": 3.0, "learning_rate": 2e-4, "epoch": 0.1},
           {"step": 10, "loss": float("nan"), "epoch": 0.2}, {"step": 10, "train_runtime": 1.0}]
    history = MetricsHistory.from_trainer_log(log, run="r")
    assert history.series("train") == ([5], [3.0]) and history.series("validation") == ([0], [3.4])
    assert history.records[1]["learning_rate"] == 2e-4 and history.source == "local"


def test_live_loss_plot_draws_the_shared_history(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, display_id=None: shown.append(obj) or _Handle(shown))
    plot = plots.live_loss_plot()
    plot.history.add(1, "train", 2.0)
    plot.on_log(None, None, None, logs={"loss": 2.0})
    plot.history.add(1, "validation", 1.9)
    plot.on_log(None, None, None, logs={"eval_loss": 1.9})
    assert len(shown) == 2 and len(shown[-1].axes[0].lines) == 2


class _Handle:
    def __init__(self, shown):
        self.shown = shown

    def update(self, obj):
        self.shown.append(obj)
