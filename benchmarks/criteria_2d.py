"""Which filters to remove on a real 2-D image task under a MACs budget: this project's criteria
side by side with every Torch-Pruning importance.

Setup (the same for every method): scikit-learn's handwritten digits (1797 real images, shipped
with the package), upscaled from 8x8 to 28x28, 75% train / 25% test. The network is
``sweeps.builders.models.small_resnet(width=32)``: a stem and three residual stages of 32/64/128
channels (308 k parameters), trained once per seed (Adam 1e-3, 15 epochs) and shared by all
methods. Pruning removes 7.5% of the original MACs per step up to 92%; after every step the
network is fine-tuned for one epoch (Adam 5e-4, batch 64) and its test accuracy recorded. The
accuracy at 50/75/90% fewer MACs is that of the first step at or beyond the level.

Methods:
- this project (``compress_network(budget="macs")``): ``taylor`` (|activation x gradient|,
  each group's scores over their mean: the default), ``taylor+l2`` (over their L2 norm, Molchanov
  et al. 2017, the default until this benchmark), ``taylor-bn`` (Taylor-FO-BN),
  ``taylor+uniform`` (every group loses the same share), ``taylor-weight`` and
  ``taylor-weight+uniform`` (the Taylor criterion on the weights, Torch-Pruning's), ``bn-scale`` and
  ``bn-scale+uniform`` (the BatchNorm scales, network slimming's), ``l1`` and ``random``; and with the
  fine-tuning levers: ``taylor+kd`` and ``taylor+uniform+kd`` (distillation from the unpruned
  network, alpha 0.5, T 4), ``taylor+cosine`` (a cosine learn rate over each fine-tuning); with a
  floor under the global ranking: ``taylor+floor15`` and ``taylor+floor30`` (every layer keeps at least
  15% or 30% of its filters, ``min_filter_fraction``); and the other Taylor criteria with uniform
  allocation: ``taylor-bn+uniform`` and ``taylor-squared+uniform``; and with the MACs in the ranking:
  ``taylor+per-mac`` (score per MAC removed, ``per_learnable``) and ``taylor+flops`` (the
  FLOPs-regularised score of Molchanov et al. 2017, λ = 0.05 as in ``benchmarks/criteria.py``);
- Torch-Pruning (``MetaPruner``, each step the per-layer ratio that reaches the same MACs,
  found by bisection, the classifier ignored): ``tp-l1``, ``tp-l2`` (``MagnitudeImportance``),
  ``tp-taylor`` (``TaylorImportance``, gradients of the same scoring batches), ``tp-group``
  (``GroupMagnitudeImportance``), ``tp-bn`` (``BNScaleImportance``), ``tp-lamp`` and ``tp-fpgm``;
  and ranked over the whole network instead (``global_pruning=True``, the ratio found with the same
  importance): ``tp-l1+global``, ``tp-bn+global`` and ``tp-fpgm+global``.

Run: ``python -m benchmarks.criteria_2d [--seeds 0 1 2 3 4] [--methods ...] [--workers 1]
[--device cpu] [--name criteria_2d]``. Writes ``benchmarks/results/<name>.md`` (mean ± sd per
level, each method minus the default on the same seeds with its 95% interval, the accuracy at 90%
per seed, the target check), ``<name>_runs.csv`` (every step) and the figure
``docs/figures/<name>.png`` (accuracy against MACs reduction, per method). The bases are the same
for a seed in every run, so ``--combine NAME ... --name NEW`` reports earlier runs' ``<NAME>_runs.csv``
together, as one run of them all would (without their run times).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
import torch_pruning as tp
from scipy import stats
from torch import nn

from benchmarks import criteria
from benchmarks.criteria import accuracy_on_test, at_levels, fine_tuning
from benchmarks.publish import RESULTS, publish
from prune_core import Distillation, TrainingOptions, compress_network, train_network
from prune_core.channels import count_macs
from sweeps.builders.datasets import digits
from sweeps.builders.models import small_resnet

LEVELS = (0.5, 0.75, 0.9)
GOAL, INCREMENT = 0.92, 0.075
DISTILLATION = {"distillation": Distillation(alpha=0.5, temperature=4.0)}
# compress_network's keywords, and under "training" the TrainingOptions fields that differ
OURS: dict[str, dict[str, Any]] = {
    "taylor": {},
    "taylor+l2": {"normalization": "l2"},
    "taylor-bn": {"criterion": "taylor-bn"},
    "taylor+uniform": {"allocation": "uniform"},
    "l1": {"criterion": "l1"},
    "random": {"criterion": "random"},
    "taylor+kd": {"training": DISTILLATION},
    "taylor+uniform+kd": {"allocation": "uniform", "training": DISTILLATION},
    "taylor+cosine": {"training": {"learn_rate_schedule": "cosine"}},
    "taylor-weight": {"criterion": "taylor-weight"},
    "taylor-weight+uniform": {"criterion": "taylor-weight", "allocation": "uniform"},
    "bn-scale": {"criterion": "bn-scale"},
    "bn-scale+uniform": {"criterion": "bn-scale", "allocation": "uniform"},
    "taylor+floor15": {"min_filter_fraction": 0.15},
    "taylor+floor30": {"min_filter_fraction": 0.3},
    "taylor-bn+uniform": {"criterion": "taylor-bn", "allocation": "uniform"},
    "taylor-squared+uniform": {"criterion": "taylor-squared", "allocation": "uniform"},
    "taylor+per-mac": {"per_learnable": True},
    "taylor+flops": {"flops_weight": 0.05},
}
THEIRS = {
    "tp-l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "tp-l2": lambda: tp.importance.MagnitudeImportance(p=2),
    "tp-taylor": tp.importance.TaylorImportance,
    "tp-group": tp.importance.GroupMagnitudeImportance,
    "tp-bn": tp.importance.BNScaleImportance,
    "tp-lamp": tp.importance.LAMPImportance,
    "tp-fpgm": tp.importance.FPGMImportance,
    # ranked over the whole network, as this project's default allocation is
    "tp-l1+global": criteria.GlobalPruning(lambda: tp.importance.MagnitudeImportance(p=1)),
    "tp-bn+global": criteria.GlobalPruning(tp.importance.BNScaleImportance),
    "tp-fpgm+global": criteria.GlobalPruning(tp.importance.FPGMImportance),
}
DEFAULT = "taylor"
FIGURES = Path(__file__).parent.parent / "docs" / "figures"


def digits_28(seed: int = 0) -> dict[str, torch.Tensor]:
    """The digits, upscaled to 28x28 (bilinear), with a fixed 25% test split."""
    split = digits(validation_fraction=0.25, seed=seed)
    up = lambda x: F.interpolate(x, size=28, mode="bilinear", align_corners=False)  # noqa: E731
    return {
        "x_train": up(split["x_train"]),
        "y_train": split["y_train"],
        "x_test": up(split["x_val"]),
        "y_test": split["y_val"],
    }


def train_on_digits(network: Callable[[], nn.Module], data: dict, seed: int, device: str, **options: Any) -> nn.Module:
    """``network()`` built under ``seed`` and trained with Adam 1e-3, batch 64 (``options``: the other
    ``TrainingOptions`` fields, ``max_epochs`` among them)."""
    torch.manual_seed(seed)
    training = TrainingOptions(
        "adam", initial_learn_rate=1e-3, mini_batch_size=64, shuffle="every-epoch", seed=seed, device=device, **options
    )
    return train_network(network(), (data["x_train"], data["y_train"]), "crossentropy", training)[0]


def train_base(data: dict, seed: int, device: str) -> nn.Module:
    return train_on_digits(lambda: small_resnet(width=32), data, seed, device, max_epochs=15)


def run_ours(base: nn.Module, data: dict, seed: int, levers: dict, device: str) -> list[tuple[float, float]]:
    options = dataclasses.replace(fine_tuning(data, seed, device, epochs=1), **levers.get("training", {}))
    _, info = compress_network(
        base,
        data["x_train"],
        data["y_train"],
        "crossentropy",
        options,
        budget="macs",
        goal=GOAL,
        increment=INCREMENT,
        verbosity="off",
        **{k: v for k, v in levers.items() if k != "training"},
    )
    rows = info.pruning_history
    return list(zip(rows["macs_reduction"], rows["validation_accuracy"], strict=True))


def run_tp(base: nn.Module, data: dict, seed: int, importance_factory, device: str) -> list[tuple[float, float]]:
    """Torch-Pruning in exact 7.5% steps of the original MACs, to 92%."""
    fractions = [max(1 - GOAL, 1 - INCREMENT * step) for step in range(1, round(GOAL / INCREMENT) + 2)]
    return run_tp_macs(base, data, seed, importance_factory, device, fractions, epochs=1, stop_at=GOAL - 1e-3)


def run_tp_macs(
    base: nn.Module, data: dict, seed: int, importance_factory, device: str, fractions: list[float], **steps: Any
) -> list[tuple[float, float]]:
    """``criteria.run_tp`` to those fractions of the original MACs (``steps``: its other keywords)."""
    example = data["x_train"][:2].to(device)
    size = lambda model: count_macs(model, example)  # noqa: E731
    return criteria.run_tp(
        base, data, seed, importance_factory, device, fractions=fractions, size=size, rounds=16, **steps
    )


def run_job(seed: int, methods: list[str], device: str, threads: int) -> tuple[list, list]:
    """One seed: train the base, run every method on it; (records, steps)."""

    def run(method: str, base: nn.Module, data: dict) -> tuple[list, dict]:
        if method in OURS:
            return run_ours(base, data, seed, OURS[method], device), {}
        return run_tp(base, data, seed, THEIRS[method], device), {}

    return run_methods(seed, methods, device, threads, train_base, run, LEVELS)


def run_methods(
    seed: int, methods: list[str], device: str, threads: int, train, run, levels: tuple
) -> tuple[list, list]:
    """One seed of a digits benchmark: ``train(data, seed, device)`` the base, then ``run(method, base, data)`` ->
    (rows of reduction and accuracy, extra record fields) for every method; (records, steps)."""
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    data = digits_28()
    base = train(data, seed, device).cpu()
    unpruned = accuracy_on_test(base, data, "cpu")
    print(f"seed {seed}: unpruned test accuracy {unpruned:.1f}%", flush=True)
    records, steps = [], []
    for method in methods:
        started = time.perf_counter()
        rows, extra = run(method, base, data)
        record, run_steps = record_run(method, seed, unpruned, rows, time.perf_counter() - started, levels, **extra)
        records.append(record)
        steps += run_steps
    return records, steps


def record_run(
    method: str, seed: int, unpruned: float, rows: list, seconds: float, levels: tuple, **extra: Any
) -> tuple[dict, list[dict]]:
    """One run's record (the accuracy at each level, ``extra``) and steps (reduction and accuracy), printed."""
    at = at_levels(rows, levels, slack=1e-3)
    steps = [
        {"method": method, "seed": seed, "step": k, "macs_reduction": r, "accuracy": a} for k, (r, a) in enumerate(rows)
    ]
    print(
        f"  seed {seed} {method:<18} "
        + "  ".join(f"{k} {v:5.1f}" for k, v in at.items())
        + "".join(f"  {k} {v:.3f}" if isinstance(v, float) else f"  {k} {v}" for k, v in extra.items())
        + f"  ({seconds:.0f} s)",
        flush=True,
    )
    return {"method": method, "seed": seed, "unpruned": unpruned, **at, **extra, "seconds": seconds}, steps


