"""MLflow tracking of pruning runs and studies.

- the store: ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded
  ``sqlite:///<cwd>/mlflow.db`` (``contract.tracking_uri``), checked before any training. Every tag
  and artifact name comes from ``sweeps.contract``, which ``analysis`` reads with.
- ``StudyRunCallback`` (a Hydra callback, configured in ``conf/config.yaml``): checks the
  configuration and the store before anything starts (a clear line and a non-zero exit otherwise),
  then opens one parent run per ``-m`` invocation of a study; its id stays in this process and
  its workers (``$TAYLORPRUNE_STUDY_RUN``), never in a folder another invocation could share.
  It reaps runs that dead processes left RUNNING (``sweeps.reaping``) when the study starts and
  ends. ``closing_studies()`` ends the parent run KILLED on Ctrl-C or SIGTERM and FAILED on any
  other error, with its children still RUNNING marked KILLED.
- ``job_run``: one run per job (a child of the study run in a sweep), status FAILED when the
  job raises and KILLED on Ctrl-C or SIGTERM.
- ``LiveLog``: each pruning iteration's ``pruning/...`` metrics logged asynchronously as it
  happens, so a long trial shows in the UI while it runs;
- ``log_pruning``: the flattened config as params; the run's *result*, the returned network's
  values, as single-value metrics named after the study's objectives (``validation_accuracy``,
  ``reduction``, ...: what the MLflow UI's run table shows) and the tag
  ``taylorprune.returned_iteration``; per pruning iteration (``pruning/...``, step = iteration)
  and per fine-tuning iteration (step = iteration) history metrics, in batches of at most 1000; the three
  history tables (``mlflow.load_table``-able JSON), the Hydra config, every checkpoint, the
  progress plot and the final model (``mlflow.pytorch`` flavour, named ``trial-<N>`` in a study and
  linked to the returned iteration's step; and the safe format).

>>> flatten({"a": {"b": 1, "c": [1, 2]}, "d": None})
{'a.b': '1', 'a.c': '[1, 2]', 'd': 'None'}
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from torch import nn

from hydra_plugins.taylorprune_optuna_sweeper import open_storage, this_worker
from prune_core import PruningInfo, save_pruned
from sweeps import contract, interrupts, study_summary
from sweeps.deployment import Deployment
from sweeps.job_config import check_job_config
from sweeps.reaping import reap_runs, worker_tag

log = logging.getLogger(__name__)
STUDY_RUN_ENV = "TAYLORPRUNE_STUDY_RUN"  # the parent run's id, for the jobs of this invocation only
TRIAL_ENV = "OPTUNA_TRIAL_NUMBER"
BATCH = 1000  # MLflow's limit of metrics per log_batch call
PARAM_BATCH = 100


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created if absent (by whichever of several workers gets there first)."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # created by another worker in the meantime
        existing = client.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as ``{"a.b": "value"}`` (lists kept whole)."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): str(tree)}


class StudyRunCallback(Callback):
    """One MLflow parent run per study invocation (``-m``); see the module docstring."""

    open_runs: list[StudyRunCallback] = []  # the studies of this process not yet ended

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
            raise SystemExit(f"Error: the study's MLflow run could not be started at tracking.uri="
                             f"{contract.tracking_uri(self.tracking.uri)!r}: {type(exc).__name__}: {exc}") from None

    def _start(self, config: DictConfig) -> None:
        uri = contract.tracking_uri(self.tracking.uri)
        check_job_config(config)
        contract.open_store(uri, f"tracking.uri={uri!r}")
        self.client, self.uri = MlflowClient(uri), uri
        self.experiment_id = experiment_id(self.client, self.tracking.experiment)
        reap_runs(self.client, self.experiment_id)
        sweeper = config.hydra.sweeper
        study = sweeper.get("study_name") or "study"
        tags = {contract.ROLE: "study", contract.STUDY: study,
                contract.SAMPLER: str(sweeper.get("sampler", {}).get("_target_", "")),
                contract.SWEEP_DIR: str(config.hydra.sweep.dir), contract.WORKER: worker_tag(this_worker())}
        run = self.client.create_run(self.experiment_id, run_name=f"study {study}", tags=tags)
        self.run_id = run.info.run_id
        StudyRunCallback.open_runs.append(self)
        atexit.register(self.end, "FAILED")  # ended already, unless something bypassed closing_studies
        os.environ[STUDY_RUN_ENV] = self.run_id  # inherited by launcher workers started from here on
        params = [Param(k, v[:6000]) for k, v in study_summary.study_params(config).items()]
        self.client.log_batch(self.run_id, params=params, synchronous=True)
        log.info(f"MLflow: study run {self.run_id} in experiment {self.tracking.experiment!r} at {uri}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        for name in ("optimization_results.yaml", "multirun.yaml"):
            if (sweep_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(sweep_dir / name))
        sweeper = config.hydra.sweeper
        try:  # an in-memory study (storage null) is gone with the sweeper: no Optuna plots then
            study = optuna.load_study(study_name=sweeper.study_name, storage=open_storage(sweeper.storage))
        except Exception as exc:
            log.warning(f"Optuna study not reloaded for its plots: {type(exc).__name__}: {exc}")
            study = None
        reap_runs(self.client, self.experiment_id, study)
        study_summary.log_study_plots(self.client, self.run_id, study, self.tracking.experiment, self.uri)
        self.end("FINISHED")
        print(f"\nResults: {sweep_dir} (optimization_results.yaml: the best trials; one folder per trial)\n"
              f"MLflow:  {study_summary.runs_page(self.uri, self.experiment_id)}")

    def end(self, status: str) -> None:
        """End the parent run with ``status``; children still RUNNING (workers that were stopped) become KILLED."""
        if self.run_id is None:
            return
        run_id, self.run_id = self.run_id, None
        StudyRunCallback.open_runs.remove(self)
        if status != "FINISHED":
            children = self.client.search_runs([self.experiment_id], max_results=5000, filter_string=(
                f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'"))
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
        for callback in list(StudyRunCallback.open_runs):
            callback.end(status)
        raise


def _trial_tags(cfg: DictConfig) -> tuple[dict[str, str], str | None]:
    """Tags of a job's run and its parent run id (in a sweep)."""
    tags = {contract.ROLE: "trial"}
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {contract.ROLE: "single"}, None
    hydra = HydraConfig.get()
    sweeper = hydra.sweeper
    tags[contract.STUDY] = str(sweeper.get("study_name") or "study")
    tags[contract.SAMPLER] = str(sweeper.get("sampler", {}).get("_target_", ""))
    tags[contract.TRIAL] = os.environ.get(TRIAL_ENV, str(hydra.job.num))
    return tags, os.environ.get(STUDY_RUN_ENV)


