"""Pruning a small vision transformer: heads, embedding width and MLP units together, side by side with
MLP-only pruning and Torch-Pruning's ViT pruner, at 50% and 75% fewer MACs.

Setup (the same for every method): scikit-learn's handwritten digits (1797 real images, shipped with the
package) upscaled to 28x28, 75% train / 25% test (``criteria_2d.digits_28``). The network is timm's
``VisionTransformer`` on 28x28 single-channel images: patches of 7x7 (16 tokens and a class token),
width 96, 4 blocks of 6 heads (head dim 16) and MLPs of 384 hidden units; 455 k parameters, 7.8 M MACs
per image (the attention products included: ``count_macs`` counts every operation). It is trained once
per seed (Adam 1e-3 with a cosine schedule, 40 epochs) and shared by all methods. Pruning removes 12.5%
of the original MACs per step up to 75%; after every step the network is fine-tuned for 2 epochs
(Adam 5e-4, batch 64) and its test accuracy recorded. The accuracy at 50/75% is that of the first step
at or beyond the level.

Methods:
- this project (``compress_network(budget="macs")``, everything it finds: whole heads, the embedding
  width shared by the residual stream, MLP hidden units): ``taylor`` (the default), ``taylor+uniform``
  (every group loses the same share), ``l1``, ``random``; and ``taylor mlp-only`` (``layer_names`` the
  MLPs' ``fc1``: the hidden units alone, what the engine pruned before heads and width were units; it
  cannot reach 75%, and its table says how far it got); ``taylor head-dims`` (``attention_units="head_dims"``:
  the same dims of every head's q, k and v instead of whole heads, every head kept);
- Torch-Pruning (``MetaPruner`` with its ViT settings, ``criteria.tp_attention_settings``: whole heads at
  the pruning ratio, the embedding width and the MLPs at the same ratio, the classifier ignored; each
  step the ratio that reaches the same MACs, found by bisection): ``tp-taylor`` (``TaylorImportance``,
  gradients of the same scoring batches), ``tp-l1`` and ``tp-l2`` (``MagnitudeImportance``). It removes
  ceil(ratio x heads) heads of every attention per step, at least one, so in these steps it is down to one
  head per block early; ``tp-taylor one-shot`` runs it as its ViT example does instead: the unpruned
  network pruned once to each level, then fine-tuned for as many epochs as the stepwise runs have had by
  then (8 at 50%, 12 at 75%); ``tp-taylor head-dims`` prunes head dims instead of heads
  (``prune_head_dims=True``), stepwise as ``tp-taylor``.

Run: ``python -m benchmarks.criteria_vit [--seeds 0 1 2] [--methods ...] [--workers 1] [--device cpu]
[--name criteria_vit]``. Writes ``benchmarks/results/<name>.md`` (mean ± sd per level, the deepest
reduction reached, what each method kept at its last step, the target check), ``<name>_runs.csv`` (every
step) and the figure ``docs/figures/<name>.png``.
"""

from __future__ import annotations

import platform
import sys
from typing import Any

import pandas as pd
import torch
import torch_pruning as tp
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from benchmarks.criteria import accuracy_on_test, fine_tuning
from benchmarks.criteria_2d import (
    FIGURES,
    mean_sd_table,
    run_methods,
    run_seeds,
    run_tp_macs,
    train_on_digits,
    write_figure,
)
from benchmarks.publish import RESULTS, publish
from prune_core import compress_network

LEVELS = (0.5, 0.75)
GOAL, INCREMENT = 0.75, 0.125
DEPTH = 4
FINE_TUNE_EPOCHS = 2
MLP_ONLY = "taylor mlp-only"
OURS: dict[str, dict[str, Any]] = {
    "taylor": {},
    "taylor+uniform": {"allocation": "uniform"},
    "l1": {"criterion": "l1"},
    "random": {"criterion": "random"},
    MLP_ONLY: {"layer_names": [f"blocks.{i}.mlp.fc1" for i in range(DEPTH)]},
    "taylor head-dims": {"attention_units": "head_dims"},
}
THEIRS = {
    "tp-taylor": tp.importance.TaylorImportance,
    "tp-l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "tp-l2": lambda: tp.importance.MagnitudeImportance(p=2),
}
# Torch-Pruning removes ceil(ratio x heads) heads of every attention per step, at least one, so in small
# steps it is down to one head per block early; its ViT example prunes once, then fine-tunes.
ONE_SHOT = {"tp-taylor one-shot": tp.importance.TaylorImportance}
HEAD_DIMS = {"tp-taylor head-dims": tp.importance.TaylorImportance}
DEFAULT = "taylor"


