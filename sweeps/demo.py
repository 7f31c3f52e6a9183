"""python -m sweeps.demo -- analyse a small 1-D CNN trained on MNIST-1D, then prune it.

Trains the reference-style network, prints ``analyze_compression``'s report, removes the
filters with the smallest L1 norm in steps of 10% of the learnables (fine-tuning after each
step) until half of the learnables are gone, then saves the pruned model in the safe format
and loads it back. Output goes to ``outputs/demo/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prune_core import ChannelGraph, analyze_compression, load_pruned, remove_units, save_pruned
from sweeps.datasets import mnist1d_tensors
from sweeps.models import reference_cnn1d


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model(x).argmax(1) == y).float().mean().item()


def l1_scores(model: nn.Module, graph: ChannelGraph) -> dict[int, float]:
    """Mean absolute filter weight of each removable unit, divided by its layer's mean (L1 criterion)."""
    params = dict(model.named_parameters())
    scores = {}
    for unit in graph.removable_units():
        values = []
        for (name, dim), idx in graph.removal_plan([unit.id]).items():
            if graph.sites[(name, dim)].role == "filter" and name.endswith("weight"):
                w = params[name].detach().abs()
                values.append(float(w.index_select(dim, torch.as_tensor(idx)).mean() / w.mean()))
        scores[unit.id] = float(np.mean(values))
    return scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/demo", help="folder for the pruned model")
    parser.add_argument("--goal", type=float, default=0.5, help="learnables reduction to reach, in (0, 1]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0 < args.goal <= 1:
        parser.error(f"--goal must be in (0, 1], got {args.goal}")
    torch.manual_seed(args.seed)
    data = mnist1d_tensors(seed=42)
    model = reference_cnn1d()
    train(model, data["x_train"], data["y_train"], epochs=15, lr=3e-3, seed=args.seed)
    base = accuracy(model, data["x_test"], data["y_test"])
    print(f"Trained the network: test accuracy {100 * base:.1f}%\n")
    report = analyze_compression(model, data["x_train"][:8])
    total = report.total_learnables
    goal = min(args.goal, report.max_reduction)
    print(f"\nPruning to {100 * goal:.0f}% fewer learnables (L1 criterion, 10% per step, 2 fine-tuning epochs):")
    removed = 0
    while removed < goal * total - 1e-9:
        graph = ChannelGraph.build(model, data["x_train"][:8])
        scores = l1_scores(model, graph)
        target = min(removed + 0.1 * total, goal * total) - removed
        chosen: list[int] = []
        for uid in graph.greedy_removal(sorted(scores, key=scores.get)):
            chosen.append(uid)
            if graph.learnables_removed(chosen) >= target:
                break
        if not chosen:
            break
        removed += graph.learnables_removed(chosen)
        remove_units(model, graph, chosen)
        train(model, data["x_train"], data["y_train"], epochs=2, lr=1e-3, seed=args.seed)
        acc = accuracy(model, data["x_test"], data["y_test"])
        print(f"  {100 * removed / total:5.1f}% fewer learnables: test accuracy {100 * acc:.1f}%")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_pruned(model, out / "pruned.pt")
    reloaded = load_pruned(out / "pruned.pt", reference_cnn1d)
    print(f"\nSaved {out / 'pruned.pt'} ({sum(p.numel() for p in model.parameters()):,} of {total:,} learnables); "
          f"reloaded accuracy {100 * accuracy(reloaded, data['x_test'], data['y_test']):.1f}% "
          f"(unpruned {100 * base:.1f}%).")


if __name__ == "__main__":
    main()
