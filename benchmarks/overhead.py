"""Where the time of ``compress_network`` goes, and what a scoring pass costs next to a training step.

Part 1: ``compress_network`` with validation after each fine-tuning and a checkpoint every
iteration, on (a) the MNIST-1D network of ``benchmarks/criteria.py`` (three Conv1d(64)+BN+ReLU
blocks, flatten, Linear), briefly trained, compressed to 90% in 5% steps with 2 fine-tuning
epochs per step, and (b) torchvision's ResNet-18 on random 32x32 images, 15% in 5% steps
with 1 epoch each. The time is split into scoring passes, fine-tuning (training steps only),
validation, and everything else: channel analysis and surgery, optimizer rebuilds,
checkpoints, copies of the last good network and the history bookkeeping. Target: everything
else < 2% of the total.

The built-in surgery check (``verify``): one 5% surgery timed with it on and off, the difference
as a share of a pruning iteration (target < 5%). Re-analysis: the graph update after that
surgery (``ChannelGraph.after_removal``, what ``compress_network`` runs) against a first
``ChannelGraph.build`` (target < 20%).

Part 2: on the same batch, a scoring pass (``TaylorPrunableNetwork.score_batch``: forward,
backward to the hooked activations only, scores reduced in the gradient hooks) against a
plain training step (forward, backward, Adam step), for the MNIST-1D network (batch 64) and
torchvision's ResNet-18 (batch 32, 64x64). Time: median of repeated runs; memory: peak bytes
allocated during the call, from the PyTorch profiler's allocation events. Target: scoring
<= 1.2x the training step in both. The same for a distilled training step
(``TrainingOptions(distillation=...)``: the teacher, a frozen copy in eval mode, runs forward
on the batch too, and the loss adds the tempered KL divergence): the cost of distillation.

Run: ``python -m benchmarks.overhead``. Writes ``benchmarks/results/overhead.md``.
"""

from __future__ import annotations

import copy
import platform
import statistics
import tempfile
import time
import warnings

import torch
import torchvision
from torch import nn
from torch.profiler import ProfilerActivity, profile

from benchmarks.criteria import LOSS, make_network
from benchmarks.publish import publish
from prune_core import (
    ChannelGraph,
    Distillation,
    TaylorPrunableNetwork,
    TrainingOptions,
    compress_network,
    remove_units,
    train_network,
)
from sweeps.builders.datasets import mnist1d_tensors


def time_split(
    model: nn.Module, train: tuple, validation: tuple, goal: float, epochs: int, verify: bool = True
) -> dict[str, float]:
    """Run ``compress_network`` (5% steps up to ``goal``, checkpoints every iteration) and split its time."""
    options = TrainingOptions(
        "adam",
        initial_learn_rate=5e-4,
        max_epochs=epochs,
        mini_batch_size=64,
        shuffle="every-epoch",
        metrics=["accuracy"],
        seed=0,
        validation_data=validation,
        validation_frequency=10_000,
    )
    with tempfile.TemporaryDirectory() as folder:
        _, info = compress_network(
            model,
            *train,
            "crossentropy",
            options,
            goal=goal,
            increment=0.05,
            checkpoint_path=folder,
            verbosity="off",
            verify=verify,
        )
    rows, seconds = info.pruning_history, info.seconds
    total = seconds["total"]
    validation_s = seconds.get("validation", 0.0) + seconds.get("initial_validation", 0.0)
    training = rows["fine_tuning_s"].sum() - seconds.get("validation", 0.0) - seconds.get("optimizer", 0.0)
    split = {
        "scoring passes": seconds["scoring"],
        "fine-tuning (training steps)": training,
        "validation": validation_s,
        "analysis + surgery": rows["surgery_s"].sum(),
        "optimizer rebuilds": seconds.get("optimizer", 0.0),
        "checkpoints": seconds["checkpoints"],
    }
    split["other bookkeeping (copies, history)"] = total - sum(split.values())
    split["total"] = total
    split["iterations"] = float(len(rows) - 1)
    return split


