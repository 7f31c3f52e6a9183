"""Optuna's pruners for the sweeper (``hydra.sweeper.pruner``) and the job's side of them.

``hydra.sweeper.pruner=median|hyperband|successive_halving|none`` picks one of Optuna's own
pruners (``make_pruner``), with Optuna's defaults or the keyword arguments in
``hydra.sweeper.pruner_options`` (``+hydra.sweeper.pruner_options.n_startup_trials=2``).
Pruning needs intermediate values, which only
a single-objective study has: ``check_pruner`` refuses a pruner for several objectives, and a
study without a storage the jobs can open.

A job reports to its trial through ``job_trial()``: the study (``hydra.sweeper``, from
``HydraConfig``) loaded from its storage with the same pruner, and the trial whose id the
sweeper put in ``OPTUNA_TRIAL_ID``. ``trial.report(value, step)`` then ``trial.should_prune()``
is Optuna's usual loop; a job that stops early returns ``{"pruned": True, ...}`` and the
sweeper tells the study the trial was PRUNED.

>>> type(make_pruner("median")).__name__, type(make_pruner("none")).__name__
('MedianPruner', 'NopPruner')
>>> check_pruner("median", ["maximize", "maximize"], storage="sqlite:///optuna.db")
Traceback (most recent call last):
ValueError: hydra.sweeper.pruner=median: Optuna prunes single-objective studies only, and this study has 2 ...
"""

from __future__ import annotations

import os

import optuna

from optuna_sweep.reconnecting import RECONNECT_SECONDS
from optuna_sweep.storage import open_storage

PRUNERS = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
}
TRIAL_ID_ENV = "OPTUNA_TRIAL_ID"


def make_pruner(name: str, options: dict | None = None) -> optuna.pruners.BasePruner:
    """The Optuna pruner called ``name`` (see ``PRUNERS``) built with ``options`` (its keyword arguments)."""
    if name not in PRUNERS:
        raise ValueError(f"hydra.sweeper.pruner={name!r} is not supported; use one of {sorted(PRUNERS)}")
    try:
        return PRUNERS[name](**dict(options or {}))
    except TypeError as exc:
        raise ValueError(
            f"hydra.sweeper.pruner_options={dict(options or {})} do not fit {PRUNERS[name].__name__}: {exc}"
        ) from exc


def check_pruner(name: str, directions: list[str], storage: str | None, options: dict | None = None) -> None:
    """Raise ValueError for a pruner this study cannot use (see the module docstring)."""
    make_pruner(name, options)
    if name == "none":
        return
    if len(directions) > 1:
        raise ValueError(
            f"hydra.sweeper.pruner={name}: Optuna prunes single-objective studies only, and this study "
            f"has {len(directions)} objectives; use hydra.sweeper.pruner=none, or one entry in "
            "hydra.sweeper.direction"
        )
    if storage is None:
        raise ValueError(
            f"hydra.sweeper.pruner={name} needs hydra.sweeper.storage: the jobs report their "
            "intermediate values to the study there"
        )


def job_trial() -> optuna.Trial | None:
    """The trial this job runs, when its sweep has a pruner (None otherwise: a single run, no pruner)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra = HydraConfig.get()
    name = hydra.sweeper.get("pruner", "none") if hydra.mode == RunMode.MULTIRUN else "none"
    trial_id = os.environ.get(TRIAL_ID_ENV)
    if name == "none" or trial_id is None:
        return None
    options = hydra.sweeper.get("pruner_options") or {}
    storage = open_storage(
        hydra.sweeper.storage,
        driver_hint=hydra.sweeper.get("driver_hint"),
        reconnect_seconds=hydra.sweeper.get("reconnect_seconds", RECONNECT_SECONDS),
    )
    study = optuna.load_study(study_name=hydra.sweeper.study_name, storage=storage, pruner=make_pruner(name, options))
    return optuna.Trial(study, int(trial_id))
