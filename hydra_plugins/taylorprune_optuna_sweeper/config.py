"""Structured configs of the sweeper and its samplers, registered with Hydra's ConfigStore.

Select with ``hydra/sweeper=taylorprune_optuna`` and ``hydra/sweeper/sampler=tpe|random|nsgaii|gp|grid``.
Samplers keep Optuna's own defaults; only ``seed`` is exposed here (more keys can be added
with ``+hydra.sweeper.sampler.<name>=<value>``).
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class SamplerConf:
    _target_: str = MISSING
    seed: Optional[int] = None


@dataclass
class TaylorpruneOptunaSweeperConf:
    """``direction``: "minimize"/"maximize" or a list of them (one per objective)."""

    _target_: str = "hydra_plugins.taylorprune_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sweeper builds the sampler itself (grid space, constraints_func)
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: Any = MISSING
    direction: Any = "minimize"
    study_name: Optional[str] = None
    storage: Optional[str] = None
    load_if_exists: bool = True
    n_trials: int = 20
    n_jobs: int = 1
    # With n_jobs > 1 and a launcher that runs jobs in other processes (joblib, submitit): each of the
    # n_jobs slots takes the next trial as soon as its own ends. false: batches of n_jobs, each waiting
    # for its slowest trial (what Hydra's own sweepers do; for a launcher that cannot launch from threads).
    slots: bool = True
    max_failure_rate: float = 1.0
    constraints: Any = False  # true, or a non-empty mapping: jobs return Optuna constraints
    params: Optional[Dict[str, str]] = None
    results_file: Optional[str] = "optimization_results.yaml"
    metric_names: Any = None  # a list, one per objective: shown by optuna-dashboard and optuna.visualization
    # Reaping trials of workers that died on other hosts (database storages): a RUNNING trial whose
    # heartbeat (recorded every heartbeat_interval s) is older than grace_period s (default 2x) is failed.
    heartbeat_interval: Optional[int] = None
    grace_period: Optional[int] = None
    # a reaped trial is asked again with its parameters, at most this many times; its job sees the failed
    # trial's number in OPTUNA_RETRIED_TRIAL_NUMBER (to go on from where it stopped)
    retry_failed_trials: int = 0
    worker_id: Optional[int] = None  # mixed into the sampler seed: give one per worker started together
    # Optuna's pruner for a single-objective study: median, hyperband, successive_halving or none. Jobs report
    # each pruning iteration's objective as an intermediate value; a pruned trial ends PRUNED.
    # pruner_options: the pruner's keyword arguments (+hydra.sweeper.pruner_options.n_startup_trials=2, ...)
    pruner: str = "none"
    pruner_options: Dict[str, Any] = field(default_factory=dict)
    # Added to the error when the storage's database driver is missing: how the application installs it.
    driver_hint: Optional[str] = None
    # How long a call to a server database (PostgreSQL, MySQL) is retried while the server cannot be
    # reached (a restart, a failover) before the study stops with a clear error.
    reconnect_seconds: float = 120.0
    # Called as callback(study, frozen_trial) after each trial is told, as study.optimize(callbacks=...)
    # would: a mapping of name to a Hydra object config (_target_ and its arguments); null drops one.
    callbacks: Dict[str, Any] = field(default_factory=dict)


SAMPLERS = {
    "tpe": "optuna.samplers.TPESampler",
    "random": "optuna.samplers.RandomSampler",
    "nsgaii": "optuna.samplers.NSGAIISampler",
    "gp": "optuna.samplers.GPSampler",
    "grid": "optuna.samplers.GridSampler",
}

store = ConfigStore.instance()
store.store(
    group="hydra/sweeper",
    name="taylorprune_optuna",
    node=TaylorpruneOptunaSweeperConf,
    provider="taylorprune_optuna_sweeper",
)
for _name, _target in SAMPLERS.items():
    store.store(
        group="hydra/sweeper/sampler",
        name=_name,
        node=SamplerConf(_target_=_target),
        provider="taylorprune_optuna_sweeper",
    )
