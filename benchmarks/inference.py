"""CPU inference latency of pruned networks, PyTorch and onnxruntime side by side, with their MACs.

Networks: the MNIST-1D network of ``benchmarks/criteria.py`` pruned by ``compress_network``
(Taylor, 5% steps, 1 fine-tuning epoch each) and saved at the first checkpoints at or
beyond 50%, 70% and 90% fewer learnables (reloaded with ``load_pruned``, as a user would);
and torchvision's ResNet-18 (10 classes, 3x64x64 input) with the least-L1 half of every
prunable group's filters removed by ``remove_units``; and ResNet-18 cut to at least 60% fewer MACs by
L1 in global steps of 5% with ``round_to`` 1, 8 and 32 (every pruned layer keeps a multiple of that
many channels), to show whether latency follows MACs with and without it. Each network is also exported to ONNX
(``sweeps.deployment.onnx_export``: the dynamo exporter, checked against PyTorch within 1e-4) and run with
onnxruntime. Latency (``sweeps.deployment.latency``): the median of timed calls after 10 untimed ones, at
batch 1 and 64, 2 threads for both runtimes (PyTorch in eval mode under ``torch.inference_mode``),
timed until the spread (interquartile range over the median) is under 10% or 3 s have passed;
the largest spread of each row is reported. MACs from ``prune_core.channels.count_macs``
(``FlopCounterMode``, FLOPs / 2) for one example.

Run: ``python -m benchmarks.inference``. Writes ``benchmarks/results/inference.md``.
"""

from __future__ import annotations

import copy
import platform
import tempfile
import warnings
from pathlib import Path

import onnxruntime
import torch
import torchvision
from torch import nn

from benchmarks.criteria import make_network
from benchmarks.publish import publish
from prune_core import TaylorPrunableNetwork, TrainingOptions, compress_network, load_pruned, remove_units
from prune_core.channels import count_macs
from sweeps.builders.datasets import mnist1d_tensors
from sweeps.deployment.latency import onnx_latency, torch_latency
from sweeps.deployment.onnx_export import export_onnx, session

THREADS = 2


def mnist1d_levels(data: dict) -> list[tuple[str, nn.Module]]:
    torch.manual_seed(0)
    options = TrainingOptions("adam", initial_learn_rate=5e-4, max_epochs=1, mini_batch_size=64, seed=0)
    out = [("unpruned", make_network())]
    with tempfile.TemporaryDirectory() as folder:
        _, info = compress_network(
            out[0][1],
            data["x_train"],
            data["y_train"],
            "crossentropy",
            options,
            goal=0.9,
            increment=0.05,
            checkpoint_path=folder,
            verbosity="off",
        )
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


def resnet_rounded() -> list[tuple[str, nn.Module]]:
    """ResNet-18 cut to at least 60% fewer MACs by L1 in global steps of 5%, with and without ``round_to``."""
    out = []
    for round_to in (1, 8, 32):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=10)
        if not out:
            out.append(("unpruned", copy.deepcopy(model)))
        prunable = TaylorPrunableNetwork(
            model, torch.randn(1, 3, 64, 64), criterion="l1", budget="macs", round_to=round_to
        )
        total = count_macs(model, torch.randn(1, 3, 64, 64))
        while count_macs(model, torch.randn(1, 3, 64, 64)) > 0.4 * total:
            prunable.remove(prunable.choose(learnables=int(0.05 * total)))
        widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
        odd = sum(w % 8 != 0 for w in widths)
        out.append((f"L1 global, round_to={round_to} ({odd} of {len(widths)} convolutions not a multiple of 8)", model))
    return out


def measured(model: nn.Module, example: torch.Tensor, folder: Path) -> dict:
    """Latency at batch 1 and 64 on PyTorch and onnxruntime, with the largest spread."""
    runner = session(export_onnx(model, example, folder / "model.onnx").path, THREADS)
    timings = {
        f"{runtime} b{batch}": (
            torch_latency(model, example, batch, THREADS)
            if runtime == "torch"
            else onnx_latency(runner, example, batch)
        )
        for batch in (1, 64)
        for runtime in ("torch", "ort")
    }
    return {key: t.median_ms for key, t in timings.items()} | {"spread": max(t.spread for t in timings.values())}


def main() -> None:
    torch.set_num_threads(THREADS)
    warnings.filterwarnings("ignore")
    data = mnist1d_tensors(seed=42)
    lines = [
        "# Inference latency of pruned networks (CPU): PyTorch and onnxruntime",
        "",
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"{platform.processor() or platform.machine()}, {THREADS} threads, median latency (ms) and speed-up "
        "over the unpruned network on the same runtime. Produced by `python -m benchmarks.inference`.",
        "",
        "| network | variant | learnables | MACs / example | MACs cut | torch b1 | ort b1 | torch b64 | "
        "ort b64 | largest spread |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, variants, shape in (
        ("MNIST-1D 3x Conv1d(64)", mnist1d_levels(data), (1, 40)),
        ("ResNet-18, 64x64", resnet_half(), (3, 64, 64)),
        ("ResNet-18, 64x64", resnet_rounded(), (3, 64, 64)),
    ):
        base = None
        for variant, model in variants:
            example = torch.randn(2, *shape)
            with tempfile.TemporaryDirectory() as folder:
                row = {
                    "learnables": sum(p.numel() for p in model.parameters()),
                    "macs": count_macs(model, example),
                    **measured(model, example, Path(folder)),
                }
            base = base or row
            times = " | ".join(
                f"{row[k]:.3f} ({base[k] / row[k]:.2f}x)" for k in ("torch b1", "ort b1", "torch b64", "ort b64")
            )
            lines.append(
                f"| {name} | {variant} | {row['learnables']:,} | {row['macs']:,.0f} | "
                f"{100 * (1 - row['macs'] / base['macs']):.0f}% | {times} | {100 * row['spread']:.0f}% |"
            )
            print(lines[-1], flush=True)
    publish("inference", lines)


if __name__ == "__main__":
    main()
