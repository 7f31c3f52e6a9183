"""Channel analysis and surgery on torchvision's CNNs, side by side with Torch-Pruning.

For each model (224x224 input, 1000 classes, random weights): the time to analyse the
network (this project: ``ChannelGraph.build``; Torch-Pruning: ``DependencyGraph.build_dependency``),
the time to remove 30% of the channels of every group (this project: ``remove_units`` on the
first 30% of each group's units; Torch-Pruning: ``MetaPruner`` with L1 importance, ratio 0.3,
``step()``), the parameters before/after, and whether the pruned network still runs and
keeps its output shape. Times are the best of ``--repeat`` runs on this machine's CPU; the two
analyses run in turn (ours, theirs, ours, ...), so a change in the machine's speed during the run
hits both alike, and ``analysis_ratio`` is ours over theirs. Surgeries are the best of 3, each on a fresh
copy (Torch-Pruning's ``MetaPruner`` step includes the listing of the ignored layers it is given).

Run: ``python -m benchmarks.graph_zoo`` (needs the ``bench`` extra: torchvision, torch-pruning).
Writes ``benchmarks/results/graph_zoo.csv`` and ``graph_zoo.md``.
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import time
import warnings
from pathlib import Path

import pandas as pd
import torch
import torch_pruning as tp
import torchvision
from torch import nn
from torchvision import models

from prune_core import ChannelGraph, remove_units

MODELS = [
    "resnet50",
    "vgg16",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "densenet121",
    "resnext50_32x4d",
    "efficientnet_b0",
    "regnet_y_400mf",
    "googlenet",
    "squeezenet1_1",
    "shufflenet_v2_x1_0",
    "mnasnet1_0",
    "convnext_tiny",
]


def analysis_times(model: nn.Module, x: torch.Tensor, repeat: int) -> dict[str, float]:
    """The best of ``repeat`` analyses by this project ("ours") and by Torch-Pruning ("tp"), run in turn; a peer
    that raises is left out (its error is reported by ``torch_pruning``)."""
    tools = {
        "ours": lambda: ChannelGraph.build(model, x),
        "tp": lambda: tp.DependencyGraph().build_dependency(model, example_inputs=x),
    }
    best = dict.fromkeys(tools, math.inf)
    for _ in range(repeat):
        for tool in [tool for tool in tools if tool in best]:
            start = time.perf_counter()
            try:
                tools[tool]()
            except Exception:
                if tool == "ours":
                    raise
                del best[tool]
                continue
            best[tool] = min(best[tool], time.perf_counter() - start)
    return best


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def runs(model: nn.Module, x: torch.Tensor, shape) -> bool:
    try:
        with torch.no_grad():
            out = model.eval()(x)
        return tuple(out.shape) == tuple(shape)
    except Exception:
        return False


def ours(model: nn.Module, x: torch.Tensor) -> dict:
    graph = ChannelGraph.build(model, x)
    groups: dict[tuple, list[int]] = {}
    for unit in graph.removable_units():
        groups.setdefault((unit.members, unit.producers), []).append(unit.id)
    chosen = graph.greedy_removal([uid for ids in groups.values() for uid in ids[: int(0.3 * len(ids))]])
    return best_surgery(model, lambda pruned: remove_units(pruned, graph, chosen))


def best_surgery(model: nn.Module, prune, repeat: int = 3) -> dict:
    """The best of ``repeat`` timings of ``prune`` on fresh copies of ``model``, and the last pruned copy."""
    best, pruned = float("inf"), model
    for _ in range(repeat):
        pruned = copy.deepcopy(model)
        start = time.perf_counter()
        prune(pruned)
        best = min(best, time.perf_counter() - start)
    return {"surgery_s": best, "pruned": pruned}


def torch_pruning(model: nn.Module, x: torch.Tensor) -> dict:
    classes = 1000

    def prune(pruned: nn.Module) -> None:
        ignored = [
            m
            for m in pruned.modules()
            if getattr(m, "out_features", None) == classes or getattr(m, "out_channels", None) == classes
        ]
        pruner = tp.pruner.MetaPruner(
            pruned, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.3, ignored_layers=ignored
        )
        pruner.step()

    return best_surgery(model, prune)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    x = torch.randn(1, 3, 224, 224)
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        kwargs = {"init_weights": True, "aux_logits": False} if name == "googlenet" else {}
        model = getattr(models, name)(weights=None, **kwargs).eval()
        with torch.no_grad():
            shape = model(x).shape
        row = {"model": name, "params": params(model)}
        analysis = analysis_times(model, x, args.repeat)
        for tool, run in (("ours", ours), ("tp", torch_pruning)):
            try:
                result = run(model, x)
                row |= {
                    f"{tool}_analysis_s": round(analysis[tool], 3),
                    f"{tool}_surgery_s": round(result["surgery_s"], 3),
                    f"{tool}_params_after": params(result["pruned"]),
                    f"{tool}_runs": runs(result["pruned"], x, shape),
                }
            except Exception as exc:  # a peer failing on a model is a result, not a crash
                row |= {
                    f"{tool}_analysis_s": None,
                    f"{tool}_surgery_s": None,
                    f"{tool}_params_after": None,
                    f"{tool}_runs": f"error: {type(exc).__name__}",
                }
        if row["tp_analysis_s"] is not None:
            row["analysis_ratio"] = round(analysis["ours"] / analysis["tp"], 2)
        print(row, flush=True)
        rows.append(row)
    table = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "graph_zoo.csv", index=False)
    header = (
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, torch-pruning {tp.__version__}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, input 1x3x224x224, "
        f"best of {args.repeat}"
    )
    (out / "graph_zoo.md").write_text(f"# graph_zoo\n\n{header}\n\n```\n{table.to_string(index=False)}\n```\n")
    print(header)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
