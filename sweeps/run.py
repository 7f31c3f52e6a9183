"""``python -m sweeps.run``: one pruning run from the Hydra config; ``-m`` for an Optuna study.

The job: check the configuration (``sweeps.job.config``) and the tracking store, load the data
(``sweeps.job.data``: tensors, or Datasets and DataLoaders read batch by batch; checked before
any training) and build the model, get the trained base network (cached, the model's weights
file, or ``base.checkpoint``), run ``compress_network`` with every option from ``pruning`` and
``training``, export and time the returned network (``sweeps.deployment.measure``, the ``export`` group),
log everything to MLflow, and return the objectives named in
``sweep.objectives`` (with ``sweep.constraints`` as Optuna constraints, and the MLflow run id as
the trial's ``mlflow_run_id`` user attribute) to the sweeper. With ``hydra.sweeper.pruner``, each
pruning iteration's objective is reported to the trial (``sweeps.job.intermediate``); when the pruner
stops the trial, the network so far is logged as usual, the MLflow run FINISHED and tagged
``taylorprune.pruned``, and the trial ends PRUNED. A trial that runs a failed one again
(``hydra.sweeper.retry_failed_trials``) goes on from that trial's last logged checkpoint, in its
MLflow run (``sweeps.tracking.resumption``). SIGTERM is handled like Ctrl-C, in
the app and in its launcher workers: the trial fails, its runs are KILLED, the study stops; with
``retry_failed_trials``, the trial is asked again when the study starts again, and goes on from its
last checkpoint as a reaped one does.

    python -m sweeps.run                                    # defaults: MNIST-1D, reference-like CNN
    python -m sweeps.run pruning.goal=0.5 model=deeper_cnn1d
    python -m sweeps.run -m                                 # the study in conf/config.yaml
    python -m sweeps.run -m 'pruning.increment=tag(log, interval(0.02, 0.3))' hydra.sweeper.n_trials=20
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from torch import nn

from optuna_sweep import disk_full_line, job_trial
from prune_core import PruningInfo, StopReason, compress_network
from prune_core.finetune import Ranks, TrainingOptions
from sweeps import layout
from sweeps.base_network import base_network
from sweeps.deployment.measure import measure_deployment
from sweeps.deployment.program import export_program
from sweeps.job.config import check_job_config, deployment_options, pruning_options, training_options
from sweeps.job.data import JobData, load_data
from sweeps.job.intermediate import IntermediateValues
from sweeps.job.schemas import register_schemas
from sweeps.process import interrupts
from sweeps.process.devices import job_device, job_index
from sweeps.process.distributed import job_ranks
from sweeps.tracking.history import LiveLog, log_deployment, log_pruning
from sweeps.tracking.job_run import job_run, study_name
from sweeps.tracking.logged_model import prepare_model_logging
from sweeps.tracking.resumption import find_resumption
from sweeps.tracking.store import open_store
from sweeps.tracking.study_run import closing_studies

log = logging.getLogger(__name__)
register_schemas()  # before Hydra composes the config


def objective_values(
    cfg: DictConfig, info: PruningInfo, measured: dict[str, float] | None = None
) -> dict[str, list[float]] | list[float]:
    """The returned network's values of ``sweep.objectives`` (and ``sweep.constraints`` as floor - value): its
    row of the pruning history, or what was ``measured`` of it after pruning (latency)."""
    row = info.returned_row | (measured or {})

    def value(name: str) -> float:
        if name not in row:
            raise ValueError(
                f"sweep objective {name!r} is neither in the pruning history nor measured; use one of "
                f"{[c for c in row if not c.startswith('channels[')]}"
            )
        return float(row[name])

    values = [value(name) for name in cfg.sweep.objectives]
    if not cfg.sweep.constraints:
        return values
    floors = cfg.sweep.constraints.items()
    return {"values": values, "constraints": [float(floor) - value(name) for name, floor in floors]}


def run_job(cfg: DictConfig):
    interrupts.install()  # again here: a launcher's worker process runs only this
    try:
        return _run_job(cfg)
    except Exception as exc:  # a signal that came back out of torch as another exception is still a stop
        if interrupts.interrupted(exc):
            raise KeyboardInterrupt(f"interrupted ({type(exc).__name__}: {exc})") from exc
        full = disk_full_line(exc)
        if full is not None:  # the one line that matters, before the stores' long messages
            log.error(full)
        raise


def _run_job(cfg: DictConfig):
    check_job_config(cfg)
    single_run = HydraConfig.get().mode == RunMode.RUN
    with job_ranks(cfg.training.distributed, cfg.training.device, single_run) as ranks, ranks.failing_together():
        return _job(cfg, ranks) if ranks.main else _other_rank(cfg)


def _data_and_base(cfg: DictConfig) -> tuple[JobData, TrainingOptions, nn.Module, str]:
    """The job's data, fine-tuning options and trained base network (and where it came from), on every rank."""
    data = load_data(cfg)
    device = job_device(cfg.training.device, job_index(HydraConfig.get().job.get("num") or 0))
    options = training_options(cfg, device=device, validation_data=data.validation)
    base, origin = base_network(cfg, data, lambda: instantiate(cfg.model))
    return data, options, base, origin


