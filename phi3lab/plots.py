"""Figures for the course: matplotlib Figures in one style, readable on a workshop projector.

Every ``plot_*`` function returns a ``matplotlib.figure.Figure`` (never calls ``plt.show``), so notebooks
display it and tests can inspect it. ``live_loss_plot`` redraws the loss figure while training runs.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg") if not matplotlib.get_backend().lower().startswith(("module://", "ipympl")) else None
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

# Colour-blind-safe palette (Okabe-Ito); large fonts for projectors.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
STYLE = {
    "figure.figsize": (9, 5),
    "figure.dpi": 100,
    "font.size": 14,
    "axes.titlesize": 17,
    "axes.labelsize": 15,
    "xtick.labelsize": 13,
    "ytick.labelsize": 13,
    "legend.fontsize": 13,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "lines.linewidth": 2.5,
}


def new_figure(title: str, ncols: int = 1, figsize: tuple[float, float] | None = None):
    """A Figure and its axes in the course style. All plot functions start here."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, ncols, figsize=figsize or (STYLE["figure.figsize"][0] * (1 + 0.6 * (ncols - 1)), 5),
                                 layout="constrained")
        fig.suptitle(title, fontsize=STYLE["axes.titlesize"], fontweight="bold")
    plt.close(fig)  # notebooks show the returned Figure once; pyplot must not show it again
    return fig, axes


def styled(fn):
    """Decorator: draw inside the course style, so text sizes and colours match everywhere."""

    def wrapper(*args, **kwargs) -> Figure:
        with plt.rc_context(STYLE):
            return fn(*args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


# ----- evaluation figures (notebook 04) -------------------------------------------------------
def _as_histories(histories) -> dict:
    """One history, a path to one, or a {label: history} mapping -> {label: MetricsHistory}."""
    from collections.abc import Mapping
    from pathlib import Path

    from .history import MetricsHistory

    if not isinstance(histories, Mapping):
        histories = {"": histories}
    return {label: MetricsHistory.load(h) if isinstance(h, (str, Path)) else h for label, h in histories.items()}


@styled
def plot_loss_curves(histories, title: str | None = None) -> Figure:
    """Training (solid) and validation (dashed, dots) loss against the optimiser step.

    ``histories`` is a ``MetricsHistory`` (local or Azure, same format), a path to one, or a
    ``{label: history}`` mapping to compare runs on one chart.
    """
    runs = _as_histories(histories)
    sources = sorted({h.source for h in runs.values()})
    where = "Azure fine-tuning job" if sources == ["azure"] else "local training" if sources == ["local"] else "runs"
    fig, ax = new_figure(title or f"Loss during {where}")
    _draw_losses(ax, runs)
    return fig


@styled
def plot_loss_panels(histories, title: str = "Loss curves side by side") -> Figure:
    """One panel per run of a ``{label: history}`` mapping, side by side, each on its own loss scale, so the
    shape of every curve stays readable even when one run's loss is far above the others (notebook 04's lab)."""
    runs = _as_histories(histories)
    fig, axes = new_figure(title, ncols=len(runs))
    for i, (ax, (label, history)) in enumerate(zip([axes] if len(runs) == 1 else axes, runs.items(), strict=True)):
        _draw_losses(ax, {"": history}, first_colour=i)
        ax.set_title(label)
    return fig


def _draw_losses(ax, runs: dict, first_colour: int = 0) -> None:
    """Each run's training (solid) and validation (dashed, dots) loss on one axes."""
    drawn = 0
    for i, (label, history) in enumerate(runs.items(), start=first_colour):
        colour = PALETTE[i % len(PALETTE)]
        for split, style in (("train", {"linestyle": "-"}), ("validation", {"linestyle": "--", "marker": "o"})):
            steps, values = history.series(split)
            if steps:
                ax.plot(steps, values, color=colour, label=f"{label} {split}".strip(), **style)
                drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no loss values recorded yet", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend()
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("cross-entropy loss")


def live_loss_plot(title: str | None = None):
    """A TrainerCallback that redraws ``plot_loss_curves`` in place while training runs (notebook 02)."""
    from transformers import TrainerCallback

    from .history import MetricsHistory

    class LiveLossPlot(TrainerCallback):
        """``train`` hands it the run's own history, so a resumed run is plotted from its first step."""

        def __init__(self):
            self.history = MetricsHistory(source="local")
            self.handle = None

        def _draw(self):
            from IPython.display import display

            figure = plot_loss_curves(self.history, title=title)
            if self.handle is None:
                self.handle = display(figure, display_id=True)
            else:
                self.handle.update(figure)

        def on_train_begin(self, args, state, control, **kwargs):
            self._draw()

        def on_train_end(self, args, state, control, **kwargs):
            self._draw()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if {"loss", "eval_loss"} & set(logs or {}):
                self._draw()

    return LiveLossPlot()


def _label_bars(ax, bars, fmt: str) -> None:
    ax.bar_label(bars, labels=[format(b.get_height(), fmt) for b in bars], padding=3)


@styled
def plot_perplexity(before: float, after: float, names: tuple[str, str] = ("base", "fine-tuned"),
                    title: str = "Validation perplexity (lower is better)") -> Figure:
    """Two bars, before and after fine-tuning, with the relative change written above them."""
    fig, ax = new_figure(title, figsize=(7, 5))
    bars = ax.bar(list(names), [before, after], color=PALETTE[:2], width=0.55)
    _label_bars(ax, bars, ".2f")
    change = (after - before) / before * 100 if before else float("nan")
    ax.set_ylim(0, max(before, after) * 1.25)
    ax.set_ylabel("perplexity")
    ax.set_title(f"change: {change:+.1f}%", fontsize=STYLE["axes.labelsize"])
    ax.grid(axis="x", visible=False)
    return fig


@styled
def plot_metric_bars(scores, title: str = "Metrics (higher is better)", ylim: tuple[float, float] | None = (0, 1),
                     ylabel: str = "score") -> Figure:
    """Grouped bars: ``scores`` is ``{series: {metric: value}}``, e.g. ``{"base": {...}, "fine-tuned": {...}}``."""
    import numpy as np

    series = list(scores)
    metrics = list(dict.fromkeys(m for values in scores.values() for m in values))
    many = len(metrics) > 6
    fig, ax = new_figure(title, figsize=(max(9, 0.9 * len(metrics) * max(1, len(series))), 5.5 if many else 5))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(metrics))
    for i, name in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        values = [scores[name].get(m, float("nan")) for m in metrics]
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name, color=colour)
        if not many or len(series) == 1:
            _label_bars(ax, bars, ".2f")
    ax.set_xticks(x, metrics, rotation=30 if many else 0, ha="right" if many else "center")
    if ylim:
        ax.set_ylim(ylim[0], ylim[1] * 1.12)
    ax.set_ylabel(ylabel)
    ax.grid(axis="x", visible=False)
    if len(series) > 1:
        ax.legend(loc="lower right")
    return fig


