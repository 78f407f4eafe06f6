"""Figures for the course: matplotlib Figures in one style, readable on a workshop projector.

Every function returns a ``matplotlib.figure.Figure`` (never calls ``plt.show``), so notebooks
display it and tests can inspect it.
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