def _other_rank(cfg: DictConfig) -> None:
    """A rank but the first of a job on several processes: it computes its share of the pruning run, and
    never asks the trial or the tracking store anything (``sweeps.process.distributed``)."""
    data, options, base, _ = _data_and_base(cfg)
    checkpoints, resumed = Ranks.current().from_main(None)  # as rank 0 found them
    settings = pruning_options(cfg, checkpoint_path=checkpoints, resume_from=resumed)
    compress_network(base, data.train, cfg.loss, options, pruning=settings)


def _job(cfg: DictConfig, ranks: Ranks):
    uri = layout.tracking_uri(cfg.tracking.uri)
    in_study = HydraConfig.get().mode == RunMode.MULTIRUN  # the study checked the server when it started
    open_store(uri, f"tracking.uri={uri!r}", wait=in_study)
    if cfg.tracking.log_model:
        prepare_model_logging()  # MLflow's once-per-process package listing, while the job loads and prunes
    trial = job_trial()  # a sweep with a pruner: report intermediate values to this trial
    data, options, base, origin = _data_and_base(cfg)
    log.info(f"Base network: {origin}")
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    checkpoints = output_dir / "checkpoints" if cfg.tracking.log_checkpoints else None
    if checkpoints is not None:
        checkpoints.mkdir(parents=True, exist_ok=True)
    # a trial stopped by Ctrl-C or SIGTERM is run again, from its last checkpoint, when the study starts again
    resumable = in_study and bool(HydraConfig.get().sweeper.get("retry_failed_trials", 0))
    resumed_from = output_dir / "resumed_from"
    resumption = find_resumption(MlflowClient(uri), cfg.tracking.experiment, study_name(), resumed_from, base)
    ranks.from_main((checkpoints, None if resumption is None else resumption.checkpoint))  # for the other ranks
    with (
        job_run(uri, cfg, resumption) as run,
        LiveLog(MlflowClient(uri), run.info.run_id, checkpoints=checkpoints is not None, resumable=resumable) as live,
    ):
        if resumption is not None:
            live.restore(resumption.rows)
        options = replace(options, output_fn=live.fine_tuning_step)
        plots_path = output_dir / "pruning_progress.png" if cfg.pruning.plots != "none" else None
        reported = None if trial is None else IntermediateValues(trial, cfg.sweep.objectives[0], then=live)
        settings = pruning_options(
            cfg,
            checkpoint_path=checkpoints,
            checkpoint_fn=live.checkpoint,
            plots_path=plots_path,
            iteration_fn=live if reported is None else reported,
            resume_from=None if resumption is None else resumption.checkpoint,
        )
        pruned, info = compress_network(base, data.train, cfg.loss, options, pruning=settings)
        interrupted = info.stop_reason == StopReason.INTERRUPTED
        log_model, deploy = cfg.tracking.log_model and not interrupted, deployment_options(cfg)
        example = data.example()  # read from the data once: a loader's first batch costs a load
        # one torch.export of the returned network, for both the logged model and model.onnx
        program = export_program(pruned, example) if not interrupted and (log_model or deploy.onnx) else None
        log_pruning(
            run,
            cfg,
            info,
            pruned,
            output_dir,
            example,
            live,
            log_model=log_model,
            program=program,
        )
        if interrupted:  # logged as far as it went (no model export: stop quickly); the run is KILLED
            raise KeyboardInterrupt
        deployment = measure_deployment(pruned, example, output_dir, deploy, program)
        log_deployment(run, deployment)
        pruned_at = None if reported is None or info.stop_reason != StopReason.OUTPUT_FN else reported.pruned_at
        if pruned_at is not None:
            MlflowClient(uri).set_tag(run.info.run_id, layout.PRUNED, f"at pruning iteration {pruned_at}")
            log.info(f"Optuna's pruner stopped this trial after pruning iteration {pruned_at}")
    result = objective_values(cfg, info, deployment.metrics)
    result = (result if isinstance(result, dict) else {"values": result}) | {
        "user_attrs": {"mlflow_run_id": run.info.run_id},  # Optuna keeps which MLflow run holds the trial
        "pruned": pruned_at is not None,
    }
    values = result["values"]
    log.info(
        f"Logged run {run.info.run_id} to {uri} (experiment {cfg.tracking.experiment!r}); "
        f"objectives {dict(zip(cfg.sweep.objectives, values))}"
    )
    if HydraConfig.get().mode.name != "MULTIRUN":
        print(f"\nResults: {output_dir}\nMLflow:  mlflow ui --backend-store-uri {uri}")
    if not all(math.isfinite(v) for v in values):
        raise RuntimeError(f"objectives are not finite: {result}")
    return result


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig):
    return run_job(cfg)


if __name__ == "__main__":
    interrupts.install()
    with closing_studies():
        main()
