"""A job's options from its configuration, checked before any data is loaded or anything trained.

``pruning_options(cfg, ...)`` and ``training_options(cfg, group, ...)`` build prune_core's
``PruningOptions`` and ``TrainingOptions`` from the ``pruning``, ``training`` and
``base.training`` groups (the app adds what it owns: folders, callbacks, validation data, the
seed), and ``deployment_options(cfg)`` the ``export`` group's ``DeploymentOptions``.
``check_job_config(cfg)`` builds them all, resolves ``loss`` and checks that the latency and ONNX
metrics ``sweep.objectives`` and ``sweep.constraints`` name will be measured, and that a study
with Optuna's pruner (``hydra.sweeper.pruner``) reports an objective of the pruning history (a
deployment metric is measured once, after pruning), raising ValueError
naming the group, the value and what is allowed. Hydra's schemas (``sweeps.job.schemas``) have
already refused wrong types and unknown keys; this refuses values the dataclasses do not allow.
``sweeps.run`` calls it first in every job, and the study's callback once before the study
starts, so a bad value on the command line fails in a second and leaves no run, study or cache.

>>> from omegaconf import OmegaConf
>>> cfg = OmegaConf.create({"seed": 0, "loss": "crossentropy", "pruning": {"increment": 0},
...                         "training": {}, "base": {"training": {}}})
>>> check_job_config(cfg)
Traceback (most recent call last):
ValueError: pruning: increment must be a number in (0, 1], got 0
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from prune_core import PruningOptions, TrainingOptions
from prune_core.finetune import resolve_loss
from sweeps.deployment.measure import DeploymentOptions
from sweeps.job.schemas import TRAINING_APP
from sweeps.process.distributed import check_setting

DEPLOYMENT_METRICS = ("latency_", "onnx_")  # what a job measures after pruning, not in the pruning history


def _group(cfg: DictConfig, group: str) -> dict:
    return OmegaConf.to_container(OmegaConf.select(cfg, group), resolve=True)


def pruning_options(cfg: DictConfig, **runtime: Any) -> PruningOptions:
    """``PruningOptions`` from ``cfg.pruning`` and ``runtime`` (checkpoint_path, plots_path, iteration_fn,
    resume_from)."""
    try:
        return PruningOptions(**_group(cfg, "pruning"), **runtime)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"pruning: {exc}") from exc


def training_options(cfg: DictConfig, group: str = "training", **runtime: Any) -> TrainingOptions:
    """``TrainingOptions`` from config group ``group`` ("training" or "base.training"), seeded by ``cfg.seed``."""
    values = {k: v for k, v in _group(cfg, group).items() if k not in TRAINING_APP}
    try:
        return TrainingOptions(**(values | runtime), seed=cfg.seed)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{group}: {exc}") from exc


def deployment_options(cfg: DictConfig) -> DeploymentOptions:
    """``DeploymentOptions`` from ``cfg.export`` (defaults when the config has no such group)."""
    try:
        return DeploymentOptions(**(_group(cfg, "export") or {}))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"export: {exc}") from exc


def check_job_config(cfg: DictConfig) -> None:
    """Raise ValueError for a configured value that no data could make valid (see the module docstring)."""
    try:
        resolve_loss(cfg.loss)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"loss: {exc}") from exc
    pruning_options(cfg)
    for group in ("training", "base.training"):
        training_options(cfg, group)
    check_setting(OmegaConf.select(cfg, "training.distributed", default="off"))
    measured = deployment_options(cfg).metrics()
    sweep = OmegaConf.select(cfg, "sweep") or {}
    for key in ("objectives", "constraints"):
        for name in sweep.get(key) or []:
            if str(name).startswith(DEPLOYMENT_METRICS) and name not in measured:
                raise ValueError(
                    f"sweep.{key} names {name!r}, which this configuration does not measure "
                    f"(export.onnx / export.latency / export.batch_sizes); it measures {measured}"
                )
    pruner = OmegaConf.select(cfg, "hydra.sweeper.pruner", default="none")
    reported = str((sweep.get("objectives") or [""])[0])
    if pruner != "none" and reported.startswith(DEPLOYMENT_METRICS):
        raise ValueError(
            f"hydra.sweeper.pruner={pruner}: the objective {reported!r} is measured once, after "
            "pruning; a pruner needs an objective of the pruning history (reduction, "
            "validation_accuracy, ...)"
        )