def target_check(records: pd.DataFrame) -> list[str]:
    """The default against every Torch-Pruning importance at each level (each on the seeds both ran: results
    combined from several runs may give methods different seeds), against random on every seed, and within 3
    points of the best method at 90% on every seed."""
    levels = [f"{round(100 * level)}%" for level in LEVELS]
    theirs = [m for m in THEIRS if m in set(records["method"])]
    lines: list[str] = []
    if DEFAULT not in set(records["method"]):
        return lines
    for level in levels:
        by_seed = records.pivot(index="seed", columns="method", values=level)
        pairs = {m: by_seed[[DEFAULT, m]].dropna() for m in theirs}  # each peer with the default, on common seeds
        best_tp = max(pairs, key=lambda m: (pairs[m][m] - pairs[m][DEFAULT]).mean()) if pairs else None
        if best_tp is None:
            continue
        ours, their = pairs[best_tp][DEFAULT].mean(), pairs[best_tp][best_tp].mean()
        lines.append(
            f"- {level}: {DEFAULT} {ours:.1f} against the Torch-Pruning importance furthest above it ({best_tp} "
            f"{their:.1f}, on the same {len(pairs[best_tp])} seeds) -> {'met' if ours >= their else 'missed'}"
        )
    at90 = records.pivot(index="seed", columns="method", values="90%")
    if "random" in at90:
        lines.append(f"- above random at 90% on every seed: {bool((at90[DEFAULT] > at90['random']).all())}")
    gap = (at90.max(axis=1) - at90[DEFAULT]).max()
    lines.append(f"- within 3 points of the best method at 90% on every seed: {bool(gap <= 3)} (largest gap {gap:.1f})")
    return lines