@contextmanager
def job_run(uri: str, cfg: DictConfig) -> Iterator[mlflow.ActiveRun]:
    """The MLflow run of one job; FAILED if the job raises, KILLED on Ctrl-C."""
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(cfg.tracking.experiment)
    tags, parent = _trial_tags(cfg)
    tags[contract.WORKER] = worker_tag(this_worker())
    if contract.TRIAL in tags:
        name = f"trial {tags[contract.TRIAL]}"
    else:  # a single run: what was pruned, on what, to which goal
        model, data = (str(cfg[group].get("_target_", group)).rpartition(".")[2] for group in ("model", "data"))
        name = f"{model} on {data}, goal {cfg.pruning.goal}"
    run = mlflow.start_run(run_name=name, parent_run_id=parent, tags=tags)
    try:
        yield run
    except BaseException as exc:
        mlflow.flush_async_logging()
        mlflow.end_run("KILLED" if interrupts.interrupted(exc) else "FAILED")
        raise
    mlflow.end_run("FINISHED")


def _metric_batches(client: MlflowClient, run_id: str, metrics: list[Metric]) -> None:
    for start in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[start:start + BATCH], synchronous=True)


def pruning_metrics(row: dict, timestamp: int) -> list[Metric]:
    """One pruning iteration's ``pruning/...`` metrics (step = iteration)."""
    keys = ["learnables", "reduction", "macs", "macs_reduction", "filters_removed",
            *(k for k in row if k.startswith("validation_"))]
    return [Metric(f"pruning/{k}", float(row[k]), timestamp, int(row["iteration"])) for k in keys if k in row]


class LiveLog:
    """Logs each pruning iteration as it is recorded (``compress_network(iteration_fn=...)``), with MLflow's
    asynchronous logging: the UI shows a trial while it runs, and pruning stays off the wait.

    >>> live = LiveLog(MlflowClient(uri), run.info.run_id)                   # doctest: +SKIP
    >>> pruned, info = compress_network(..., iteration_fn=live)              # doctest: +SKIP
    >>> live.flush()                                                         # doctest: +SKIP
    """

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id, self.pending = client, run_id, []

    def __call__(self, row: dict) -> None:
        metrics = pruning_metrics(row, int(time.time() * 1000))
        self.pending.append(self.client.log_batch(self.run_id, metrics=metrics, synchronous=False))

    def flush(self) -> None:
        """Wait until everything logged so far is stored."""
        for operation in self.pending:
            operation.wait()
        self.pending.clear()


def history_metrics(info: PruningInfo, pruning: bool = True) -> list[Metric]:
    """Per pruning iteration (``pruning/...``, unless logged live) and per fine-tuning iteration (``train/...``,
    ``validation/...``) metrics, time-stamped when they happened (from the tables' ``time_s``)."""
    now = int(time.time() * 1000)
    metrics = []
    if pruning:
        for row in info.pruning_history.to_dict("records"):
            metrics += pruning_metrics(row, now)
    tables = (("train", info.training_history), ("validation", info.validation_history))
    started = now - int(1000 * max([0.0, *(float(t["time_s"].max()) for _, t in tables if len(t))]))
    for prefix, table in tables:
        stamps = [started + int(1000 * t) for t in table["time_s"]] if "time_s" in table else [now] * len(table)
        for column in (c for c in table.columns if c not in ("pruning_iteration", "epoch", "iteration", "time_s")):
            metrics += [Metric(f"{prefix}/{column}", float(v), stamp, int(step))
                        for v, step, stamp in zip(table[column], table["iteration"], stamps, strict=True)]
    return metrics


