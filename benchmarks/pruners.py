"""Optuna's pruners against no pruner: the same single-objective study, the same seed and trial budget.

Runs ``python -m sweeps.run -m sweep=max_reduction`` (maximise the learnables reduction subject to
validation accuracy >= the floor) once per pruner in a fresh scratch folder each, every study with
sampler seed 0 and ``--trials`` trials over the default search space (increment, scoring
iterations, fine-tuning epochs, validation threshold). The base network is trained once and
copied into each folder's cache, so every study starts from the same network and no study pays
for it. Per study, from Optuna's own records: the best feasible value, the time from the first
trial's start to the completion of the trial that first reached it, the total time, and the
trials that completed or were pruned.

With ``--jobs k`` (k > 1) the studies run k trials at once through the joblib launcher, once per
``--launch`` mode: ``slots`` (each slot takes the next trial as soon as its own ends) and
``batches`` (``hydra.sweeper.slots=false``: batches of k, each waiting for its slowest trial), so
the two are measured side by side, under the same load.

Run: ``python -m benchmarks.pruners [--trials 12] [--pruners none median hyperband] [--jobs 2 --launch
slots batches]``. Writes ``benchmarks/results/pruners.md`` (``pruners_<k>_jobs.md`` with ``--jobs k``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import torch

from benchmarks.publish import publish

ROOT = Path(__file__).resolve().parents[1]
STUDY = [
    "sweep=max_reduction",
    "sweep.constraints={validation_accuracy: 85.0}",
    "data.num_samples=2000",
    "base.training.max_epochs=15",
    "pruning.goal=0.95",
    "hydra.sweeper.sampler.seed=0",
    "export.onnx=false",
    "export.latency=false",
    "tracking.log_model=false",
    "pruning.plots=none",
    "pruning.verbosity=off",
]


def launching(jobs: int, launch: str) -> list[str]:
    """The overrides that run ``jobs`` trials at once in ``launch`` mode (none for one at a time)."""
    if jobs == 1:
        return []
    return ["hydra/launcher=joblib", f"hydra.sweeper.n_jobs={jobs}", f"hydra.sweeper.slots={launch == 'slots'}"]


def run_study(folder: Path, pruner: str, trials: int, launch: list[str] = ()) -> float:
    """One study in ``folder`` (``launch``: ``launching``'s overrides); its wall-clock seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sweeps.run",
            "-m",
            *STUDY,
            f"hydra.sweeper.n_trials={trials}",
            f"hydra.sweeper.pruner={pruner}",
            *launch,
        ],
        cwd=folder,
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def summary(folder: Path, pruner: str, seconds: float) -> dict[str, object]:
    study = optuna.load_study(study_name="taylorprune", storage=f"sqlite:///{folder / 'optuna.db'}")
    trials = study.get_trials(deepcopy=False)
    start = min(t.datetime_start for t in trials)
    done = sorted(
        (
            t
            for t in trials
            if t.state == optuna.trial.TrialState.COMPLETE and all(c <= 0 for c in t.user_attrs.get("constraints", [0]))
        ),
        key=lambda t: t.datetime_complete,
    )
    best = max((t.value for t in done), default=float("nan"))
    first_best = next((t for t in done if t.value == best), None)
    states = pd.Series([t.state.name for t in trials]).value_counts().to_dict()
    return {
        "pruner": pruner,
        "best reduction (%)": round(100 * best, 1),
        "time to best (s)": round((first_best.datetime_complete - start).total_seconds()) if first_best else None,
        "total (s)": round(seconds),
        "complete": states.get("COMPLETE", 0),
        "pruned": states.get("PRUNED", 0),
        "failed": states.get("FAIL", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--pruners", nargs="+", default=["none", "median"])
    parser.add_argument("--jobs", type=int, default=1, help="trials at once (joblib launcher when > 1)")
    parser.add_argument("--launch", nargs="+", choices=["slots", "batches"], default=["slots"])
    args = parser.parse_args()
    modes = args.launch if args.jobs > 1 else ["one at a time"]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        warm = Path(scratch) / "warm"
        warm.mkdir()
        run_study(warm, "none", 1)  # trains and caches the base network once
        for pruner in args.pruners:
            for mode in modes:
                folder = Path(scratch) / f"{pruner}-{mode}"
                folder.mkdir()
                shutil.copytree(warm / ".cache", folder / ".cache")
                seconds = run_study(folder, pruner, args.trials, launching(args.jobs, mode))
                rows.append({"launch": mode} | summary(folder, pruner, seconds))
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    publish(
        "pruners" if args.jobs == 1 else f"pruners_{args.jobs}_jobs",
        [
            "# Optuna pruners against no pruner (sweep=max_reduction)",
            "",
            f"{args.trials} trials per study, {args.jobs} at a time, sampler seed 0, the default search space, "
            "MNIST-1D (2000 examples), "
            f"the same cached base network; feasible: validation accuracy >= 85%. torch {torch.__version__}, optuna "
            f"{optuna.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores. Produced by "
            f"`python -m benchmarks.pruners {' '.join(sys.argv[1:])}`.",
            "",
            table.to_markdown(index=False),
            "",
            "Time to best: from the first trial's start to the completion of the trial that first reached the best "
            "feasible value. Pruned trials stop after the pruning iteration at which their reduction falls below the "
            "pruner's bar (median: the median of earlier trials at that iteration).",
        ],
    )


if __name__ == "__main__":
    main()
