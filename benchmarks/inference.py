"""CPU inference latency of pruned networks next to their MACs and learnables reduction.

Networks: the MNIST-1D network of ``benchmarks/criteria.py`` pruned by ``compress_network``
(Taylor, 5% steps, 1 fine-tuning epoch each) and saved at the first checkpoints at or
beyond 50%, 70% and 90% fewer learnables (reloaded with ``load_pruned``, as a user would);
and torchvision's ResNet-18 (10 classes, 3x64x64 input) with the least-L1 half of every
prunable group's filters removed by ``remove_units``. Latency: median of repeated forward
passes in eval mode under ``torch.inference_mode``, batch 1 and 64, 2 threads. MACs from
``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2) for one example.

Run: ``python -m benchmarks.inference``. Writes ``benchmarks/results/inference.md``.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.criteria import make_network
from benchmarks.publish import publish
from prune_core import TaylorPrunableNetwork, TrainingOptions, compress_network, load_pruned, remove_units
from sweeps.datasets import mnist1d_tensors


def macs(model: nn.Module, example: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model.eval()(example)
    return counter.get_total_flops() // 2


def latency_ms(model: nn.Module, x: torch.Tensor, budget_s: float = 1.5) -> float:
    model.eval()
    times = []
    with torch.inference_mode():
        for _ in range(5):
            model(x)
        deadline = time.perf_counter() + budget_s
        while time.perf_counter() < deadline or len(times) < 20:
            started = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def mnist1d_levels(data: dict) -> list[tuple[str, nn.Module]]:
    torch.manual_seed(0)
    options = TrainingOptions("adam", initial_learn_rate=5e-4, max_epochs=1, mini_batch_size=64, seed=0)
    out = [("unpruned", make_network())]
    with tempfile.TemporaryDirectory() as folder:
        _, info = compress_network(out[0][1], data["x_train"], data["y_train"], "crossentropy", options, goal=0.9,
                                   increment=0.05, checkpoint_path=folder, verbosity="off")
        rows = info.pruning_history
        for level in (0.5, 0.7, 0.9):
            iteration = int(rows.loc[rows["reduction"] >= level, "iteration"].iloc[0])
            model = load_pruned(Path(folder) / f"pruned_iteration_{iteration:03d}.pt", make_network)
            out.append((f"Taylor, {100 * rows['reduction'].iloc[iteration]:.0f}% fewer learnables", model))
    return out


def resnet_half() -> list[tuple[str, nn.Module]]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    unpruned = torchvision.models.resnet18(num_classes=10)
    unpruned.load_state_dict(model.state_dict())
    example = torch.randn(1, 3, 64, 64)
    prunable = TaylorPrunableNetwork(model, example, criterion="l1")
    graph, scores = prunable.graph, prunable.scores()
    groups: dict[tuple[str, ...], list[int]] = {}
    for unit in graph.removable_units():
        groups.setdefault(unit.producers, []).append(unit.id)
    chosen = [uid for ids in groups.values() for uid in sorted(ids, key=lambda u: scores[u])[: len(ids) // 2]]
    remove_units(model, graph, graph.greedy_removal(chosen))
    return [("unpruned", unpruned), ("L1, half of every group's filters", model)]


def main() -> None:
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    data = mnist1d_tensors(seed=42)
    lines = ["# Inference latency of pruned networks (CPU)", "",
             f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 2 threads, "
             "median latency. Produced by `python -m benchmarks.inference`.", "",
             "| network | variant | learnables | MACs / example | MACs cut | batch 1 (ms) | speed-up | "
             "batch 64 (ms) | speed-up |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, variants, shape in (("MNIST-1D 3x Conv1d(64)", mnist1d_levels(data), (1, 40)),
                                  ("ResNet-18, 64x64", resnet_half(), (3, 64, 64))):
        base = None
        for variant, model in variants:
            one, many = torch.randn(1, *shape), torch.randn(64, *shape)
            row = (sum(p.numel() for p in model.parameters()), macs(model, one), latency_ms(model, one),
                   latency_ms(model, many))
            base = base or row
            lines.append(f"| {name} | {variant} | {row[0]:,} | {row[1]:,} | {100 * (1 - row[1] / base[1]):.0f}% | "
                         f"{row[2]:.3f} | {base[2] / row[2]:.2f}x | {row[3]:.2f} | {base[3] / row[3]:.2f}x |")
            print(lines[-1], flush=True)
    publish("inference", lines)


if __name__ == "__main__":
    main()