def small_vit() -> VisionTransformer:
    """The benchmark's network: 28x28 digits in 7x7 patches, width 96, 4 blocks of 6 heads, MLP ratio 4."""
    return VisionTransformer(
        img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=96, depth=DEPTH, num_heads=6, mlp_ratio=4.0
    )


def train_base(data: dict, seed: int, device: str) -> nn.Module:
    return train_on_digits(small_vit, data, seed, device, max_epochs=40, learn_rate_schedule="cosine")


def kept(model: nn.Module) -> str:
    """What a pruned ViT kept: heads (and their dim) and MLP hidden units per block, and the embedding width."""
    blocks = list(model.blocks)
    heads = "/".join(f"{b.attn.num_heads}x{b.attn.qkv.out_features // (3 * b.attn.num_heads)}" for b in blocks)
    hidden = "/".join(str(b.mlp.fc1.out_features) for b in blocks)
    return f"heads {heads}, width {model.cls_token.shape[-1]}, MLP {hidden}"


def run_ours(base: nn.Module, data: dict, seed: int, levers: dict, device: str) -> tuple[list, str]:
    pruned, info = compress_network(
        base,
        data["x_train"],
        data["y_train"],
        "crossentropy",
        fine_tuning(data, seed, device, epochs=FINE_TUNE_EPOCHS),
        budget="macs",
        goal=GOAL,
        increment=INCREMENT,
        verbosity="off",
        **levers,
    )
    rows = info.pruning_history
    return list(zip(rows["macs_reduction"], rows["validation_accuracy"], strict=True)), kept(pruned)


def run_tp(
    base: nn.Module, data: dict, seed: int, importance_factory, device: str, attention_units: str = "heads"
) -> tuple[list, str]:
    """Torch-Pruning in exact 12.5% steps of the original MACs, to 75% (whole heads, or head dims)."""
    fractions = [1 - INCREMENT * step for step in range(1, round(GOAL / INCREMENT) + 1)]
    last: list[str] = []
    rows = run_tp_macs(
        base,
        data,
        seed,
        importance_factory,
        device,
        fractions,
        epochs=FINE_TUNE_EPOCHS,
        stop_at=GOAL - 1e-3,
        finished=lambda model: last.append(kept(model)),
        attention_units=attention_units,
    )
    return rows, last[0]


def run_tp_one_shot(base: nn.Module, data: dict, seed: int, importance_factory, device: str) -> tuple[list, str]:
    """Torch-Pruning as its ViT example runs it: the unpruned network pruned once to each level, then fine-tuned
    for as many epochs as the stepwise runs have had by then."""
    rows, last = [(0.0, accuracy_on_test(base, data, device))], []
    for level in LEVELS:
        epochs = FINE_TUNE_EPOCHS * round(level / INCREMENT)
        finished = lambda model: last.append(kept(model))  # noqa: E731
        rows += run_tp_macs(
            base, data, seed, importance_factory, device, [1 - level], epochs=epochs, finished=finished
        )[1:]
    return rows, last[-1]


def run_job(seed: int, methods: list[str], device: str, threads: int) -> tuple[list, list]:
    """One seed: train the base, run every method on it; (records, steps)."""

    def run(method: str, base: nn.Module, data: dict) -> tuple[list, dict]:
        if method in OURS:
            rows, structure = run_ours(base, data, seed, OURS[method], device)
        elif method in ONE_SHOT:
            rows, structure = run_tp_one_shot(base, data, seed, ONE_SHOT[method], device)
        elif method in HEAD_DIMS:
            rows, structure = run_tp(base, data, seed, HEAD_DIMS[method], device, "head_dims")
        else:
            rows, structure = run_tp(base, data, seed, THEIRS[method], device)
        return rows, {"deepest": max(reduction for reduction, _ in rows), "kept": structure}

    return run_methods(seed, methods, device, threads, train_base, run, LEVELS)


