"""``OptunaSweeperImpl``: Optuna's ask/tell loop behind Hydra's launcher (see the package docstring).

Imported by ``hydra_plugins.taylorprune_optuna_sweeper.optuna_sweeper.OptunaSweeper`` only when a
sweep starts, so that Hydra's plugin scan never imports Optuna.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import optuna
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.trial import TrialState

from optuna_sweep.disk_full import disk_full_line
from optuna_sweep.progress import CONSTRAINTS_ATTR
from optuna_sweep.pruners import TRIAL_ID_ENV, check_pruner, make_pruner
from optuna_sweep.reconnecting import RECONNECT_SECONDS
from optuna_sweep.search_space import GRAMMAR, as_override, check_resumable, grid, search_space
from optuna_sweep.slots import Slots, runs_jobs_elsewhere
from optuna_sweep.storage import open_storage
from optuna_sweep.workers import WORKER_ATTR, is_gone, this_worker

log = logging.getLogger(__name__)
TRIAL_ENV = "OPTUNA_TRIAL_NUMBER"
RETRIED_ENV = "OPTUNA_RETRIED_TRIAL_NUMBER"  # set only for a trial that runs a failed one again
SLOT_ENV = "OPTUNA_SLOT"  # 0 .. n_jobs - 1: no two trials of this sweeper that run at once share it


def trial_constraints(trial: optuna.trial.FrozenTrial) -> Sequence[float]:
    """The constraints a job returned (Optuna's convention: <= 0 is feasible)."""
    return trial.user_attrs.get(CONSTRAINTS_ATTR, (math.inf,))


class JobResult(NamedTuple):
    """What a job returned: objective values, Optuna constraints (or None), user attributes to store, and
    whether its trial's pruner stopped it."""

    values: list[float]
    constraints: list[float] | None = None
    user_attrs: dict[str, Any] = {}
    pruned: bool = False


def split_result(value: Any, n_objectives: int) -> JobResult:
    """A job's return value: a number, a list, or a dict with ``values`` and optionally ``constraints``,
    ``user_attrs`` (stored on the trial, e.g. the job's tracking run id) and ``pruned``."""
    constraints, user_attrs, pruned = None, {}, False
    if isinstance(value, (dict, DictConfig)):
        constraints = [float(c) for c in value.get("constraints", [])] or None
        user_attrs = {str(k): v for k, v in dict(value.get("user_attrs") or {}).items()}
        pruned = bool(value.get("pruned", False))
        value = value["values"]
    values = [float(v) for v in value] if isinstance(value, (list, tuple, ListConfig)) else [float(value)]
    if len(values) != n_objectives:
        raise ValueError(
            f"the job returned {len(values)} objective values, but hydra.sweeper.direction has {n_objectives}"
        )
    return JobResult(values, constraints, user_attrs, pruned)


def sampler_seed(seed: int, trials_at_start: int, worker_id: int | None) -> int:
    """The seed of one invocation's sampler: from the configured seed, the number of trials the study held
    when the invocation started (a resumed study differs) and the worker id (workers started together
    differ), so no invocation replays another's suggestions; reproducible for the same three.

    >>> sampler_seed(0, 0, None) == sampler_seed(0, 0, 0), sampler_seed(0, 0, None) == sampler_seed(0, 4, None)
    (True, False)
    """
    entropy = [seed, trials_at_start, 0 if worker_id is None else worker_id]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


@contextmanager
def heartbeats(storage, trials: Collection[optuna.Trial]) -> Iterator[None]:
    """Record the trials' heartbeats every ``heartbeat_interval`` seconds while they run (a database storage
    with heartbeats on; otherwise nothing). Optuna does this only inside ``study.optimize``."""
    interval = storage.get_heartbeat_interval() if isinstance(storage, optuna.storages.RDBStorage) else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial in list(trials):  # the slots' trials change while it beats
                storage.record_heartbeat(trial._trial_id)  # the id Optuna's own heartbeat thread records
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler without its ``Study.stop()`` on exhaustion, which only works inside
    ``study.optimize``; the sweeper checks ``is_exhausted`` before asking instead."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


class OptunaSweeperImpl(Sweeper):
    """The sweeper behind ``hydra/sweeper=taylorprune_optuna``; options: ``config.TaylorpruneOptunaSweeperConf``."""

    def __init__(
        self,
        sampler: DictConfig,
        direction: Any,
        study_name: str | None,
        storage: str | None,
        load_if_exists: bool,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        constraints: Any,
        params: DictConfig | None,
        results_file: str | None,
        metric_names: Any = None,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        retry_failed_trials: int = 0,
        worker_id: int | None = None,
        pruner: str = "none",
        pruner_options: DictConfig | None = None,
        driver_hint: str | None = None,
        reconnect_seconds: float = RECONNECT_SECONDS,
        callbacks: DictConfig | None = None,
        slots: bool = True,
    ) -> None:
        self.sampler_config, self.study_name, self.storage = sampler, study_name, storage
        directions = list(direction) if isinstance(direction, (list, ListConfig)) else [direction]
        for d in directions:
            if d not in ("minimize", "maximize"):
                raise ValueError(f"hydra.sweeper.direction entry {d!r} must be 'minimize' or 'maximize'")
        for name, value in (
            ("n_trials", n_trials),
            ("n_jobs", n_jobs),
            ("heartbeat_interval", heartbeat_interval),
            ("grace_period", grace_period),
        ):
            if (value is not None or name in ("n_trials", "n_jobs")) and (not isinstance(value, int) or value < 1):
                raise ValueError(f"hydra.sweeper.{name} must be a positive integer, got {value!r}")
        if not isinstance(retry_failed_trials, int) or retry_failed_trials < 0:
            raise ValueError(f"hydra.sweeper.retry_failed_trials must be an integer >= 0, got {retry_failed_trials!r}")
        if grace_period is not None and heartbeat_interval is None:
            raise ValueError(f"hydra.sweeper.grace_period={grace_period} needs hydra.sweeper.heartbeat_interval")
        if reconnect_seconds < 0:  # its type is checked by the structured config
            raise ValueError(f"hydra.sweeper.reconnect_seconds must be a number >= 0, got {reconnect_seconds!r}")
        self.reconnect_seconds = float(reconnect_seconds)
        if not 0 <= max_failure_rate <= 1:
            raise ValueError(f"hydra.sweeper.max_failure_rate must be in [0, 1], got {max_failure_rate!r}")
        self.directions, self.load_if_exists = directions, load_if_exists
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.constraints, self.results_file = bool(constraints), results_file
        self.metric_names = None if metric_names is None else [str(name) for name in metric_names]
        if self.metric_names is not None and len(self.metric_names) != len(directions):
            raise ValueError(
                f"hydra.sweeper.metric_names={self.metric_names} names {len(self.metric_names)} "
                f"objectives, but hydra.sweeper.direction has {len(directions)}"
            )
        self.params = {} if params is None else {str(k): str(v) for k, v in params.items()}
        self.heartbeat_interval, self.grace_period, self.worker_id = heartbeat_interval, grace_period, worker_id
        self.pruner_options = (
            OmegaConf.to_container(pruner_options)
            if isinstance(pruner_options, DictConfig)
            else dict(pruner_options or {})
        )
        check_pruner(pruner, directions, storage, self.pruner_options)
        self.pruner, self.driver_hint = pruner, driver_hint
        self.callback_configs = dict(callbacks or {})
        if not isinstance(slots, bool):
            raise ValueError(f"hydra.sweeper.slots must be true or false, got {slots!r}")
        self.slots = slots
        self.retry = (
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retry_failed_trials)
            if retry_failed_trials
            else None
        )

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # -- building the study ----------------------------------------------------------------
    def _space(self, arguments: list[str]):
        loader = self.hydra_context.config_loader
        configured, not_sweeps = search_space([f"{k}={v}" for k, v in self.params.items()], loader)
        if not_sweeps:
            raise ValueError(
                f"hydra.sweeper.params must hold sweeps, but {not_sweeps[0]!r} is a single value; use {GRAMMAR}"
            )
        from_command_line, fixed = search_space(arguments, loader)
        for line in fixed:
            key = line.split("=", 1)[0].lstrip("+~")
            if key in configured and key not in from_command_line:
                raise ValueError(
                    f"{key} is both fixed on the command line ({line!r}) and searched in "
                    f"hydra.sweeper.params ({key}={self.params[key]}); drop one of them"
                )
        return {**configured, **from_command_line}, fixed

    def _sampler(self, space, seed: int | None) -> optuna.samplers.BaseSampler:
        extra, config = {}, self.sampler_config
        if seed is not None:
            config = OmegaConf.merge(config, {"seed": seed})
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
        self.callbacks = [instantiate(config) for config in self.callback_configs.values() if config is not None]
        storage = open_storage(
            self.storage,
            self.heartbeat_interval,
            self.grace_period,
            self.retry,
            self.driver_hint,
            reconnect_seconds=self.reconnect_seconds,
        )
        with warnings.catch_warnings():  # heartbeats are recorded here, not by study.optimize (see heartbeats)
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return self._run(space, fixed, storage)
            except Exception as exc:  # a full disk: its one line first, and as the study's error
                full = disk_full_line(exc)
                if full is None:
                    raise
                log.error(full)
                raise RuntimeError(
                    f"{full}: the study {self.study_name!r} stops here; free space there, then run the same "
                    "command again to resume it"
                ) from exc

    def _run(self, space, fixed: list[str], storage) -> list[optuna.trial.FrozenTrial]:
        """The study's loop (see the package docstring) on an opened ``storage``."""
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self._sampler(space, None),
            directions=self.directions,
            load_if_exists=self.load_if_exists,
            pruner=make_pruner(self.pruner, self.pruner_options),
        )
        check_resumable(space, study.get_trials(deepcopy=False), study.study_name)
        self._reap(study)
        seed = self.sampler_config.get("seed")
        if seed is not None:  # see sampler_seed
            study.sampler = self._sampler(space, sampler_seed(seed, len(study.trials), self.worker_id))
        if self.metric_names is not None and study.metric_names != self.metric_names:
            study.set_metric_names(self.metric_names)  # what optuna-dashboard and optuna.visualization show
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info(
            f"Study {study.study_name}: {self.n_trials} trials over {sorted(space)} "
            f"({len(study.trials)} already in the study)"
        )
        if self.slots and self.n_jobs > 1 and runs_jobs_elsewhere(self.launcher):
            done, failed = self._in_slots(study, space, fixed, storage)
        else:
            done, failed = self._in_batches(study, space, fixed, storage)
        self._report(study, sweep_dir)
        if done and failed == done:
            raise RuntimeError(
                f"every one of the {done} trials of this run failed (see the warnings above); "
                f"the study {study.study_name!r} has no new result"
            )
        return study.best_trials

    # -- asking, launching and telling ------------------------------------------------------
    def _exhausted(self, study: optuna.Study, done: int) -> bool:
        """Whether a grid study has no point left to ask (said once, in the log)."""
        if isinstance(study.sampler, optuna.samplers.GridSampler) and study.sampler.is_exhausted(study):
            log.info(f"The grid is exhausted after {done} new trials")
            return True
        return False

    def _ask(self, study: optuna.Study, space, fixed: list[str], storage, slot: int) -> tuple[optuna.Trial, list[str]]:
        """A new trial and its job's overrides, to run in ``slot``."""
        trial = study.ask(space)
        trial.set_user_attr(WORKER_ATTR, this_worker())
        overrides = [
            *fixed,
            *(as_override(k, v) for k, v in trial.params.items()),
            f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}",
            f"++hydra.job.env_set.{TRIAL_ID_ENV}={trial._trial_id}",
            f"++hydra.job.env_set.{SLOT_ENV}={slot}",
            *self._retried(storage, trial),
        ]
        return trial, overrides

    def _told(self, study: optuna.Study, ended: list[tuple[optuna.Trial, Any]], done: int, failed: int) -> int:
        """Tell the ``ended`` (trial, job) pairs, call the callbacks, and stop the study if too many trials
        failed; the failures among them."""
        failures = sum(not self._tell(study, trial, job) for trial, job in ended)
        if self.callbacks:
            told = {t.number: t for t in study.get_trials(deepcopy=False)}
            for trial, _ in ended:
                for callback in self.callbacks:
                    callback(study, told[trial.number])
        done, failed = done + len(ended), failed + failures
        if done and failed / done > self.max_failure_rate:
            raise RuntimeError(
                f"{failed} of {done} trials failed, more than hydra.sweeper.max_failure_rate="
                f"{self.max_failure_rate}; the study {study.study_name!r} stops here"
            )
        return failures

    def _in_batches(self, study: optuna.Study, space, fixed: list[str], storage) -> tuple[int, int]:
        """Trials in batches of ``n_jobs``, each batch one launch: Hydra's basic launcher (which runs the jobs
        one after another in this process), or ``slots=false``. Returns the trials done and failed."""
        done = failed = 0
        while done < self.n_trials and not self._exhausted(study, done):
            optuna.storages.fail_stale_trials(study)  # heartbeats (if on): workers that died on any host
            asked = [
                self._ask(study, space, fixed, storage, slot) for slot in range(min(self.n_jobs, self.n_trials - done))
            ]
            trials = [trial for trial, _ in asked]
            try:
                self.validate_batch_is_legal([overrides for _, overrides in asked])
                with heartbeats(storage, trials):
                    returns = self.launcher.launch(
                        [overrides for _, overrides in asked], initial_job_idx=trials[0].number
                    )
            except BaseException as exc:
                for trial in trials:
                    self._stopped(study, storage, trial, isinstance(exc, KeyboardInterrupt))
                raise
            failed += self._told(study, list(zip(trials, returns, strict=True)), done, failed)
            done += len(trials)
        return done, failed

    def _in_slots(self, study: optuna.Study, space, fixed: list[str], storage) -> tuple[int, int]:
        """``n_jobs`` slots (``slots``): a slot asks for the next trial as soon as its own has ended. Returns the
        trials done and failed."""
        done = failed = asked = 0
        running: dict[Future, tuple[optuna.Trial, int]] = {}  # each launch's trial and slot
        beating: list[optuna.Trial] = []  # the running trials, as a list the heartbeat thread can copy
        free, exhausted = list(range(self.n_jobs)), False
        with Slots(self.launcher, self.n_jobs) as slots, heartbeats(storage, beating):
            try:
                while True:
                    while free and asked < self.n_trials and not exhausted:
                        exhausted = self._exhausted(study, done)
                        if exhausted:
                            break
                        optuna.storages.fail_stale_trials(study)  # heartbeats (if on): workers dead on any host
                        slot = free.pop(0)
                        trial, overrides = self._ask(study, space, fixed, storage, slot)
                        beating.append(trial)
                        asked += 1
                        self.validate_batch_is_legal([overrides])
                        running[slots.launch(overrides, trial.number)] = trial, slot
                    if not running:
                        return done, failed
                    for future in sorted(slots.ended(running), key=lambda f: running[f][0].number):
                        (job,) = future.result()
                        trial, slot = running.pop(future)
                        failed += self._told(study, [(trial, job)], done, failed)
                        beating.remove(trial)
                        free.append(slot)
                        done += 1
            except BaseException as exc:
                for trial in beating:
                    self._stopped(study, storage, trial, isinstance(exc, KeyboardInterrupt))
                slots.stop()
                raise

    def _stopped(self, study: optuna.Study, storage, trial: optuna.Trial, interrupted: bool) -> None:
        """Fail a trial that the study's stop ended. One stopped by Ctrl-C or SIGTERM (a pre-empted worker) is
        asked again with its parameters when the study starts again, as a reaped one is, if
        ``retry_failed_trials`` allows: its job goes on from the trial's last checkpoint."""
        try:
            study.tell(trial, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # told already, just before the interrupt
            return
        if interrupted and self.retry is not None:
            self.retry(study, storage.get_trial(trial._trial_id))

    @staticmethod
    def _retried(storage, trial: optuna.Trial) -> list[str]:
        """The override telling a job which failed trial it runs again, the last of a series of retries (none for a
        new trial)."""
        frozen = storage.get_trial(trial._trial_id)
        history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(frozen)
        return [f"++hydra.job.env_set.{RETRIED_ENV}={history[-1]}"] if history else []

    def _reap(self, study: optuna.Study) -> None:
        """Fail the RUNNING trials whose worker ran on this host and is gone (and retry them, if asked)."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = trial.user_attrs.get(WORKER_ATTR)
            if not is_gone(worker):
                continue
            try:
                study.tell(trial.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):  # another worker reaped it first
                continue
            log.warning(
                f"Trial {trial.number} was RUNNING, but its worker (pid {worker['pid']} on "
                f"{worker['host']}) is gone: marked FAIL"
            )
            if self.retry is not None:
                self.retry(study, trial)  # asks again with its parameters (Optuna's own retry callback)

    def _tell(self, study: optuna.Study, trial: optuna.Trial, job) -> bool:
        try:
            values, constraints, user_attrs, pruned = split_result(job.return_value, len(self.directions))
        except Exception as exc:  # the job raised, or returned something unusable
            log.warning(f"Trial {trial.number} failed: {type(exc).__name__}: {exc}")
            study.tell(trial, state=TrialState.FAIL)
            if disk_full_line(exc) is not None:  # every later trial would fail the same way: stop (see sweep)
                raise
            return False
        for key, value in user_attrs.items():
            trial.set_user_attr(key, value)
        if constraints is not None:
            trial.set_user_attr(CONSTRAINTS_ATTR, constraints)
        if not all(math.isfinite(v) for v in values):
            log.warning(f"Trial {trial.number} returned {values}: recorded as FAIL")
            study.tell(trial, state=TrialState.FAIL)
            return False
        if pruned:
            log.info(f"Trial {trial.number} was pruned by its {self.pruner} pruner")
            study.tell(trial, state=TrialState.PRUNED)
            return True
        study.tell(trial, values)
        return True

    def _report(self, study: optuna.Study, sweep_dir: Path) -> None:
        complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
        best = study.best_trials if complete else []
        if self.constraints:
            best = [t for t in best if all(c <= 0 for c in trial_constraints(t))]
        rows = [
            {
                "number": t.number,
                "values": list(t.values),
                "params": dict(t.params),
                "user_attrs": {k: v for k, v in t.user_attrs.items() if k != CONSTRAINTS_ATTR},
            }
            for t in best
        ]
        title = "Pareto-optimal trials" if len(self.directions) > 1 else "Best trial"
        log.info(f"{title} of study {study.study_name!r} ({len(complete)} complete of {len(study.trials)}):")
        for row in rows:
            log.info(f"  trial {row['number']}: values {row['values']} params {row['params']}")
        if self.results_file:
            result = {
                "study_name": study.study_name,
                "directions": self.directions,
                "metric_names": study.metric_names,
                "best_trials": rows,
            }
            path = sweep_dir / self.results_file
            tmp = path.with_suffix(path.suffix + ".tmp")
            OmegaConf.save(OmegaConf.create(result), tmp)
            tmp.replace(path)
