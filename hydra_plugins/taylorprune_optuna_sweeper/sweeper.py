"""``OptunaSweeper``: Optuna's ask/tell loop behind Hydra's launcher (see the package docstring)."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import optuna
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.trial import TrialState

from hydra_plugins.taylorprune_optuna_sweeper.search_space import GRAMMAR, as_override, grid, search_space

log = logging.getLogger(__name__)
TRIAL_ENV = "OPTUNA_TRIAL_NUMBER"
CONSTRAINTS_ATTR = "constraints"


def open_storage(storage: str | None):
    """``None`` (in memory), a database URL (sqlite:///, postgresql://, ...) or ``journal:PATH``."""
    if storage is None:
        return None
    if storage.startswith("journal:"):
        path = Path(storage.removeprefix("journal:")).expanduser()
        if not path.parent.is_dir():
            raise ValueError(f"hydra.sweeper.storage={storage!r}: folder {str(path.parent)!r} does not exist")
        backend = optuna.storages.journal.JournalFileBackend(str(path))
        return optuna.storages.journal.JournalStorage(backend)
    try:
        return optuna.storages.RDBStorage(storage)
    except Exception as exc:
        raise ValueError(f"hydra.sweeper.storage={storage!r} cannot be opened: {type(exc).__name__}: {exc}. "
                         "Use a database URL (sqlite:///path.db, postgresql://user@host/db) or journal:PATH") from exc


def trial_constraints(trial: optuna.trial.FrozenTrial) -> Sequence[float]:
    """The constraints a job returned (Optuna's convention: <= 0 is feasible)."""
    return trial.user_attrs.get(CONSTRAINTS_ATTR, (math.inf,))


class JobResult(NamedTuple):
    """What a job returned: objective values, Optuna constraints (or None) and user attributes to store."""

    values: list[float]
    constraints: list[float] | None = None
    user_attrs: dict[str, Any] = {}


def split_result(value: Any, n_objectives: int) -> JobResult:
    """A job's return value: a number, a list, or a dict with ``values`` and optionally ``constraints``
    and ``user_attrs`` (stored on the trial, e.g. the job's tracking run id)."""
    constraints, user_attrs = None, {}
    if isinstance(value, (dict, DictConfig)):
        constraints = [float(c) for c in value.get("constraints", [])] or None
        user_attrs = {str(k): v for k, v in dict(value.get("user_attrs") or {}).items()}
        value = value["values"]
    values = [float(v) for v in value] if isinstance(value, (list, tuple, ListConfig)) else [float(value)]
    if len(values) != n_objectives:
        raise ValueError(f"the job returned {len(values)} objective values, but hydra.sweeper.direction "
                         f"has {n_objectives}")
    return JobResult(values, constraints, user_attrs)


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler without its ``Study.stop()`` on exhaustion, which only works inside
    ``study.optimize``; the sweeper checks ``is_exhausted`` before asking instead."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


class OptunaSweeper(Sweeper):
    def __init__(self, sampler: DictConfig, direction: Any, study_name: str | None, storage: str | None,
                 load_if_exists: bool, n_trials: int, n_jobs: int, max_failure_rate: float, constraints: bool,
                 params: DictConfig | None, results_file: str | None, metric_names: Any = None) -> None:
        self.sampler_config, self.study_name, self.storage = sampler, study_name, storage
        directions = list(direction) if isinstance(direction, (list, ListConfig)) else [direction]
        for d in directions:
            if d not in ("minimize", "maximize"):
                raise ValueError(f"hydra.sweeper.direction entry {d!r} must be 'minimize' or 'maximize'")
        for name, value in (("n_trials", n_trials), ("n_jobs", n_jobs)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"hydra.sweeper.{name} must be a positive integer, got {value!r}")
        if not 0 <= max_failure_rate <= 1:
            raise ValueError(f"hydra.sweeper.max_failure_rate must be in [0, 1], got {max_failure_rate!r}")
        self.directions, self.load_if_exists = directions, load_if_exists
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.constraints, self.results_file = constraints, results_file
        self.metric_names = None if metric_names is None else [str(name) for name in metric_names]
        if self.metric_names is not None and len(self.metric_names) != len(directions):
            raise ValueError(f"hydra.sweeper.metric_names={self.metric_names} names {len(self.metric_names)} "
                             f"objectives, but hydra.sweeper.direction has {len(directions)}")
        self.params = {} if params is None else {str(k): str(v) for k, v in params.items()}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # -- building the study ----------------------------------------------------------------
    def _space(self, arguments: list[str]):
        loader = self.hydra_context.config_loader
        configured, not_sweeps = search_space([f"{k}={v}" for k, v in self.params.items()], loader)
        if not_sweeps:
            raise ValueError(f"hydra.sweeper.params must hold sweeps, but {not_sweeps[0]!r} is a single value; "
                             f"use {GRAMMAR}")
        from_command_line, fixed = search_space(arguments, loader)
        for line in fixed:
            key = line.split("=", 1)[0].lstrip("+~")
            if key in configured and key not in from_command_line:
                raise ValueError(f"{key} is both fixed on the command line ({line!r}) and searched in "
                                 f"hydra.sweeper.params ({key}={self.params[key]}); drop one of them")
        return {**configured, **from_command_line}, fixed

    def _sampler(self, space) -> optuna.samplers.BaseSampler:
        extra, config = {}, self.sampler_config
        if config._target_.endswith("GridSampler"):
            extra["search_space"] = grid(space)
            config = OmegaConf.merge(config, {"_target_": f"{__name__}.{AskTellGridSampler.__name__}"})
        if self.constraints:
            extra["constraints_func"] = trial_constraints
        return instantiate(config, **extra)

    # -- the loop ----------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> list[optuna.trial.FrozenTrial]:
        space, fixed = self._space(arguments)
        if not space:
            raise ValueError(f"nothing to search: give hydra.sweeper.params or sweeps on the command line ({GRAMMAR})")
        study = optuna.create_study(study_name=self.study_name, storage=open_storage(self.storage),
                                    sampler=self._sampler(space), directions=self.directions,
                                    load_if_exists=self.load_if_exists)
        if self.metric_names is not None and study.metric_names != self.metric_names:
            with warnings.catch_warnings():  # experimental in Optuna 5, and used as documented
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(self.metric_names)  # what optuna-dashboard and optuna.visualization show
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info(f"Study {study.study_name}: {self.n_trials} trials over {sorted(space)} "
                 f"({len(study.trials)} already in the study)")
        done = failed = 0
        while done < self.n_trials:
            if isinstance(study.sampler, optuna.samplers.GridSampler) and study.sampler.is_exhausted(study):
                log.info(f"The grid is exhausted after {done} new trials")
                break
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            overrides = [[*fixed, *(as_override(k, v) for k, v in t.params.items()),
                          f"++hydra.job.env_set.{TRIAL_ENV}={t.number}"] for t in trials]
            try:
                self.validate_batch_is_legal(overrides)
                returns = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
            except BaseException:
                for trial in trials:
                    study.tell(trial, state=TrialState.FAIL)
                raise
            for trial, job in zip(trials, returns, strict=True):
                failed += not self._tell(study, trial, job)
            done += len(trials)
            if done and failed / done > self.max_failure_rate:
                raise RuntimeError(f"{failed} of {done} trials failed, more than hydra.sweeper.max_failure_rate="
                                   f"{self.max_failure_rate}; the study {study.study_name!r} stops here")
        self._report(study, sweep_dir)
        return study.best_trials

    def _tell(self, study: optuna.Study, trial: optuna.Trial, job) -> bool:
        try:
            values, constraints, user_attrs = split_result(job.return_value, len(self.directions))
        except Exception as exc:  # the job raised, or returned something unusable
            log.warning(f"Trial {trial.number} failed: {type(exc).__name__}: {exc}")
            study.tell(trial, state=TrialState.FAIL)
            return False
        for key, value in user_attrs.items():
            trial.set_user_attr(key, value)
        if constraints is not None:
            trial.set_user_attr(CONSTRAINTS_ATTR, constraints)
        if not all(math.isfinite(v) for v in values):
            log.warning(f"Trial {trial.number} returned {values}: recorded as FAIL")
            study.tell(trial, state=TrialState.FAIL)
            return False
        study.tell(trial, values)
        return True

    def _report(self, study: optuna.Study, sweep_dir: Path) -> None:
        complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
        best = study.best_trials if complete else []
        if self.constraints:
            best = [t for t in best if all(c <= 0 for c in trial_constraints(t))]
        rows = [{"number": t.number, "values": list(t.values), "params": dict(t.params),
                 "user_attrs": {k: v for k, v in t.user_attrs.items() if k != CONSTRAINTS_ATTR}} for t in best]
        title = "Pareto-optimal trials" if len(self.directions) > 1 else "Best trial"
        log.info(f"{title} of study {study.study_name!r} ({len(complete)} complete of {len(study.trials)}):")
        for row in rows:
            log.info(f"  trial {row['number']}: values {row['values']} params {row['params']}")
        if self.results_file:
            result = {"study_name": study.study_name, "directions": self.directions,
                      "metric_names": study.metric_names, "best_trials": rows}
            path = sweep_dir / self.results_file
            tmp = path.with_suffix(path.suffix + ".tmp")
            OmegaConf.save(OmegaConf.create(result), tmp)
            tmp.replace(path)
