"""What a study finds, against the default single run and Torch-Pruning's best importance, on the
2-D image task of ``benchmarks/criteria_2d.py``.

Setup, the same for every contender: scikit-learn's digits upscaled to 28x28; the training split
is cut once more into 80% fit and 20% validation (what a study selects on), and every accuracy
reported is on the test split, which no contender sees. ``small_resnet(width=32)`` is trained on
the fit split once per seed (as in ``criteria_2d``) and shared. Every contender prunes to 92% fewer
MACs (``budget="macs"``) and fine-tunes one epoch after every step (Adam 5e-4, batch 64).

Contenders:
- ``default``: one ``compress_network`` run with the app's pruning settings (``conf/pruning``:
  taylor, global, mean normalisation, score iterations "auto") in 7.5% MACs steps;
- ``study-<sampler>``: an Optuna study of ``--trials`` trials (ask/tell; TPE, NSGA-II in generations
  of 10 or random, seeded by the seed) over the increment (0.05-0.2), score iterations (5-60), criterion (taylor,
  taylor-weight, taylor-bn, bn-scale, l1), allocation (global, uniform), distillation alpha (0-0.9) and
  learn-rate schedule (none, cosine, onecycle). Epochs per step stay at 1 and no validation
  threshold is set, so every trial has the same fine-tuning per step and reaches 92%. A trial's
  value is its mean validation accuracy at 50/75/90% fewer MACs. At each level the study ships
  the trial whose validation accuracy there is best; its test accuracy is reported;
- ``--peers``: Torch-Pruning's best importances on this task (``criteria_2d``'s 5 seeds:
  ``BNScaleImportance`` at 90% fewer MACs, ``FPGMImportance`` at 50% and 75%), each in the same
  7.5% steps.

Targets (the issue's): at 75% and 90% fewer MACs, each study's shipped network at least 1 point
above the best peer and above the default run, in the mean over seeds.

Also reported: the hypervolume of each study's front of (validation accuracy %, fewer MACs
fraction) over every step of its trials, above (0, 0), after 10, 20 and 30 trials
(``optuna_sweep.front_hypervolume``), and each contender's wall time.

Run: ``python -m benchmarks.study_value [--seeds 0 1 2] [--trials 30] [--samplers tpe nsgaii random]
[--peers tp-bn tp-fpgm] [--workers 1] [--name study_value]``. Writes ``benchmarks/results/<name>.md`` and
``<name>_trials.csv``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import multiprocessing
import platform
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import torch

from benchmarks import criteria, criteria_2d
from benchmarks.publish import RESULTS, publish
from optuna_sweep import front_hypervolume
from prune_core import Distillation, PruningOptions, checkpoint_name, compress_network, load_pruned
from sweeps.builders.models import small_resnet

LEVELS = criteria_2d.LEVELS
SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    # generations of 10: with Optuna's default of 50, a 30-trial study would be all first (random) generation
    "nsgaii": functools.partial(optuna.samplers.NSGAIISampler, population_size=10),
    "random": optuna.samplers.RandomSampler,
}
CHECKPOINTS = (10, 20, 30)


def split(seed: int) -> dict[str, torch.Tensor]:
    """The digits of ``criteria_2d``, the training split cut into fit and validation."""
    data = criteria_2d.digits_28()
    order = torch.randperm(len(data["y_train"]), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(order))
    fit, val = order[:cut], order[cut:]
    return {
        "x_train": data["x_train"][fit],
        "y_train": data["y_train"][fit],
        "x_val": data["x_train"][val],
        "y_val": data["y_train"][val],
        "x_test": data["x_test"],
        "y_test": data["y_test"],
    }


def prune(base, data: dict, seed: int, keywords: dict[str, Any], training: dict[str, Any]) -> pd.DataFrame:
    """One ``compress_network`` run to 92% fewer MACs; per step its MACs reduction and validation and
    test accuracy (each step's network read back from its checkpoint)."""
    options = criteria.fine_tuning(data, seed, "cpu", epochs=1)
    options = dataclasses.replace(options, validation_data=(data["x_val"], data["y_val"]), **training)
    with tempfile.TemporaryDirectory() as folder:
        _, info = compress_network(
            base,
            data["x_train"],
            data["y_train"],
            "crossentropy",
            options,
            budget="macs",
            goal=criteria_2d.GOAL,
            verbosity="off",
            checkpoint_path=folder,
            **keywords,
        )
        rows = info.pruning_history[["iteration", "macs_reduction", "validation_accuracy"]].copy()
        rows["test_accuracy"] = [
            criteria.accuracy_on_test(
                base if k == 0 else load_pruned(Path(folder) / checkpoint_name(k), lambda: small_resnet(width=32)), data
            )
            for k in rows["iteration"]
        ]
    return rows


def at_levels(rows: pd.DataFrame, column: str) -> dict[str, float]:
    return criteria.at_levels(list(zip(rows["macs_reduction"], rows[column])), LEVELS, slack=1e-3)


def study_trial(trial: optuna.Trial) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's ``compress_network`` keywords and ``TrainingOptions`` fields."""
    keywords = {
        "increment": trial.suggest_float("increment", 0.05, 0.2),
        "num_importance_score_iterations": trial.suggest_int("num_importance_score_iterations", 5, 60),
        "criterion": trial.suggest_categorical("criterion", ["taylor", "taylor-weight", "taylor-bn", "bn-scale", "l1"]),
        "allocation": trial.suggest_categorical("allocation", ["global", "uniform"]),
    }
    alpha = trial.suggest_float("distillation_alpha", 0.0, 0.9)
    training = {
        "distillation": Distillation(alpha=alpha, temperature=4.0),
        "learn_rate_schedule": trial.suggest_categorical("learn_rate_schedule", ["none", "cosine", "onecycle"]),
    }
    return keywords, training


def run_contender(seed: int, contender: str, trials: int) -> list[dict]:
    """One contender on one seed: a row per trial (one for a single run), with its steps."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = split(seed)
    base = criteria_2d.train_base(data, seed, "cpu")
    started, out = time.perf_counter(), []
    if contender == "default":
        settings = PruningOptions()
        keywords = {"increment": criteria_2d.INCREMENT, "criterion": settings.criterion}
        out.append({"trial": 0, "params": keywords, "steps": prune(base, data, seed, keywords, {})})
    elif contender in criteria_2d.THEIRS:
        rows = criteria_2d.run_tp(base, data, seed, criteria_2d.THEIRS[contender], "cpu")
        steps = pd.DataFrame(rows, columns=["macs_reduction", "test_accuracy"]).assign(validation_accuracy=np.nan)
        out.append({"trial": 0, "params": {}, "steps": steps})
    else:
        study = optuna.create_study(direction="maximize", sampler=SAMPLERS[contender.split("-", 1)[1]](seed=seed))
        for number in range(trials):
            trial = study.ask()
            keywords, training = study_trial(trial)
            steps = prune(base, data, seed, keywords, training)
            value = float(np.nanmean(list(at_levels(steps, "validation_accuracy").values())))
            study.tell(trial, value)
            out.append({"trial": number, "params": trial.params, "steps": steps})
            print(f"  seed {seed} {contender} trial {number}: {value:.1f} {trial.params}", flush=True)
    seconds = time.perf_counter() - started
    return [row | {"seed": seed, "contender": contender, "seconds": seconds} for row in out]


def shipped(rows: list[dict]) -> dict[str, float]:
    """Test accuracy at each level of the network a contender ships: for a study, the trial whose
    validation accuracy at that level is best."""
    if len(rows) == 1:
        return at_levels(rows[0]["steps"], "test_accuracy")
    out = {}
    for level in LEVELS:
        name = f"{round(100 * level)}%"
        candidates = [(at_levels(r["steps"], "validation_accuracy")[name], r) for r in rows]
        _, best = max(candidates, key=lambda c: -np.inf if np.isnan(c[0]) else c[0])
        out[name] = at_levels(best["steps"], "test_accuracy")[name]
    return out


def hypervolume(rows: list[dict], trials: int) -> float:
    """The hypervolume of (validation accuracy, fewer MACs) over every step of the first ``trials`` trials."""
    points = optuna.create_study(directions=["maximize", "maximize"])
    for row in rows[:trials]:
        for _, step in row["steps"].iterrows():
            values = [float(step["validation_accuracy"]), float(step["macs_reduction"])]
            points.add_trial(optuna.trial.create_trial(values=values))
    return front_hypervolume(points, [0.0, 0.0])


def targets(table: pd.DataFrame, studies: list[str], peers: list[str], levels: list[str]) -> list[str]:
    """One line per study and level (75% and 90%): its mean against the best peer's + 1 and the default's."""
    means = table.groupby("contender")[levels].mean()
    lines = ["Targets: the study at least 1 point above the best peer and above the default run, mean over seeds.", ""]
    for study in studies:
        for level in ("75%", "90%"):
            peer = means.loc[peers, level].idxmax()
            ours, best, default = means.loc[study, level], means.loc[peer, level], means.loc["default", level]
            met = "met" if ours >= best + 1 and ours > default else "missed"
            lines.append(f"- {level}: {study} {ours:.1f}, best peer {peer} {best:.1f}, default {default:.1f} -> {met}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--peers", nargs="+", default=["tp-bn", "tp-fpgm"], choices=list(criteria_2d.THEIRS))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--name", default="study_value", help="results file stem under benchmarks/results/")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error(f"--trials must be at least 1, got {args.trials}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = [f"study-{s}" for s in args.samplers]
    contenders = ["default", *args.peers, *studies]
    # the long studies first, so that the single runs fill the workers' ends
    jobs = [(seed, c) for seed in args.seeds for c in studies] + [
        (seed, c) for seed in args.seeds for c in ["default", *args.peers]
    ]
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(run_contender, *zip(*jobs), [args.trials] * len(jobs)))
    records, trials = [], []
    for (seed, contender), rows in zip(jobs, results, strict=True):
        record = {"contender": contender, "seed": seed, **shipped(rows), "seconds": rows[0]["seconds"]}
        if contender.startswith("study-"):
            record |= {f"hv@{n}": hypervolume(rows, n) for n in CHECKPOINTS if n <= len(rows)}
        records.append(record)
        trials += [
            {"contender": contender, "seed": seed, "trial": r["trial"], **r["params"], **shipped([r])} for r in rows
        ]
    table = pd.DataFrame(records)
    levels = [f"{round(100 * level)}%" for level in LEVELS]
    table = table.set_index("contender").loc[contenders].reset_index()
    summary = table.groupby("contender", sort=False)[levels + ["seconds"]].agg(["mean", "std"])
    lines = [
        "# What a study finds: test accuracy (%) of the shipped network at each MACs reduction",
        "",
        f"Digits 28x28, `small_resnet(width=32)`; seeds {args.seeds}; {args.trials} trials per study; "
        f"torch {torch.__version__}, optuna {optuna.__version__}, {platform.machine()}, CPU, "
        f"{args.workers} parallel jobs. Produced by `python -m benchmarks.study_value --seeds "
        f"{' '.join(map(str, args.seeds))} --trials {args.trials} --samplers {' '.join(args.samplers)} "
        f"--peers {' '.join(args.peers)} --workers {args.workers} --name {args.name}`.",
        "",
        *targets(table, studies, args.peers, levels),
        "",
        "| contender | " + " | ".join(levels) + " | wall time (s) |",
        "|---|" + "---:|" * (len(levels) + 1),
    ]
    for contender in summary.index:
        cells = [
            f"{summary.loc[contender, (c, 'mean')]:.1f} ± {np.nan_to_num(summary.loc[contender, (c, 'std')]):.1f}"
            for c in levels
        ]
        lines.append(
            f"| {contender} | " + " | ".join(cells) + f" | {summary.loc[contender, ('seconds', 'mean')]:.0f} |"
        )
    volumes = [c for c in table.columns if c.startswith("hv@")]
    if volumes:
        lines += ["", "Hypervolume of each study's front (validation accuracy x fewer MACs), mean over seeds:", ""]
        lines.append(
            table[table["contender"].str.startswith("study-")]
            .groupby("contender")[volumes]
            .mean()
            .round(1)
            .to_markdown()
        )
    lines += ["", "Per seed:", "", table.round(1).to_markdown(index=False)]
    publish(args.name, lines)
    pd.DataFrame(trials).to_csv(RESULTS / f"{args.name}_trials.csv", index=False)


if __name__ == "__main__":
    main()
