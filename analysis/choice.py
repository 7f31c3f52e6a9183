"""Choosing the compression level to ship, and loading it.

``choose(table, max_drop=1.0)``: the row with the highest learnables reduction whose
validation accuracy is at most ``max_drop`` points below the unpruned network's (iteration 0
of the same trial). ``choose(table, min_reduction=0.8)``: the most accurate row with at least
that reduction. Only rows with a checkpoint are candidates, so the choice can always be
loaded: ``load_choice(row, tracking_uri)`` downloads that checkpoint and rebuilds the network
from the trial's own logged Hydra config (``model._target_``), as a plain ``nn.Module``. The
logged config is untrusted input: only allow-listed builders are instantiated (``allowed``),
or pass your own ``builder``.

>>> import pandas as pd
>>> rows = pd.DataFrame({"run_id": ["a"] * 3, "iteration": [0, 1, 2], "reduction": [0.0, 0.5, 0.8],
...                      "validation_accuracy": [97.0, 96.5, 94.0], "checkpoint": [None, "c1", "c2"]})
>>> float(choose(rows, max_drop=1.0)["reduction"]), int(choose(rows, min_reduction=0.6)["iteration"])
(0.5, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from analysis.allowed import check_targets, instantiate_allowed
from analysis.loading import downloaded
from prune_core import load_pruned
from prune_core.finetune import as_source, evaluate, resolve_loss, resolve_metric
from sweeps import layout
from sweeps.job.data import job_data


def accuracy_drop(table: pd.DataFrame, metric: str = "validation_accuracy") -> pd.Series:
    """Points lost against the same run's unpruned network (its iteration 0)."""
    if metric not in table:
        logged = [c for c in table.columns if c.startswith("validation_")]
        raise ValueError(f"metric {metric!r} is not logged; logged metrics: {logged}")
    baseline = table.loc[table["iteration"] == 0].set_index("run_id")[metric]
    return table["run_id"].map(baseline) - table[metric]


def choose(
    table: pd.DataFrame,
    max_drop: float | None = None,
    min_reduction: float | None = None,
    metric: str = "validation_accuracy",
) -> pd.Series:
    """The row to ship under one rule (see the module docstring)."""
    if (max_drop is None) == (min_reduction is None):
        raise ValueError("give exactly one rule: max_drop (points of accuracy) or min_reduction (0..1)")
    drop = accuracy_drop(table, metric)
    loadable = table["checkpoint"].notna()
    if "rejected" in table:
        loadable &= ~table["rejected"].astype(bool)
    if max_drop is not None:
        candidates = table[loadable & (drop <= max_drop)]
        if candidates.empty:
            raise ValueError(f"no row loses at most {max_drop} points of {metric}")
        return candidates.sort_values(["reduction", metric], ascending=False).iloc[0]
    candidates = table[loadable & (table["reduction"] >= min_reduction)]
    if candidates.empty:
        raise ValueError(
            f"no row with a checkpoint reaches a reduction of {min_reduction} "
            f"(the highest is {table['reduction'].max():.3f})"
        )
    return candidates.sort_values([metric, "reduction"], ascending=False).iloc[0]


def run_config(run_id: str, tracking_uri: str) -> DictConfig:
    """The Hydra config a run was made with (its ``hydra/config.yaml`` artifact; read, never instantiated)."""
    try:
        with downloaded(tracking_uri, run_id, layout.CONFIG) as path:
            config = OmegaConf.load(path)
    except Exception as exc:
        raise ValueError(
            f"run {run_id}: its hydra/config.yaml is not a readable config ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    if not isinstance(config, DictConfig):
        raise ValueError(f"run {run_id}: its hydra/config.yaml holds a {type(config).__name__}, not a mapping")
    return config


def validation_accuracy(model: nn.Module, config: DictConfig, allowed: Iterable[str] = ()) -> float:
    """Accuracy (%) of ``model`` on the validation split of the run's own data config (allow-listed builders),
    read batch by batch whatever its form (tensors, Datasets, DataLoaders)."""
    data = job_data(instantiate_allowed(config.get("data"), "data", allowed), "the run's data config")
    if data.validation is None:
        raise ValueError("the run's data config has no validation split")
    loss = resolve_loss(config.get("loss", "crossentropy"))
    metrics = (resolve_metric("accuracy"),)
    return evaluate(model, as_source(data.validation), loss, metrics, 256, torch.device("cpu"))["accuracy"]


def load_choice(
    row: pd.Series, tracking_uri: str, builder: Callable[[], nn.Module] | None = None, allowed: Iterable[str] = ()
) -> nn.Module:
    """The chosen network: its checkpoint, rebuilt from the trial's logged config (eval mode).

    The config's ``model._target_`` must be one of the allow-listed builders or named in
    ``allowed``; ``builder`` (a function returning the unpruned architecture) replaces it.
    """
    if builder is None:
        config = run_config(row["run_id"], tracking_uri)
        model_config = config.get("model")
        check_targets(model_config, "model", allowed)  # refused before anything is downloaded
        for key in layout.WEIGHT_FILE_KEYS:  # the architecture only: the weights come from the checkpoint
            if key in model_config:
                model_config[key] = None
        builder = lambda: instantiate_allowed(model_config, "model", allowed)  # noqa: E731
    if not isinstance(row.get("checkpoint"), str):
        raise ValueError(f"run {row['run_id']} iteration {row['iteration']} has no checkpoint to load")
    with downloaded(tracking_uri, row["run_id"], row["checkpoint"]) as path:
        try:
            return load_pruned(path, builder).eval()
        except ValueError as exc:
            raise ValueError(
                f"run {row['run_id']}, iteration {row['iteration']}: checkpoint {row['checkpoint']!r} "
                f"cannot be loaded: {str(exc).replace(repr(str(path)), 'it')}"
            ) from exc
