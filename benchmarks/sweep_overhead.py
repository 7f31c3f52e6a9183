"""What a study costs beyond the pruning itself: MLflow logging and sweeper bookkeeping.

Runs ``python -m sweeps.run -m hydra.sweeper.n_trials=10`` (the default MNIST-1D study) in
this process, in a fresh scratch folder (so the base network is trained by the first trial),
with timers around: each job (``run_job``); the MLflow calls, each a row: run start and end
(with the experiment and the store check), ``log_pruning`` (params, metrics, tables, plot,
the safe model file, and the logged model, ``sweeps.tracking.logged_model``, saved on a thread of
its own meanwhile), ``log_deployment``, and the study's own run (its callbacks). The returned network's one
``torch.export`` (``sweeps.deployment.program``), which ``model.onnx`` and the logged model
share, is a row of its own: ``torch.onnx.export`` exported the network anyway, so it is not
counted as logging. Sweeper bookkeeping is the sweep's time outside the jobs (asking and
telling Optuna, its sqlite storage, Hydra composing each job's config and setting up its folder).
Checkpoints and the live pruning metrics are logged on background threads while pruning goes on,
so they are not on these timers. Targets: fixed MLflow logging under
0.3 s per trial and under 5% of the study.

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
import statistics
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
from sweeps.tracking import history, job_run, logged_model, study_run

CALLS: dict[str, list[float]] = defaultdict(list)
CAPTURED: dict[str, object] = {}


def timed(owner, name: str, bucket: str) -> None:
    """Replace ``owner.name`` by a wrapper appending each call's wall time to ``CALLS[bucket]``
    (nothing when ``owner`` has no such name: an older tree measured with this benchmark)."""
    original = getattr(owner, name, None)
    if original is None:
        return

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            CALLS[bucket].append(time.perf_counter() - started)

    setattr(owner, name, wrapper)


def spent(bucket: str) -> float:
    return sum(CALLS[bucket])


TRIAL_LOGGING = ("runs", "log_pruning", "log_deployment")  # a trial's own MLflow logging
PER_TRIAL: list[float] = []  # each trial's


def logging_per_trial(run_job):
    """``run_job`` that appends the trial's own MLflow logging time to ``PER_TRIAL``."""

    @functools.wraps(run_job)
    def wrapper(*args, **kwargs):
        before = sum(spent(b) for b in TRIAL_LOGGING)
        try:
            return run_job(*args, **kwargs)
        finally:
            PER_TRIAL.append(sum(spent(b) for b in TRIAL_LOGGING) - before)

    return wrapper


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
    sweeps.run.run_job = logging_per_trial(sweeps.run.run_job)
    timed(study_run.StudyRunCallback, "on_multirun_start", "study_start")
    timed(study_run.StudyRunCallback, "on_multirun_end", "study_end")
    for owner, name in (
        (mlflow, "start_run"),
        (mlflow, "end_run"),
        (mlflow, "set_experiment"),
        (sweeps.run, "open_store"),
        (job_run, "experiment_id"),
    ):  # patched where the job looks them up
        timed(owner, name, "runs")
    timed(logged_model, "_save", "model")
    timed(sweeps.run, "export_program", "program")
    sweeps.run.log_pruning = capture_info(sweeps.run.log_pruning)
    timed(sweeps.run, "log_pruning", "log_pruning")
    timed(sweeps.run, "log_deployment", "log_deployment")
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
    parts = {
        "MLflow runs: start, end, experiment, store check": spent("runs"),
        "params, metrics, tables, artifacts and the logged model (`log_pruning`)": spent("log_pruning"),
        "deployment metrics and `model.onnx` (`log_deployment`)": spent("log_deployment"),
        "the study's run, start (the fresh store's tables created: once per store)": spent("study_start"),
        "the study's run, end (summary, Optuna plots, front figure: once per study)": spent("study_end"),
    }
    mlflow_s = sum(parts.values())
    study = spent("study_start") + spent("study_end")
    bookkeeping = total - spent("jobs") - study
    trials = args.trials
    per_trial = (mlflow_s - study) / trials
    models = CALLS["model"]
    count, batch_s, single_s = batching_comparison(layout.tracking_uri(None))
    lines = [
        "# Sweep overhead: MLflow logging and sweeper bookkeeping",
        "",
        f"torch {torch.__version__}, mlflow {mlflow.__version__}, {platform.processor() or platform.machine()}, "
        f"2 threads. Produced by `python -m benchmarks.sweep_overhead` ({trials} trials of the default "
        "MNIST-1D study in one process, a fresh folder: the first trial trains the base network).",
        "",
        "| part | seconds | per trial | share of the study's time |",
        "|---|---:|---:|---:|",
        f"| the whole study (`main()`) | {total:.2f} | {total / trials:.2f} | 100% |",
        f"| jobs (data, base network, pruning, export, latency, MLflow logging) | {spent('jobs'):.2f} | "
        f"{spent('jobs') / trials:.2f} | {100 * spent('jobs') / total:.1f}% |",
        *(
            f"| {part} | {value:.2f} | {value / trials:.3f} | {100 * value / total:.1f}% |"
            for part, value in parts.items()
        ),
        f"| the returned network's one `torch.export`, for `model.onnx` and the logged model (not logging: "
        f"`torch.onnx.export` ran it before) | {spent('program'):.2f} | {spent('program') / trials:.3f} | "
        f"{100 * spent('program') / total:.1f}% |",
        f"| **MLflow logging** | {mlflow_s:.2f} | {mlflow_s / trials:.3f} | **{100 * mlflow_s / total:.1f}%** "
        "(target < 5%) |",
        f"| sweeper bookkeeping (Hydra start-up and job set-up, Optuna ask/tell and storage) | {bookkeeping:.2f} | "
        f"{bookkeeping / trials:.3f} | {100 * bookkeeping / total:.1f}% |",
        "",
        f"Fixed MLflow logging per trial, the study's own run left out: **{per_trial:.3f} s** (target < 0.3 s); "
        f"the first trial's {PER_TRIAL[0]:.2f} s, then a median of "
        f"{statistics.median(PER_TRIAL[1:] or PER_TRIAL):.3f} s per trial. "
        + (
            f"The logged model's save (`mlflow.pytorch`, the shared program as pt2), on a thread of its own "
            f"while `log_pruning` logs the rest: {models[0]:.2f} s in the first trial (MLflow warming up in the "
            f"process) and a median of {statistics.median(models[1:]):.2f} s after. "
            if len(models) > 1
            else ""
        )
        + f"Time to the first completed trial: {first_trial_end(layout.tracking_uri(None)) - started_epoch:.1f} s "
        "(base network training included).",
        "",
        f"Logging one trial's {count} metric values: `log_batch` in chunks of 1000: {batch_s:.2f} s; "
        f"one `log_metric` call each: {single_s:.2f} s ({single_s / batch_s:.0f}x slower).",
    ]
    publish("sweep_overhead", lines)


if __name__ == "__main__":
    main()
