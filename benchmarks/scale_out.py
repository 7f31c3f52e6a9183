"""Trials per hour with 1 and 2 workers on one PostgreSQL study, and bookkeeping per trial on PostgreSQL
against sqlite.

Part 1 (throughput): the default study (``python -m sweeps.run -m``, its search space and
settings) run once by one worker with ``--trials`` trials, and once by two workers started
together, each in its own folder with half the trials. The study lives in PostgreSQL; MLflow
logs to an ``mlflow server`` with a PostgreSQL store and proxied artifacts: the README's
scale-out set-up. The base network is trained once beforehand into a shared cache, so both
timings are of pruning trials only. Wall time runs from the first worker's start to the last
one's exit (process start-up included).

Part 2 (bookkeeping per trial, peers side by side): what the sweeper and the tracking do to the
stores for one trial, repeated ``--bookkeeping`` times on sqlite and on PostgreSQL:
Optuna's ``ask`` + the worker attribute + ``tell``; MLflow's run creation, one batch of
metrics and params, and the run's end (the store opened directly by URL).

Run: ``python -m benchmarks.scale_out [--trials 8] [--bookkeeping 50]`` (needs PostgreSQL, as
the tests do). Writes ``benchmarks/results/scale_out.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import optuna
import torch
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution, IntDistribution

from benchmarks.publish import publish
from tests.support.services import create_database, mlflow_server, postgres

ROOT = Path(__file__).resolve().parents[1]


def app(folder: Path, *overrides: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "sweeps.run", *overrides],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"a worker failed ({process.returncode}):\n{err[-3000:]}")


def throughput(base: str, work: Path, trials: int, workers: int, cache: Path, server: str) -> float:
    """Trials per hour of ``workers`` processes sharing one new PostgreSQL study of ``trials`` trials."""
    study = create_database(base, f"study_{workers}")
    common = [
        "-m",
        f"hydra.sweeper.storage={study}",
        f"tracking.uri={server}",
        f"base.cache_dir={cache}",
        f"hydra.sweeper.n_trials={trials // workers}",
        f"tracking.experiment=scale-out-{workers}",
    ]
    folders = [work / f"{workers}-workers-{k}" for k in range(workers)]
    for folder in folders:
        folder.mkdir()
    started = time.perf_counter()
    wait([app(folder, *common) for folder in folders])
    elapsed = time.perf_counter() - started
    done = [
        t
        for t in optuna.load_study(study_name=f"scale-out-{workers}", storage=study).trials
        if t.state == optuna.trial.TrialState.COMPLETE
    ]
    return len(done) / elapsed * 3600


def optuna_bookkeeping(storage: str, repeats: int) -> float:
    """Seconds per trial of the sweeper's storage work (ask, worker attribute, tell)."""
    study = optuna.create_study(storage=storage, directions=["maximize", "maximize"])
    space = {"pruning.increment": FloatDistribution(0.05, 0.2), "training.max_epochs": IntDistribution(1, 3)}
    started = time.perf_counter()
    for k in range(repeats):
        trial = study.ask(space)
        trial.set_user_attr("worker", {"host": "bench", "pid": k, "started": 0.0})
        study.tell(trial, [90.0, 0.5])
    return (time.perf_counter() - started) / repeats


def mlflow_bookkeeping(uri: str, repeats: int) -> float:
    """Seconds per trial of the tracking's store work without artifacts (run, params, metrics, end)."""
    client = MlflowClient(uri)
    experiment = client.create_experiment(f"bookkeeping-{time.time_ns()}")
    params = [Param(f"p{k}", str(k)) for k in range(60)]
    started = time.perf_counter()
    for k in range(repeats):
        run = client.create_run(experiment, tags={"taylorprune.role": "trial", "taylorprune.trial": str(k)})
        metrics = [Metric(f"pruning/m{j % 6}", 0.5, 0, j // 6) for j in range(120)]
        client.log_batch(run.info.run_id, metrics=metrics, params=params, synchronous=True)
        client.set_terminated(run.info.run_id, "FINISHED")
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per study (even)")
    parser.add_argument("--bookkeeping", type=int, default=50, help="trials in the bookkeeping comparison")
    args = parser.parse_args()
    if args.trials < 2 or args.trials % 2:
        raise SystemExit(f"--trials must be an even number >= 2, got {args.trials}")
    lines = [
        "# Scale-out: 1 and 2 workers on PostgreSQL, bookkeeping on PostgreSQL and sqlite\n",
        f"`python -m benchmarks.scale_out --trials {args.trials} --bookkeeping {args.bookkeeping}`; "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, optuna {optuna.__version__}, "
        f"mlflow {mlflow.__version__}, {platform.machine()}.\n",
    ]
    with tempfile.TemporaryDirectory(prefix="taylorprune-scale-out-") as tmp, postgres() as base:
        work, cache = Path(tmp), Path(tmp) / "cache"
        with mlflow_server(create_database(base, "tracking"), work / "artifacts") as server:
            warm = work / "warm-up"
            warm.mkdir()  # trains the base network once, into the shared cache
            wait([app(warm, f"base.cache_dir={cache}", f"tracking.uri={server}", "pruning.goal=0.05")])
            rates = {n: throughput(base, work, args.trials, n, cache, server) for n in (1, 2)}
        lines += [
            "## Throughput (the default study; Optuna on PostgreSQL, MLflow server on PostgreSQL)\n",
            "| workers | trials per hour | vs 1 worker |",
            "|---|---|---|",
        ]
        lines += [f"| {n} | {rate:.0f} | {rate / rates[1]:.2f}x |" for n, rate in rates.items()]
        sqlite_dir = work / "sqlite"
        sqlite_dir.mkdir()
        cost = {
            ("Optuna: ask + worker attribute + tell", "sqlite"): optuna_bookkeeping(
                f"sqlite:///{sqlite_dir / 'optuna.db'}", args.bookkeeping
            ),
            ("Optuna: ask + worker attribute + tell", "PostgreSQL"): optuna_bookkeeping(
                create_database(base, "optuna_bookkeeping"), args.bookkeeping
            ),
            ("MLflow: run, params + metrics batch, end", "sqlite"): mlflow_bookkeeping(
                f"sqlite:///{sqlite_dir / 'mlflow.db'}", args.bookkeeping
            ),
            ("MLflow: run, params + metrics batch, end", "PostgreSQL"): mlflow_bookkeeping(
                create_database(base, "mlflow_bookkeeping"), args.bookkeeping
            ),
        }
    lines += [
        "\n## Bookkeeping per trial (ms; the same operations on each store, in this run)\n",
        "| operations | sqlite | PostgreSQL |",
        "|---|---|---|",
    ]
    for what in dict.fromkeys(w for w, _ in cost):
        lines.append(f"| {what} | {1000 * cost[what, 'sqlite']:.1f} | {1000 * cost[what, 'PostgreSQL']:.1f} |")
    stores = ("sqlite", "PostgreSQL")
    total = {store: statistics.fsum(v for (_, s), v in cost.items() if s == store) for store in stores}
    lines.append(f"| **total** | {1000 * total['sqlite']:.1f} | {1000 * total['PostgreSQL']:.1f} |")
    publish("scale_out", lines)


if __name__ == "__main__":
    main()