@styled
def plot_confusion_matrix(matrix, labels, title: str = "Intent confusion matrix") -> Figure:
    """Rows are the true intents, columns the predicted ones; the diagonal counts correct answers."""
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(7.0, 0.75 * len(labels) + 3)
    fig, ax = new_figure(title, figsize=(size + 1.5, size))
    ConfusionMatrixDisplay(confusion_matrix=np.asarray(matrix), display_labels=list(labels)).plot(
        ax=ax, cmap="Blues", xticks_rotation=45, colorbar=False, values_format="d")
    ax.grid(False)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
    ax.set_xlabel("predicted intent")
    ax.set_ylabel("true intent")
    return fig


# ----- endpoint monitoring (notebook 05) ------------------------------------------------------
@styled
def plot_endpoint_calls(records: list[dict], title: str = "Endpoint calls: latency and volume") -> Figure:
    """Left: latency of each call over time (x = failed). Right: calls per minute, failures stacked on top.

    ``records`` come from ``phi3lab.monitoring.read_log``; one colour per endpoint.
    """
    import matplotlib.dates as mdates

    fig, (latency_ax, volume_ax) = new_figure(title, ncols=2)
    if not records:
        for ax in (latency_ax, volume_ax):
            ax.text(0.5, 0.5, "no calls logged yet", ha="center", va="center", transform=ax.transAxes)
        return fig
    endpoints = sorted({r["endpoint"] for r in records})
    minutes = sorted({r["_time"].replace(second=0, microsecond=0) for r in records})
    bottom = {m: 0 for m in minutes}
    width = 0.8 / (24 * 60)  # bar width in days: most of one minute
    for i, name in enumerate(endpoints):
        colour = PALETTE[i % len(PALETTE)]
        mine = [r for r in records if r["endpoint"] == name]
        for ok, marker in ((True, "o"), (False, "x")):
            points = [r for r in mine if (r["status"] == 200) == ok]
            if points:
                latency_ax.scatter([r["_time"] for r in points], [r["latency_s"] for r in points], color=colour,
                                   marker=marker, s=30 if ok else 60, label=f"{name}{'' if ok else ' (failed)'}")
        for ok, hatch in ((True, None), (False, "//")):
            counts = {m: 0 for m in minutes}
            for r in mine:
                if (r["status"] == 200) == ok:
                    counts[r["_time"].replace(second=0, microsecond=0)] += 1
            if any(counts.values()):
                volume_ax.bar(minutes, [counts[m] for m in minutes], width, bottom=[bottom[m] for m in minutes],
                              color=colour, hatch=hatch, alpha=1.0 if ok else 0.5,
                              label=f"{name}{'' if ok else ' failed'}")
                for m in minutes:
                    bottom[m] += counts[m]
    latency_ax.set_ylabel("latency (s)")
    latency_ax.set_ylim(bottom=0)
    volume_ax.set_ylabel("calls per minute")
    for ax in (latency_ax, volume_ax):
        locator = mdates.AutoDateLocator(maxticks=6)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.set_xlabel("time (UTC)")
        ax.legend(fontsize=STYLE["legend.fontsize"] - 2)
    return fig


