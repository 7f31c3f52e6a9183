"""What a study costs beyond the pruning itself: MLflow logging and sweeper bookkeeping.

Runs ``python -m sweeps.run -m hydra.sweeper.n_trials=10`` (the default MNIST-1D study) in
this process, in a fresh scratch folder (so the base network is trained by the first trial),
with timers around: each job (``run_job``); the MLflow calls (the study run callback, run
start/end, ``log_pruning``: params, metrics, tables, checkpoints, plot, model); and the
sweeper's ``sweep`` as a whole. Sweeper bookkeeping is the sweep's time outside the jobs
(asking and telling Optuna, its sqlite storage, Hydra composing each job's config and
setting up its folder). Target: MLflow logging + sweeper bookkeeping < 3% of trial time.

It then logs one trial's metrics again into a fresh run, once with ``log_batch`` (as the
project does) and once with one ``log_metric`` call per value, to show why batching matters.

Run: ``python -m benchmarks.sweep_overhead [--trials 10]``. Writes
``benchmarks/results/sweep_overhead.md``.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import hydra
import mlflow
import torch
from mlflow.tracking import MlflowClient

import sweeps.run
from benchmarks.publish import publish
from sweeps import layout
from sweeps.tracking import history, job_run, study_run

SPENT: dict[str, float] = defaultdict(float)
CAPTURED: dict[str, object] = {}


def timed(owner, name: str, bucket: str) -> None:
    """Replace ``owner.name`` by a wrapper adding its wall time to ``SPENT[bucket]``."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            SPENT[bucket] += time.perf_counter() - started

    setattr(owner, name, wrapper)


def capture_info(original):
    @functools.wraps(original)
    def wrapper(run, cfg, info, *args, **kwargs):
        CAPTURED["info"] = info
        return original(run, cfg, info, *args, **kwargs)

    return wrapper


def first_trial_end(uri: str) -> float:
    """When the first trial's MLflow run ended (seconds since the epoch)."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("taylorprune").experiment_id
    trials = client.search_runs([experiment], "tags.`taylorprune.role` = 'trial'")
    return min(run.info.end_time for run in trials) / 1000


def batching_comparison(uri: str) -> tuple[int, float, float]:
    metrics = history.history_metrics(CAPTURED["info"])
    client = MlflowClient(uri)
    experiment = client.create_experiment("batching-comparison")
    batched, single = client.create_run(experiment), client.create_run(experiment)
    started = time.perf_counter()
    history._metric_batches(client, batched.info.run_id, metrics)
    batch_s = time.perf_counter() - started
    started = time.perf_counter()
    for m in metrics:
        client.log_metric(single.info.run_id, m.key, m.value, m.timestamp, m.step)
    return len(metrics), batch_s, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(2)
    scratch = Path(tempfile.mkdtemp(prefix="sweep_overhead_"))
    os.chdir(scratch)
    timed(sweeps.run, "run_job", "jobs")
    timed(study_run.StudyRunCallback, "on_multirun_start", "mlflow_study")
    timed(study_run.StudyRunCallback, "on_multirun_end", "mlflow_study")
    for owner, name in (
        (mlflow, "start_run"),
        (mlflow, "end_run"),
        (mlflow, "set_experiment"),
        (sweeps.run, "open_store"),
        (job_run, "experiment_id"),
    ):  # patched where the job looks them up
        timed(owner, name, "mlflow")
    timed(history, "log_torch_model", "model")
    sweeps.run.log_pruning = capture_info(sweeps.run.log_pruning)
    timed(sweeps.run, "log_pruning", "mlflow")
    sys.argv = ["sweeps.run", "-m", f"hydra.sweeper.n_trials={args.trials}"]
    conf = Path(sweeps.run.__file__).resolve().parents[1] / "conf"
    app = hydra.main(config_path=str(conf), config_name="config", version_base="1.3")(
        lambda cfg: sweeps.run.run_job(cfg)
    )  # looked up at call time: the timed version
    started, started_epoch = time.perf_counter(), time.time()
    try:
        app()
    except SystemExit as exit_:
        if exit_.code:
            raise
    total = time.perf_counter() - started
    jobs, mlflow_s = SPENT["jobs"], SPENT["mlflow"] + SPENT["mlflow_study"]
    bookkeeping = total - jobs - SPENT["mlflow_study"]
    count, batch_s, single_s = batching_comparison(layout.tracking_uri(None))
    lines = [
        "# Sweep overhead: MLflow logging and sweeper bookkeeping",
        "",
        f"torch {torch.__version__}, mlflow {mlflow.__version__}, {platform.processor() or platform.machine()}, "
        f"2 threads. Produced by `python -m benchmarks.sweep_overhead` ({args.trials} trials of the default "
        "MNIST-1D study, a fresh folder: the first trial trains the base network).",
        "",
        "| part | seconds | share of the study's time |",
        "|---|---:|---:|",
        f"| the whole study (`main()`) | {total:.2f} | 100% |",
        f"| jobs (data, base network, pruning, MLflow logging) | {jobs:.2f} | {100 * jobs / total:.1f}% |",
        f"| MLflow logging (study run, job runs, params, metrics, tables, artifacts, model) | {mlflow_s:.2f} | "
        f"**{100 * mlflow_s / total:.1f}%** |",
        f"| of which `mlflow.pytorch.log_model` (torch.export to pt2) | {SPENT['model']:.2f} | "
        f"{100 * SPENT['model'] / total:.1f}% |",
        f"| sweeper bookkeeping (Hydra start-up and job set-up, Optuna ask/tell and storage) | {bookkeeping:.2f} | "
        f"**{100 * bookkeeping / total:.1f}%** |",
        f"| **MLflow + bookkeeping** | {mlflow_s + bookkeeping:.2f} | "
        f"**{100 * (mlflow_s + bookkeeping) / total:.1f}%** (target < 3%) |",
        "",
        f"Per trial: {total / args.trials:.2f} s in all, {mlflow_s / args.trials:.2f} s of MLflow logging "
        f"({SPENT['model'] / args.trials:.2f} s of it the model export), "
        f"{bookkeeping / args.trials:.2f} s of bookkeeping. Time to the first completed trial: "
        f"{first_trial_end(layout.tracking_uri(None)) - started_epoch:.1f} s (base network training included).",
        "",
        f"Logging one trial's {count} metric values: `log_batch` in chunks of 1000: {batch_s:.2f} s; "
        f"one `log_metric` call each: {single_s:.2f} s ({single_s / batch_s:.0f}x slower).",
    ]
    publish("sweep_overhead", lines)


if __name__ == "__main__":
    main()
