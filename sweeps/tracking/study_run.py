"""The study's MLflow parent run: one per ``-m`` invocation, ended with the status the study had.

``StudyRunCallback`` (a Hydra callback, configured in ``conf/config.yaml``) checks the
configuration and the store before anything starts (a clear line and a non-zero exit otherwise),
then opens the parent run. Its id stays in this process and its launcher workers
(``$TAYLORPRUNE_STUDY_RUN``), never in a folder another invocation could share. It reaps runs
that dead processes left RUNNING (``sweeps.tracking.reaping``) when the study starts and ends, and
attaches the study's settings and Optuna's plots (``sweeps.tracking.study_summary``; the plots
unless ``tracking.study_plots=false``).
``closing_studies()`` ends the parent run KILLED on Ctrl-C or SIGTERM and FAILED on any other
error, with its children still RUNNING marked KILLED.

    with closing_studies():        # around the Hydra app (sweeps.run)
        main()
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from optuna_sweep.disk_full import disk_full_line
from optuna_sweep.storage import open_storage
from optuna_sweep.workers import this_worker
from sweeps import layout
from sweeps.job.config import check_job_config
from sweeps.process import interrupts
from sweeps.tracking import study_summary
from sweeps.tracking.reaping import reap_runs, worker_tag
from sweeps.tracking.store import as_params, experiment_id, open_store

log = logging.getLogger(__name__)
STUDY_RUN_ENV = "TAYLORPRUNE_STUDY_RUN"  # the parent run's id, for the jobs of this invocation only
_open: list[StudyRunCallback] = []  # the studies of this process not yet ended: what closing_studies ends


class StudyRunCallback(Callback):
    """One MLflow parent run per study invocation (``-m``); see the module docstring."""

    def __init__(self, tracking: DictConfig) -> None:
        self.tracking = tracking
        self.run_id: str | None = None
        self.client: MlflowClient | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:  # Hydra turns a callback's exception into a warning: exit here, with one clear line
            self._start(config)
        except ValueError as exc:
            raise SystemExit(f"Error: {exc}") from None
        except Exception as exc:
            raise SystemExit(
                f"Error: the study's MLflow run could not be started at tracking.uri="
                f"{layout.tracking_uri(self.tracking.uri)!r}: {type(exc).__name__}: {exc}"
            ) from None

    def _start(self, config: DictConfig) -> None:
        uri = layout.tracking_uri(self.tracking.uri)
        check_job_config(config)
        open_store(uri, f"tracking.uri={uri!r}")
        self.client, self.uri = MlflowClient(uri), uri
        self.experiment_id = experiment_id(self.client, self.tracking.experiment)
        reap_runs(self.client, self.experiment_id)
        sweeper = config.hydra.sweeper
        study = sweeper.get("study_name") or "study"
        tags = {
            layout.ROLE: "study",
            layout.STUDY: study,
            layout.SAMPLER: str(sweeper.get("sampler", {}).get("_target_", "")),
            layout.SWEEP_DIR: str(config.hydra.sweep.dir),
            layout.WORKER: worker_tag(this_worker()),
        }
        run = self.client.create_run(self.experiment_id, run_name=f"study {study}", tags=tags)
        self.run_id = run.info.run_id
        _open.append(self)
        atexit.register(self.end, "FAILED")  # ended already, unless something bypassed closing_studies
        os.environ[STUDY_RUN_ENV] = self.run_id  # inherited by launcher workers started from here on
        self.client.log_batch(self.run_id, params=as_params(study_summary.study_params(config)), synchronous=True)
        log.info(f"MLflow: study run {self.run_id} in experiment {self.tracking.experiment!r} at {uri}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        for name in ("optimization_results.yaml", "multirun.yaml"):
            if (sweep_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(sweep_dir / name))
        sweeper = config.hydra.sweeper
        try:  # an in-memory study (storage null) is gone with the sweeper: no Optuna plots then
            study = optuna.load_study(
                study_name=sweeper.study_name,
                storage=open_storage(sweeper.storage, driver_hint=sweeper.get("driver_hint")),
            )
        except Exception as exc:
            log.warning(f"Optuna study not reloaded for its plots: {type(exc).__name__}: {exc}")
            study = None
        reap_runs(self.client, self.experiment_id, study)
        if study is not None and self.tracking.get("study_plots", True):
            study_summary.log_study_plots(self.client, self.run_id, study)
        self.end("FINISHED")
        print(
            f"\nResults: {sweep_dir} (optimization_results.yaml: the best trials; one folder per trial)\n"
            f"MLflow:  {study_summary.runs_page(self.uri, self.experiment_id)}"
        )

    def end(self, status: str) -> None:
        """End the parent run with ``status``; children still RUNNING (workers that were stopped) become KILLED."""
        if self.run_id is None:
            return
        run_id, self.run_id = self.run_id, None
        _open.remove(self)
        if status != "FINISHED":
            children = self.client.search_runs(
                [self.experiment_id],
                max_results=5000,
                filter_string=(f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'"),
            )
            for child in children:
                self.client.set_terminated(child.info.run_id, "KILLED")
        self.client.set_terminated(run_id, status)
        if os.environ.get(STUDY_RUN_ENV) == run_id:
            del os.environ[STUDY_RUN_ENV]


@contextmanager
def closing_studies() -> Iterator[None]:
    """Around the app: a study run still open when it stops is KILLED (Ctrl-C, SIGTERM) or FAILED (an error,
    including every trial failing); a study that ended normally was FINISHED by its callback already."""
    try:
        yield
    except BaseException as exc:
        status = "KILLED" if interrupts.interrupted(exc) else "FAILED"
        for callback in list(_open):
            run_id = callback.run_id
            try:
                callback.end(status)
            except Exception as failed:  # the store itself is what failed (full, gone): keep the first error
                reason = disk_full_line(failed) or f"{type(failed).__name__}: {failed}"
                log.error(f"The study run {run_id} could not be marked {status}: {reason}")
        raise
