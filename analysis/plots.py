"""Seaborn figures of an experiment table (``analysis.loading``); each returns a matplotlib Figure.

- ``front_figure``: validation accuracy against learnables reduction, every (trial, iteration)
  point coloured by a hyperparameter, the Pareto front as a step line, the chosen level marked;
- ``trajectories_figure``: each trial's path through its pruning iterations;
- ``hyperparameters_figure``: each swept hyperparameter against each trial's final objective;
- ``progress_figure``: one run's learnables and validation accuracy per pruning iteration;
- ``fronts_figure``: each trial's returned network, validation accuracy against learnables
  reduction and, beside it, against latency measured on the exported model, each with its
  Pareto front (networks whose latency was measured on PyTorch, the export having failed, are
  drawn as crosses).

Figures are made with ``matplotlib.figure.Figure`` (no pyplot state; nothing to close).
"""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from analysis.pareto import pareto_front

PERCENT = {
    "reduction": "learnables reduction (%)",
    "validation_accuracy": "validation accuracy (%)",
    "latency_ms": "latency, batch 1 (ms)",
}


def _plain(table: pd.DataFrame) -> pd.DataFrame:
    """Reduction in percent, and string columns as objects (seaborn 0.13 predates pandas 3's string dtype)."""
    out = table.copy()
    out["reduction"] = 100 * out["reduction"]
    strings = [c for c in out.columns if pd.api.types.is_string_dtype(out[c]) and out[c].dtype != object]
    return out.astype({c: object for c in strings})


def _label(column: str) -> str:
    return PERCENT.get(column, column.replace("_", " "))


def front_figure(
    table: pd.DataFrame,
    front: pd.DataFrame,
    chosen: pd.Series | None = None,
    hue: str | None = None,
    metric: str = "validation_accuracy",
) -> Figure:
    fig = Figure(figsize=(8.5, 5), layout="constrained")
    ax = fig.subplots()
    data, line = _plain(table), _plain(front)
    sns.scatterplot(
        data=data,
        x="reduction",
        y=metric,
        hue=hue,
        palette="viridis" if hue else None,
        s=28,
        alpha=0.75,
        ax=ax,
        legend="brief" if hue else False,
    )
    ax.step(line["reduction"], line[metric], where="post", color="crimson", lw=1.8, label="Pareto front")
    if chosen is not None:
        ax.scatter(
            [100 * chosen["reduction"]],
            [chosen[metric]],
            marker="*",
            s=320,
            color="gold",
            edgecolor="black",
            zorder=5,
            label=f"chosen: trial {int(chosen['trial'])}, iteration {int(chosen['iteration'])}",
        )
    ax.set(
        xlabel=_label("reduction"),
        ylabel=_label(metric),
        title="Every pruning iteration of every trial, and the Pareto front",
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, title=hue)
    ax.grid(alpha=0.3)
    return fig


def trajectories_figure(table: pd.DataFrame, metric: str = "validation_accuracy") -> Figure:
    fig = Figure(figsize=(8.5, 5), layout="constrained")
    ax = fig.subplots()
    data = _plain(table).assign(trial=lambda d: d["trial"].astype(str))
    sns.lineplot(
        data=data,
        x="reduction",
        y=metric,
        hue="trial",
        units="run_id",
        estimator=None,
        marker="o",
        markersize=4,
        ax=ax,
        sort=False,
    )
    ax.set(xlabel=_label("reduction"), ylabel=_label(metric), title="Trials through their pruning iterations")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, title="trial")
    ax.grid(alpha=0.3)
    return fig


def hyperparameters_figure(
    table: pd.DataFrame, hyperparameters: list[str], objectives: tuple[str, ...] = ("validation_accuracy", "reduction")
) -> Figure:
    finals = _plain(table[table["returned"]])
    numeric = [h for h in hyperparameters if pd.api.types.is_numeric_dtype(finals[h])] or hyperparameters
    fig = Figure(figsize=(3.2 * max(len(numeric), 1), 2.9 * len(objectives)), layout="constrained")
    axes = fig.subplots(len(objectives), max(len(numeric), 1), squeeze=False)
    for row, objective in enumerate(objectives):
        for col, name in enumerate(numeric):
            sns.scatterplot(data=finals, x=name, y=objective, ax=axes[row][col], s=36)
            axes[row][col].set(xlabel=name, ylabel=_label(objective) if col == 0 else "")
            axes[row][col].grid(alpha=0.3)
    fig.suptitle("Each swept hyperparameter against each trial's final objectives")
    return fig


def progress_figure(table: pd.DataFrame, run_id: str, metric: str = "validation_accuracy") -> Figure:
    rows = table[table["run_id"] == run_id]
    if rows.empty:
        raise ValueError(f"run {run_id!r} is not in the table")
    fig = Figure(figsize=(8.5, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.plot(rows["iteration"], rows["learnables"] / 1e3, "o-", color="tab:purple", label="learnables")
    ax.set(
        xlabel="pruning iteration",
        ylabel="learnables (thousands)",
        title=f"Pruning progress of trial {int(rows['trial'].iloc[0])} (run {run_id[:8]})",
    )
    other = ax.twinx()
    other.plot(rows["iteration"], rows[metric], "s-", color="tab:green", label=_label(metric))
    other.set_ylabel(_label(metric))
    fig.legend(loc="outside right upper", frameon=False)
    ax.grid(alpha=0.3)
    return fig


def fronts_figure(table: pd.DataFrame, metric: str = "validation_accuracy") -> Figure:
    finals = table[table["returned"] & table["latency_ms"].notna()]
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, x, maximize in ((axes[0], "reduction", True), (axes[1], "latency_ms", False)):
        data = _plain(finals) if x == "reduction" else finals
        front = pareto_front(data, x=x, y=metric, maximize=(maximize, True))
        exported = data["latency_source"] != "torch"
        ax.scatter(data.loc[exported, x], data.loc[exported, metric], s=30, color="tab:blue", label="returned network")
        if (~exported).any():
            ax.scatter(
                data.loc[~exported, x],
                data.loc[~exported, metric],
                s=40,
                marker="x",
                color="tab:gray",
                label="export failed: latency on PyTorch",
            )
        ax.step(
            front[x], front[metric], where="post" if maximize else "pre", color="crimson", lw=1.8, label="Pareto front"
        )
        ax.set(xlabel=_label(x), ylabel=_label(metric) if x == "reduction" else "")
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower right", frameon=False)
    fig.suptitle("Each trial's returned network: accuracy against reduction and against measured latency")
    return fig