def split_table(title: str, split: dict[str, float]) -> list[str]:
    total = split["total"]
    lines = [f"### {title}", "", "| part | seconds | share |", "|---|---:|---:|"]
    for part, seconds in split.items():
        if part not in ("total", "iterations"):
            lines.append(f"| {part} | {seconds:.3f} | {100 * seconds / total:.2f}% |")
    other = total - split["scoring passes"] - split["fine-tuning (training steps)"] - split["validation"]
    return lines + [
        f"| **total** ({split['iterations']:.0f} pruning iterations) | {total:.2f} | 100% |",
        "",
        f"Everything but fine-tuning, validation and scoring: {other:.3f} s = "
        f"**{100 * other / total:.2f}%** of the total (target < 2%), a fixed "
        f"{1e3 * other / split['iterations']:.0f} ms per pruning iteration.",
        "",
    ]


def check_and_reanalysis(
    title: str, model: nn.Module, train: tuple, validation: tuple, goal: float, epochs: int
) -> tuple[dict[str, float], list[str]]:
    """The time split (check on), and a row: one surgery with and without the check, analysis and its update."""
    split = time_split(model, train, validation, goal, epochs)
    example = train[0][:2]
    graph = ChannelGraph.build(model, example)
    prunable = TaylorPrunableNetwork(model, example, criterion="l1")
    chosen = prunable.choose(learnables=int(0.05 * graph.total_learnables))

    def surgery(verify: bool):
        pruned = copy.deepcopy(model)
        started = time.perf_counter()
        remove_units(pruned, graph, chosen, verify=verify)
        return time.perf_counter() - started, pruned

    checked = statistics.median(surgery(True)[0] for _ in range(7))
    unchecked = statistics.median(surgery(False)[0] for _ in range(7))
    pruned = surgery(False)[1]
    first = median_seconds(lambda: ChannelGraph.build(model, example), 5)
    update = median_seconds(lambda: graph.after_removal(chosen, pruned), 5)
    iteration = split["total"] / split["iterations"]
    row = (
        f"| {title} | {1e3 * iteration:.0f} | {1e3 * (checked - unchecked):.1f} | "
        f"{100 * (checked - unchecked) / iteration:.2f}% | {1e3 * first:.1f} | {1e3 * update:.2f} | "
        f"{100 * update / first:.1f}% |"
    )
    return split, [row]