# ----- data preparation (notebook 01) -------------------------------------------------------
@styled
def plot_token_lengths(lengths, max_tokens: int | None = None, title: str = "Tokens per conversation") -> Figure:
    """Histogram of conversation lengths (chat template included), with the token limit marked.

    ``lengths`` is a list of token counts or anything with ``.conversation_tokens`` (``phi3lab.data.stats``).
    """
    import numpy as np

    values = np.asarray(getattr(lengths, "conversation_tokens", lengths))
    fig, ax = new_figure(title)
    if values.size == 0:
        ax.text(0.5, 0.5, "no token counts (pass a tokenizer to stats)", ha="center", va="center",
                transform=ax.transAxes)
        return fig
    ax.hist(values, bins=min(40, max(5, int(np.sqrt(values.size)))), color=PALETTE[0], edgecolor="white")
    p95 = float(np.percentile(values, 95))
    ax.axvline(p95, color=PALETTE[1], linestyle="--", label=f"95th percentile: {p95:.0f}")
    if max_tokens and max_tokens <= values.max() * 1.5:
        ax.axvline(max_tokens, color=PALETTE[3], label=f"limit: {max_tokens}")
    ax.set_xlabel("tokens (with the chat template)")
    ax.set_ylabel("conversations")
    ax.legend(loc="upper right")
    return fig


@styled
def plot_turns(turns, title: str = "Assistant replies per conversation") -> Figure:
    """Bars of how many conversations have 1, 2, ... assistant replies (``DataStats.turns`` or a dict)."""
    counts = dict(sorted(getattr(turns, "turns", turns).items()))
    fig, ax = new_figure(title, figsize=(7, 5))
    bars = ax.bar([str(k) for k in counts], list(counts.values()), color=PALETTE[2], width=0.6)
    _label_bars(ax, bars, "d")
    ax.set_xlabel("assistant replies")
    ax.set_ylabel("conversations")
    ax.set_ylim(0, max(counts.values(), default=1) * 1.15)
    ax.grid(axis="x", visible=False)
    return fig


@styled
def plot_label_balance(label_counts, title: str = "Conversations per intent") -> Figure:
    """Horizontal bars per label, with the half-of-largest line: a label below it is under-represented."""
    counts = dict(sorted(getattr(label_counts, "label_counts", label_counts).items(), key=lambda kv: kv[1]))
    fig, ax = new_figure(title, figsize=(9, max(4.5, 0.45 * len(counts) + 1.5)))
    bars = ax.barh(list(counts), list(counts.values()), color=PALETTE[0])
    ax.bar_label(bars, padding=3)
    if counts:
        half = max(counts.values()) / 2
        ax.axvline(half, color=PALETTE[3], linestyle="--", label="half of the largest")
        fig.legend(loc="outside lower center")
        ax.set_xlim(0, max(counts.values()) * 1.15)
    ax.set_xlabel("conversations")
    ax.grid(axis="y", visible=False)
    return fig
