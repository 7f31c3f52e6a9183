"""The pruning-progress figure: learnables, fine-tuning loss and the metric across iterations.

``pruning_progress_figure(pruning, training, validation, metric)`` draws, against the
fine-tuning iteration, (1) the learnable parameters left after each pruning iteration,
(2) the training loss and the validation loss, (3) a metric (accuracy, ...) when one was
computed; dotted lines mark where each pruning iteration begins. A history without any
fine-tuning step yet (stopped during the first iteration) draws empty panels. It uses
``matplotlib.figure`` directly (no pyplot state, no display needed), imported only when a
figure is drawn. ``save_figure`` writes it
atomically.

>>> empty = pd.DataFrame()
>>> fig = pruning_progress_figure(pd.DataFrame({"iteration": [0], "learnables": [1000]}), empty, empty, "accuracy")
>>> len(fig.axes)
3
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from prune_core.channels import atomic_path

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn: prune_core itself does not need it
    from matplotlib.figure import Figure


def pruning_progress_figure(
    pruning: pd.DataFrame, training: pd.DataFrame, validation: pd.DataFrame, metric: str = "loss"
) -> Figure:
    """The figure described in the module docstring (the history tables of ``PruningInfo``)."""
    from matplotlib.figure import Figure

    panels = 2 if metric == "loss" else 3
    fig = Figure(figsize=(9, 2.6 * panels), layout="constrained")
    axes = fig.subplots(panels, 1, sharex=True)
    starts = training.groupby("pruning_iteration")["iteration"].min() if len(training) else pd.Series(dtype=float)
    ends = pruning.get("end_iteration", pd.Series(0, index=pruning.index))
    axes[0].step(ends, pruning["learnables"] / 1e3, where="post", marker="o", color="tab:purple")
    axes[0].set_ylabel("learnables (thousands)")
    axes[0].set_title("Pruning progress")
    if len(training):
        axes[1].plot(training["iteration"], training["loss"], lw=0.8, alpha=0.7, label="training")
    if len(validation):
        axes[1].plot(validation["iteration"], validation["loss"], "o-", ms=3, color="k", label="validation")
    axes[1].set_ylabel("loss")
    if panels == 3:
        if metric in training and len(training):
            axes[2].plot(training["iteration"], training[metric], lw=0.8, alpha=0.7, label="training")
        if metric in validation:
            axes[2].plot(validation["iteration"], validation[metric], "o-", ms=3, color="k", label="validation")
        axes[2].set_ylabel(f"{metric} (%)" if metric in ("accuracy", "error-rate") else metric)
    for ax in axes[1:]:
        if ax.lines:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    for ax in axes:
        for start in starts:
            ax.axvline(start - 0.5, color="0.7", ls=":", lw=0.8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("fine-tuning iteration (dotted lines: a pruning iteration begins)")
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Save ``fig`` to ``path`` (format from the suffix) through a temporary file, then rename."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"plots_path {str(path)!r}: folder {str(path.parent)!r} does not exist")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    return path