def peak_bytes(fn) -> int:
    """Peak of the bytes allocated (and not yet freed) while ``fn`` runs, from profiler events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    level = peak = 0
    for _, nbytes in events:
        level += nbytes
        peak = max(peak, level)
    return peak


def median_seconds(fn, repeat: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def step_versus_scoring(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeat: int) -> dict:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        LOSS((model(x),), (y,)).backward()
        optimizer.step()

    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    distillation = Distillation(alpha=0.5, temperature=4.0)

    def distilled_step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        outputs = model(x)
        with torch.no_grad():
            taught = teacher(x)
        distillation.loss(outputs, taught, LOSS((outputs,), (y,))).backward()
        optimizer.step()

    prunable = TaylorPrunableNetwork(model, x[:2])

    def scoring_pass():
        model.eval()
        prunable.score_batch((x,), (y,), LOSS)

    train_step()  # Adam state exists, as in any step after the first
    step_s, score_s = median_seconds(train_step, repeat), median_seconds(scoring_pass, repeat)
    distilled_s = median_seconds(distilled_step, repeat)
    step_b, score_b = peak_bytes(train_step), peak_bytes(scoring_pass)
    return {
        "network": name,
        "batch": len(x),
        "train step (ms)": 1e3 * step_s,
        "scoring pass (ms)": 1e3 * score_s,
        "time ratio": score_s / step_s,
        "train step peak (MiB)": step_b / 2**20,
        "scoring peak (MiB)": score_b / 2**20,
        "memory ratio": score_b / step_b,
        "distilled step (ms)": 1e3 * distilled_s,
        "distillation ratio": distilled_s / step_s,
    }


def main() -> None:
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    data = mnist1d_tensors(seed=42)
    torch.manual_seed(0)
    small = make_network()
    train_network(
        small,
        (data["x_train"], data["y_train"]),
        "crossentropy",
        TrainingOptions("adam", max_epochs=5, mini_batch_size=64),
    )
    images = torch.randn(1280, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (1280,), generator=torch.Generator().manual_seed(1))
    lines = [
        "# Where compress_network's time goes",
        "",
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 2 threads. "
        "Produced by `python -m benchmarks.overhead`. Adam fine-tuning, 5% steps, validation after "
        "every fine-tuning, a checkpoint every iteration.",
        "",
    ]
    small_title = "MNIST-1D network (3x Conv1d(64), 67k learnables), 4000 examples, 90% in 5% steps, 2 epochs each"
    small_split, small_rows = check_and_reanalysis(
        "MNIST-1D network", small, (data["x_train"], data["y_train"]), (data["x_test"], data["y_test"]), 0.9, 2
    )
    resnet_title = "ResNet-18 (11.2M learnables), 1280 random 3x32x32 images, 15% in 5% steps, 1 epoch each"
    resnet_split, resnet_rows = check_and_reanalysis(
        "ResNet-18",
        torchvision.models.resnet18(num_classes=10),
        (images[:1024], labels[:1024]),
        (images[1024:], labels[1024:]),
        0.15,
        1,
    )
    lines += split_table(small_title, small_split) + split_table(resnet_title, resnet_split)
    lines += [
        "## The surgery check and re-analysis (targets: check < 5% of an iteration, re-analysis < 20% of the first)",
        "",
        "One 5% surgery (L1 choice) with the check on and off, median of 7; the graph update after "
        "it (`ChannelGraph.after_removal`, what `compress_network` runs) against a first analysis, median of 5.",
        "",
        "| network | pruning iteration (ms) | the check (ms) | check / iteration | first analysis (ms) | "
        "graph update after the surgery (ms) | update / first analysis |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *small_rows,
        *resnet_rows,
        "",
    ]
    torch.manual_seed(0)
    cases = [
        step_versus_scoring(
            "MNIST-1D 3x Conv1d(64)", make_network(), data["x_train"][:64], data["y_train"][:64], repeat=50
        ),
        step_versus_scoring(
            "ResNet-18 (64x64)",
            torchvision.models.resnet18(num_classes=10),
            torch.randn(32, 3, 64, 64),
            torch.randint(0, 10, (32,)),
            repeat=10,
        ),
    ]
    lines += [
        "## A scoring pass next to a training step on the same batch (target: both ratios <= 1.2)",
        "",
        "| network | batch | train step (ms) | scoring pass (ms) | time ratio | train step peak (MiB) "
        "| scoring peak (MiB) | memory ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        lines.append(
            f"| {c['network']} | {c['batch']} | {c['train step (ms)']:.2f} | {c['scoring pass (ms)']:.2f} "
            f"| {c['time ratio']:.2f} | {c['train step peak (MiB)']:.1f} | {c['scoring peak (MiB)']:.1f} "
            f"| {c['memory ratio']:.2f} |"
        )
    lines += [
        "",
        "## What distillation costs: a distilled training step next to a plain one (same batch)",
        "",
        "| network | batch | train step (ms) | distilled step (ms) | ratio |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {c['network']} | {c['batch']} | {c['train step (ms)']:.2f} | {c['distilled step (ms)']:.2f} "
            f"| {c['distillation ratio']:.2f} |"
            for c in cases
        ),
    ]
    publish("overhead", lines)


if __name__ == "__main__":
    main()
