"""A Hydra sweeper for current Optuna (5.x): ``hydra/sweeper=taylorprune_optuna``.

The published hydra-optuna-sweeper pins optuna<3; this plugin talks to Optuna's ask/tell
interface directly. It knows only Hydra and Optuna (nothing of the project's jobs):

- the search space comes from ``hydra.sweeper.params`` and the command line, in Hydra's sweep
  grammar (``_search_space``);
- trials are asked ``n_jobs`` at a time, handed to the configured Hydra launcher as one batch,
  and told their results (a float, a list for several objectives, or a dict
  ``{"values": ..., "constraints": ..., "user_attrs": ...}``, the attributes stored on the
  trial); a job that raises is recorded as FAIL;
- ``metric_names`` (one per objective) become the study's metric names, which
  optuna-dashboard and ``optuna.visualization`` show instead of "Objective 0";
- ``storage`` + ``study_name`` + ``load_if_exists`` resume a study: each run adds ``n_trials``;
- each job sees its trial number in the environment variable ``OPTUNA_TRIAL_NUMBER`` and the
  study in ``hydra.sweeper`` (``HydraConfig``);
- many workers share a study: each trial records its worker (``_workers``), a starting worker
  fails the trials of dead workers on its host, ``heartbeat_interval`` reaps those of other
  hosts (``_storage``), ``retry_failed_trials`` runs a reaped trial again, and each invocation's
  sampler seed also depends on the trials already in the study and ``worker_id``;
- a run in which every trial failed raises, so the command exits non-zero;
- ``pruner`` picks one of Optuna's pruners for a single-objective study (``_pruners``): jobs
  report intermediate values to their trial (``job_trial``) and return ``{"pruned": True, ...}``
  when its pruner stops them; the trial is then PRUNED.

Hydra's plugin scan imports ``optuna_sweeper`` and ``config`` only, neither of which imports
Optuna. The names below are imported on first use (``from hydra_plugins.taylorprune_optuna_sweeper
import open_storage``); the modules that hold them are private.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "open_storage": "_storage",
    "creation_lock": "_storage",
    "is_gone": "_workers",
    "this_worker": "_workers",
    "WORKER_ATTR": "_workers",
    "search_space": "_search_space",
    "grid": "_search_space",
    "as_override": "_search_space",
    "split_result": "_sweeper",
    "job_trial": "_pruners",
    "make_pruner": "_pruners",
    "PRUNERS": "_pruners",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
