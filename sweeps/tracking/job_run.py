"""The MLflow run of one job: a child of the study's run in a sweep, FAILED when the job raises,
KILLED on Ctrl-C or SIGTERM. A retried trial that goes on from where its trial stopped
(``resumption``) reopens that trial's run instead, tagged with this trial and with where it went on from.

    with job_run(uri, cfg) as run:          # the job's body (sweeps.run)
        ...
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from optuna_sweep.sweeper import TRIAL_ENV
from optuna_sweep.workers import this_worker
from prune_core.finetune import Ranks
from sweeps import layout
from sweeps.process import interrupts
from sweeps.tracking.reaping import worker_tag
from sweeps.tracking.resumption import Resumption
from sweeps.tracking.store import experiment_id
from sweeps.tracking.study_run import STUDY_RUN_ENV


def study_name() -> str:
    """The name of the study a job belongs to (``hydra.sweeper.study_name``)."""
    return str(HydraConfig.get().sweeper.get("study_name") or "study")


def _trial_tags(cfg: DictConfig) -> tuple[dict[str, str], str | None]:
    """Tags of a job's run and its parent run id (in a sweep)."""
    tags = {layout.ROLE: "trial"}
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {layout.ROLE: "single"}, None
    hydra = HydraConfig.get()
    sweeper = hydra.sweeper
    tags[layout.STUDY] = study_name()
    tags[layout.SAMPLER] = str(sweeper.get("sampler", {}).get("_target_", ""))
    tags[layout.TRIAL] = os.environ.get(TRIAL_ENV, str(hydra.job.num))
    return tags, os.environ.get(STUDY_RUN_ENV)


@contextmanager
def job_run(uri: str, cfg: DictConfig, resumption: Resumption | None = None) -> Iterator[mlflow.ActiveRun]:
    """The MLflow run of one job (``resumption``: the reopened run of the trial it goes on with); FAILED if the
    job raises, KILLED on Ctrl-C."""
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=experiment_id(MlflowClient(uri), cfg.tracking.experiment))
    tags, parent = _trial_tags(cfg)
    tags[layout.WORKER] = worker_tag(this_worker())
    tags[layout.PROCESSES] = str(Ranks.current().world)
    if layout.TRIAL in tags:
        name = f"trial {tags[layout.TRIAL]}"
    else:  # a single run: what was pruned, on what, to which goal
        model, data = (str(cfg[group].get("_target_", group)).rpartition(".")[2] for group in ("model", "data"))
        name = f"{model} on {data}, goal {cfg.pruning.goal}"
    if resumption is None:
        run = mlflow.start_run(run_name=name, parent_run_id=parent, tags=tags)
    else:  # this worker's now: the reaper leaves it alone while it runs
        run = mlflow.start_run(run_id=resumption.run_id)
        mlflow.set_tags({**tags, layout.RESUMED: resumption.tag, "mlflow.runName": name})
    try:
        yield run
    except BaseException as exc:
        mlflow.end_run("KILLED" if interrupts.interrupted(exc) else "FAILED")
        raise
    mlflow.end_run("FINISHED")