def paired_differences(records: pd.DataFrame, levels: list[str], default: str = DEFAULT) -> pd.DataFrame:
    """Each method's accuracy minus the default's on the same seeds (the same base network), at each level:
    "mean [95% t-interval]", starred where the interval excludes 0 (a difference the seeds can tell apart), and how
    many seeds both ran."""
    cells: dict[str, dict[str, str]] = {}
    for level in levels:
        by_seed = records.pivot(index="seed", columns="method", values=level)
        for method in by_seed.columns.drop(default):
            diff = (by_seed[method] - by_seed[default]).dropna()
            if len(diff) < 2:
                continue
            half = stats.t.ppf(0.975, len(diff) - 1) * diff.std() / math.sqrt(len(diff))
            low, high = diff.mean() - half, diff.mean() + half
            star = " *" if low > 0 or high < 0 else ""
            cells.setdefault(method, {})[level] = f"{diff.mean():+.1f} [{low:+.1f}, {high:+.1f}]{star}"
            cells[method]["seeds"] = str(len(diff))
    return pd.DataFrame.from_dict(cells, orient="index").reindex(columns=[*levels, "seeds"]).fillna("-")


def write_figure(
    steps: pd.DataFrame,
    figure: Path,
    title: str = "Digits 28x28, residual CNN: accuracy after each prune + 1-epoch fine-tune",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    figure.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(10, 5))
    shown = steps.assign(fewer_macs=100 * steps["macs_reduction"])  # as measured: one line per method and seed
    sns.lineplot(
        data=shown,
        x="fewer_macs",
        y="accuracy",
        hue="method",
        style="method",
        units="seed",
        estimator=None,
        markers=True,
        ax=ax,
    )
    ax.set(
        xlabel="fewer MACs (%), measured after each step",
        ylabel="test accuracy (%), one line per seed",
        title=title,
    )
    ax.set_ylim(max(0, shown["accuracy"].min() - 5), 100)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(figure, dpi=110)
    plt.close(fig)