def target_check(records: pd.DataFrame) -> list[str]:
    """The default against the best Torch-Pruning importance and against MLP-only pruning, and head-dim pruning
    against Torch-Pruning's, per level."""
    levels = [f"{round(100 * level)}%" for level in LEVELS]
    means = records.groupby("method")[levels].mean()
    if DEFAULT not in means.index:
        return []
    theirs = [m for m in [*THEIRS, *ONE_SHOT, *HEAD_DIMS] if m in means.index]
    lines = []
    for level in levels:
        ours = means.loc[DEFAULT, level]
        if theirs:
            best = means.loc[theirs, level].idxmax()
            verdict = "met" if ours >= means.loc[best, level] else "missed"
            lines.append(
                f"- {level}: {DEFAULT} {ours:.1f} against the best Torch-Pruning importance "
                f"({best} {means.loc[best, level]:.1f}) -> {verdict}"
            )
        if MLP_ONLY in means.index:
            mlp = means.loc[MLP_ONLY, level]
            lines.append(
                f"- {level}: {DEFAULT} {ours:.1f} against {MLP_ONLY} "
                + ("(cannot reach this level)" if pd.isna(mlp) else f"{mlp:.1f}")
            )
        if {"taylor head-dims", *HEAD_DIMS} <= set(means.index):
            mine, peer = means.loc["taylor head-dims", level], means.loc["tp-taylor head-dims", level]
            lines.append(
                f"- {level}: taylor head-dims {mine:.1f} against tp-taylor head-dims {peer:.1f} -> "
                + ("met" if mine >= peer else "missed")
            )
    return lines


def write_results(records: pd.DataFrame, steps: pd.DataFrame, args, threads: int) -> None:
    RESULTS.mkdir(exist_ok=True)
    steps.to_csv(RESULTS / f"{args.name}_runs.csv", index=False, float_format="%.4f")
    levels = [f"{round(100 * level)}%" for level in LEVELS]
    by_method = records.groupby("method", sort=False)
    table = mean_sd_table(records, levels)
    table["deepest reduction reached"] = by_method["deepest"].min().map(lambda r: f"{100 * r:.1f}%")
    first_seed = records[records.seed == records.seed.min()].set_index("method")["kept"]
    lines = [
        "# A small ViT on the digits: test accuracy (%) at each MACs reduction",
        "",
        f"Digits upscaled to 28x28, timm `VisionTransformer` (7x7 patches, width 96, {DEPTH} blocks of 6 heads, "
        f"MLP 384; 455 k parameters); seeds {sorted(set(records.seed))}; torch {torch.__version__}, "
        f"torch-pruning {tp.__version__}, {platform.processor() or platform.machine()}, device {args.device}, "
        f"{args.workers} parallel jobs of {threads} threads. Produced by "
        f"`python -m benchmarks.criteria_vit {' '.join(sys.argv[1:])}`.",
        "",
        "Targets: the default at or above the best Torch-Pruning importance at each level; more reachable, and "
        "more accurate, than pruning the MLPs alone.",
        "",
        *target_check(records),
        "",
        f"Unpruned accuracy per seed: {records.groupby('seed')['unpruned'].first().round(1).tolist()}",
        "",
        "'-': the method cannot remove that much (the deepest reduction is the smallest over seeds).",
        "",
        table.to_markdown(),
        "",
        "Accuracy at 75% per seed:",
        "",
        records.pivot(index="seed", columns="method", values="75%").round(1).to_markdown(),
        "",
        f"What each method kept at its last step (seed {records.seed.min()}):",
        "",
        first_seed.to_frame().to_markdown(),
        "",
        f"Mean run time per method (s): {by_method['seconds'].mean().round(0).to_dict()}",
        "",
        f"Figure: `docs/figures/{args.name}.png`.",
    ]
    publish(args.name, lines)
    title = f"Digits 28x28, small ViT: accuracy after each prune + {FINE_TUNE_EPOCHS}-epoch fine-tune"
    write_figure(steps, FIGURES / f"{args.name}.png", title)


def main() -> None:
    run_seeds(__doc__, [*OURS, *THEIRS, *ONE_SHOT, *HEAD_DIMS], [0, 1, 2], "criteria_vit", run_job, write_results)


if __name__ == "__main__":
    main()
