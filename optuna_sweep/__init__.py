"""A Hydra sweeper for current Optuna (5.x), selected with ``hydra/sweeper=taylorprune_optuna``.

The published hydra-optuna-sweeper pins optuna<3; this plugin talks to Optuna's ask/tell
interface directly. It knows only Hydra and Optuna (nothing of the project's jobs):

- the search space comes from ``hydra.sweeper.params`` and the command line, in Hydra's sweep
  grammar (``search_space``);
- ``n_jobs`` trials run at once: with a launcher that runs jobs in other processes (joblib,
  submitit), each of ``n_jobs`` slots launches one trial at a time and asks for the next as soon as
  its own ends (``slots``; ``slots=false``, or Hydra's basic launcher: batches of ``n_jobs``, one
  launch each). Trials are told their results (a float, a list for several objectives, or a dict
  ``{"values": ..., "constraints": ..., "user_attrs": ...}``, the attributes stored on the
  trial); a job that raises is recorded as FAIL;
- ``metric_names`` (one per objective) become the study's metric names, which
  optuna-dashboard and ``optuna.visualization`` show instead of "Objective 0";
- ``storage`` + ``study_name`` + ``load_if_exists`` resume a study: each run adds ``n_trials``;
- each job sees its trial number in the environment variable ``OPTUNA_TRIAL_NUMBER``, its slot
  in ``OPTUNA_SLOT`` (0 to ``n_jobs`` - 1, never shared by two trials of one sweeper that run at
  once) and the study in ``hydra.sweeper`` (``HydraConfig``); a trial that runs a failed one again also sees that
  trial's number in ``OPTUNA_RETRIED_TRIAL_NUMBER``, so the job can go on from where it stopped;
- many workers share a study: each trial records its worker (``workers``), a starting worker
  fails the trials of dead workers on its host, ``heartbeat_interval`` reaps those of other
  hosts (``storage``), ``retry_failed_trials`` runs a reaped trial, or one stopped by Ctrl-C or
  SIGTERM, again, and each invocation's sampler seed also depends on the trials already in the
  study and ``worker_id``;
- a run in which every trial failed raises, so the command exits non-zero; so does a trial that
  failed on a full disk, with "No space left on device while writing <path>" first (``disk_full``);
- ``driver_hint``: how the application installs a missing database driver, added to that error;
- ``pruner`` picks one of Optuna's pruners for a single-objective study (``pruners``): jobs
  report intermediate values to their trial (``job_trial``) and return ``{"pruned": True, ...}``
  when its pruner stops them; the trial is then PRUNED;
- ``callbacks`` are called as ``callback(study, frozen_trial)`` after each trial is told (Optuna's
  ``study.optimize(callbacks=...)`` convention); ``progress.front_hypervolume`` is what one can log.

Hydra finds it through ``hydra_plugins/taylorprune_optuna_sweeper`` (the registered class and
its structured config), whose modules import neither Optuna nor this package at scan time. This
package holds the implementation and the names an application uses:

>>> from optuna_sweep import open_storage, job_trial     # the study's storage; a job's own trial
"""

from optuna_sweep.disk_full import disk_full_line
from optuna_sweep.progress import check_reference_point, front_hypervolume
from optuna_sweep.pruners import PRUNERS, job_trial, make_pruner
from optuna_sweep.search_space import as_override, check_resumable, grid, search_space
from optuna_sweep.storage import creation_lock, open_storage
from optuna_sweep.sweeper import RETRIED_ENV, SLOT_ENV, TRIAL_ENV, split_result
from optuna_sweep.workers import WORKER_ATTR, is_gone, this_worker

__all__ = [
    "PRUNERS",
    "RETRIED_ENV",
    "SLOT_ENV",
    "TRIAL_ENV",
    "WORKER_ATTR",
    "as_override",
    "check_reference_point",
    "check_resumable",
    "creation_lock",
    "disk_full_line",
    "front_hypervolume",
    "grid",
    "is_gone",
    "job_trial",
    "make_pruner",
    "open_storage",
    "search_space",
    "split_result",
    "this_worker",
]