def mean_sd_table(records: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """ "mean ± sd" over seeds of each column, a row per method in the order run; "-" where a method has no value."""
    summary = records.groupby("method", sort=False)[columns].agg(["mean", "std"])
    return pd.DataFrame(
        {
            column: [
                "-" if pd.isna(m) else f"{m:.1f} ± {s:.1f}"
                for m, s in zip(summary[(column, "mean")], summary[(column, "std")], strict=True)
            ]
            for column in columns
        },
        index=summary.index,
    )


def write_results(records: pd.DataFrame, steps: pd.DataFrame, args, threads: int) -> None:
    RESULTS.mkdir(exist_ok=True)
    steps.to_csv(RESULTS / f"{args.name}_runs.csv", index=False, float_format="%.4f")
    levels = [f"{round(100 * level)}%" for level in LEVELS]
    table = mean_sd_table(records, levels)
    lines = [
        "# Criteria on a 2-D image task: test accuracy (%) at each MACs reduction",
        "",
        f"Digits upscaled to 28x28, `small_resnet(width=32)` (308 k parameters); seeds {sorted(set(records.seed))}; "
        f"torch {torch.__version__}, torch-pruning {tp.__version__}, {platform.processor() or platform.machine()}, "
        + (
            f"device {args.device}, {args.workers} parallel jobs of {threads} threads"
            if not getattr(args, "combine", None)
            else "combined from the runs " + ", ".join(f"`{name}`" for name in args.combine) + " (each says how it ran)"
        )
        + f". Produced by `python -m benchmarks.criteria_2d {' '.join(sys.argv[1:])}`.",
        "",
        "Targets: the default at or above every Torch-Pruning importance at each level, above random on every "
        "seed, and within 3 points of the best method at 90% on every seed.",
        "",
        *target_check(records),
        "",
        f"Unpruned accuracy per seed: {records.groupby('seed')['unpruned'].first().round(1).tolist()}",
        "",
        table.to_markdown(),
        "",
        f"Each method minus the default ({DEFAULT}) on the same seeds, mean and 95% interval over seeds "
        "(points of accuracy; * where the interval excludes 0, a difference these seeds can tell apart):",
        "",
        paired_differences(records, levels).reindex([m for m in table.index if m != DEFAULT]).to_markdown()
        if DEFAULT in set(records["method"])
        else "(the default was not run)",
        "",
        "Accuracy at 90% per seed:",
        "",
        records.pivot(index="seed", columns="method", values="90%").round(1).to_markdown(),
        "",
        f"Mean run time per method (s): {records.groupby('method', sort=False)['seconds'].mean().round(0).to_dict()}"
        if records["seconds"].notna().any()
        else "Run time: not recorded (results combined from earlier runs).",
        "",
        f"Figure: `docs/figures/{args.name}.png`.",
    ]
    publish(args.name, lines)
    write_figure(steps, FIGURES / f"{args.name}.png")


def run_seeds(
    doc: str, methods: list[str], seeds: list[int], name: str, run_job, write_results, levels: tuple | None = None
) -> None:
    """The command line of a per-seed benchmark (``--seeds --methods --device --workers --name``, these
    defaults): ``run_job(seed, methods, device, threads)`` per seed in parallel processes, and
    ``write_results(records, steps, args, threads)`` with the results so far after every seed. With ``levels``,
    also ``--combine NAME ...``: report earlier runs together instead (their ``<NAME>_runs.csv``, run time not
    recorded), as one run of them all would."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds)
    parser.add_argument("--methods", nargs="+", default=methods, choices=methods)
    parser.add_argument("--device", default="cpu", help="where training, fine-tuning and scoring run (cpu, cuda)")
    parser.add_argument("--workers", type=int, default=1, help="seeds run in parallel processes")
    parser.add_argument("--name", default=name, help="results file stem under benchmarks/results/")
    if levels is not None:
        parser.add_argument("--combine", nargs="+", metavar="NAME", help="earlier results to report together")
    args = parser.parse_args()
    if not args.name or Path(args.name).name != args.name or args.name in (".", ".."):
        parser.error(f"--name {args.name!r} is not a file stem: give a plain name such as {name!r} (no folders)")
    threads = max(1, (os.cpu_count() or 2) // max(1, args.workers))
    if getattr(args, "combine", None):
        if args.name in args.combine:
            raise SystemExit(f"--name {args.name!r} is one of --combine's files: name the combined results anew")
        steps = combined_steps(args.combine)
        write_results(records_of(steps, levels), steps, args, threads)
        return
    records, steps = [], []
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_job, seed, args.methods, args.device, threads) for seed in args.seeds]
        for future in as_completed(futures):
            job_records, job_steps = future.result()
            records += job_records
            steps += job_steps
            write_results(pd.DataFrame(records), pd.DataFrame(steps), args, threads)


def combined_steps(names: list[str]) -> pd.DataFrame:
    """The steps of earlier runs ``<name>_runs.csv``; a method and seed found in two of them is an error."""
    for name in names:
        if not (RESULTS / f"{name}_runs.csv").is_file():
            raise SystemExit(f"--combine: {name!r} has no {RESULTS / (name + '_runs.csv')}")
    steps = pd.concat([pd.read_csv(RESULTS / f"{name}_runs.csv") for name in names], ignore_index=True)
    twice = steps[steps.duplicated(["method", "seed", "step"])][["method", "seed"]].drop_duplicates()
    if len(twice):
        raise SystemExit(f"--combine: these methods and seeds are in more than one file: {twice.values.tolist()}")
    return steps


def records_of(steps: pd.DataFrame, levels: tuple) -> pd.DataFrame:
    """One record per method and seed from its steps, as ``record_run`` makes it (step 0: the unpruned network)."""
    records = []
    for (method, seed), run in steps.sort_values("step", kind="stable").groupby(["method", "seed"], sort=False):
        rows = list(zip(run["macs_reduction"], run["accuracy"], strict=True))
        at = at_levels(rows, levels, slack=1e-3)
        records.append({"method": method, "seed": seed, "unpruned": rows[0][1], **at, "seconds": math.nan})
    return pd.DataFrame(records)


def main() -> None:
    run_seeds(__doc__, [*OURS, *THEIRS], [0, 1, 2, 3, 4], "criteria_2d", run_job, write_results, LEVELS)


if __name__ == "__main__":
    main()