def result_metrics(info: PruningInfo, names: list[str]) -> list[Metric]:
    """The returned network's values (its row of the pruning history) under the given names."""
    rows = info.pruning_history
    row = rows.loc[rows["iteration"] == info.returned_iteration].iloc[0]
    now = int(time.time() * 1000)
    return [Metric(name, float(row[name]), now, 0) for name in dict.fromkeys(names) if name in row]


def log_pruning(run: mlflow.ActiveRun, cfg: DictConfig, info: PruningInfo, pruned: nn.Module, output_dir: Path,
                checkpoints: Path | None, example: torch.Tensor, live: LiveLog | None = None,
                log_model: bool = True) -> None:
    """Everything of a finished pruning run (see the module docstring); ``live``: the pruning metrics
    already logged as they happened (waited for here); ``log_model``: also the ``mlflow.pytorch`` model."""
    client, run_id = MlflowClient(mlflow.get_tracking_uri()), run.info.run_id
    if live is not None:
        live.flush()
    params = [Param(k, v[:6000]) for k, v in flatten(OmegaConf.to_container(cfg, resolve=True)).items()]
    for start in range(0, len(params), PARAM_BATCH):
        client.log_batch(run_id, params=params[start:start + PARAM_BATCH], synchronous=True)
    names = [*cfg.sweep.objectives, *cfg.sweep.constraints, "reduction", "learnables", "macs_reduction", "macs",
             *(c for c in info.pruning_history.columns if c.startswith("validation_"))]
    _metric_batches(client, run_id, result_metrics(info, names) + history_metrics(info, pruning=live is None))
    client.set_tag(run_id, contract.STOP_REASON, info.stop_reason)
    client.set_tag(run_id, contract.RETURNED_ITERATION, str(info.returned_iteration))
    for name in contract.TABLES:
        table: pd.DataFrame = getattr(info, name)
        mlflow.log_table(table, artifact_file=contract.table(name), run_id=run_id)
    hydra_dir = output_dir / ".hydra"
    if hydra_dir.is_dir():
        client.log_artifacts(run_id, str(hydra_dir), contract.HYDRA_DIR)
    if checkpoints is not None and any(checkpoints.iterdir()):
        client.log_artifacts(run_id, str(checkpoints), contract.CHECKPOINTS)
    if (output_dir / "pruning_progress.png").is_file():  # already drawn by compress_network
        client.log_artifact(run_id, str(output_dir / "pruning_progress.png"))
    elif info.figure is not None:
        client.log_figure(run_id, info.figure, "pruning_progress.png")
    save_pruned(pruned, output_dir / "pruned.pt", extra={"stop_reason": info.stop_reason})
    client.log_artifact(run_id, str(output_dir / "pruned.pt"), "model_safe")
    if log_model:
        trial = run.data.tags.get(contract.TRIAL)
        log_torch_model(pruned, example, f"trial-{trial}" if trial is not None else "model", info.returned_iteration)


def log_deployment(run: mlflow.ActiveRun, deployment: Deployment) -> None:
    """The returned network's export and latency (``sweeps.deployment``): metrics, tags and ``model.onnx``."""
    client, run_id, now = MlflowClient(mlflow.get_tracking_uri()), run.info.run_id, int(time.time() * 1000)
    metrics = [Metric(name, float(value), now, 0) for name, value in deployment.metrics.items()]
    tags = [RunTag(name, value) for name, value in deployment.tags.items()]
    client.log_batch(run_id, metrics=metrics, tags=tags, synchronous=True)
    if deployment.onnx_path is not None:
        client.log_artifact(run_id, str(deployment.onnx_path))


def log_torch_model(model: nn.Module, example: torch.Tensor, name: str = "model", step: int = 0) -> None:
    """``mlflow.pytorch.log_model`` as an exported program (pt2, no pickle), or pickled if export fails.

    ``step`` links the logged model to that step's metrics: the returned network's pruning iteration.
    """
    model = model.cpu().eval()
    requirements = [f"torch=={torch.__version__.split('+')[0]}"]
    try:
        mlflow.pytorch.log_model(model, name=name, input_example=example.cpu().numpy(), step=step,
                                 serialization_format="pt2", pip_requirements=requirements)
    except Exception as exc:
        log.warning(f"torch.export could not export the model ({type(exc).__name__}); logging it pickled instead")
        mlflow.pytorch.log_model(model, name=name, serialization_format="pickle", step=step,
                                 pip_requirements=requirements)
