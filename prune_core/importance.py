"""Filter importance: the activation Taylor criterion (Molchanov et al. 2017) and two baselines.

Taylor: for every prunable feature map (the output of a pruned conv, conv-transpose or
pointwise linear) and every example, ``|mean over positions of (activation x dLoss/dactivation)|``,
averaged over the examples of every scored mini-batch. ``TaylorAccumulator.hooks(model)``
collects it during ordinary forward/backward passes: a forward hook on each producing module
registers a gradient hook on its output; the gradient hook reduces (activation, gradient) to
one number per example and channel and lets both go. Nothing is kept between batches.

Baselines with the same output (one score per channel of each producer): ``filter_l1`` (sum
of absolute filter weights, Li et al. 2017) and ``random_unit_scores``.

``unit_scores`` turns channel scores into one score per removal unit: each producer's scores
are divided by their L2 norm (``normalization="l2"``, so layers compare; "none" keeps raw
scores) and the channels of a unit (coupled layers, whole groups) are summed.

>>> import torch, torch.nn as nn
>>> from prune_core.graph import ChannelGraph
>>> net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 2))
>>> graph = ChannelGraph.build(net, torch.zeros(1, 1, 8))
>>> taylor = TaylorAccumulator(graph)
>>> with taylor.hooks(net):
...     nn.functional.cross_entropy(net(torch.randn(5, 1, 8)), torch.tensor([0, 1, 0, 1, 1])).backward()
>>> taylor.examples, unit_scores(graph, taylor.channel_scores()).shape
(5, (4,))
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from prune_core.graph import ChannelGraph

CRITERIA = ("taylor", "l1", "random")
NORMALIZATIONS = ("l2", "none")


def scored_producers(graph: ChannelGraph) -> list[str]:
    """Modules whose output channels belong to at least one removable unit."""
    removable = np.array([u.removable for u in graph.units] + [False])
    return [fqn for fqn, units in graph.producer_units.items() if removable[units].any()]


class TaylorAccumulator:
    """Sums of per-example |mean(activation x gradient)| for every producer channel."""

    def __init__(self, graph: ChannelGraph) -> None:
        self.graph = graph
        self.producers = scored_producers(graph)
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    @property
    def examples(self) -> int:
        """Examples scored so far (by the producer that saw the most)."""
        return max(self.counts.values(), default=0)

    def reset(self) -> None:
        self.sums, self.counts = {}, {}

    def _record(self, fqn: str, activation: torch.Tensor, gradient: torch.Tensor) -> None:
        cdim = self.graph.producer_dims[fqn]
        n = activation.shape[0] if activation.ndim > 1 else 1
        a = activation.movedim(cdim, -1).reshape(n, -1, activation.shape[cdim])
        g = gradient.movedim(cdim, -1).reshape(n, -1, activation.shape[cdim])
        per_example = torch.einsum("nlc,nlc->nc", a, g).div_(a.shape[1]).abs_()
        total = per_example.sum(0).to(torch.float64)
        self.sums[fqn] = self.sums[fqn] + total if fqn in self.sums else total
        self.counts[fqn] = self.counts.get(fqn, 0) + n

    @contextmanager
    def hooks(self, model: nn.Module) -> Iterator[list[torch.Tensor]]:
        """Collect scores from the forward/backward passes run inside; yields the live activations."""
        modules = dict(model.named_modules())
        live: list[torch.Tensor] = []

        def forward_hook(fqn):
            def hook(module, args, output):
                if isinstance(output, torch.Tensor) and output.requires_grad:
                    activation = output.detach()
                    live.append(output)

                    def on_gradient(gradient):
                        self._record(fqn, activation, gradient)
                    output.register_hook(on_gradient)
            return hook

        handles = [modules[fqn].register_forward_hook(forward_hook(fqn)) for fqn in self.producers]
        try:
            yield live
        finally:
            for handle in handles:
                handle.remove()
            live.clear()

    def channel_scores(self) -> dict[str, np.ndarray]:
        """Mean score of every channel of every scored producer (zeros before any batch)."""
        out = {}
        for fqn in self.producers:
            size = self.graph.producer_units[fqn].size
            total = self.sums.get(fqn)
            out[fqn] = np.zeros(size) if total is None else total.cpu().numpy() / self.counts[fqn]
        return out


def filter_l1(model: nn.Module, graph: ChannelGraph) -> dict[str, np.ndarray]:
    """Sum of absolute weights of every filter of every scored producer (Li et al. 2017)."""
    modules = dict(model.named_modules())
    out = {}
    for fqn in scored_producers(graph):
        weight = modules[fqn].weight.detach()
        filter_dim = 1 if isinstance(modules[fqn], nn.modules.conv._ConvTransposeNd) else 0
        out[fqn] = weight.abs().movedim(filter_dim, 0).flatten(1).sum(1).double().cpu().numpy()
    return out


def unit_scores(graph: ChannelGraph, channel_scores: dict[str, np.ndarray], normalization: str = "l2") -> np.ndarray:
    """One score per unit (``inf`` for units that cannot be removed); see the module docstring."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization {normalization!r} is not supported; use one of {NORMALIZATIONS}")
    scores = np.zeros(len(graph.units))
    for fqn, values in channel_scores.items():
        units = graph.producer_units[fqn]
        if normalization == "l2":
            norm = np.linalg.norm(values)
            values = values / norm if norm > 0 else values
        keep = units >= 0
        np.add.at(scores, units[keep], values[keep])
    scores[[not u.removable for u in graph.units]] = np.inf
    return scores


def random_unit_scores(graph: ChannelGraph, generator: np.random.Generator) -> np.ndarray:
    """Uniform random scores (``inf`` for units that cannot be removed): the random baseline."""
    scores = generator.random(len(graph.units))
    scores[[not u.removable for u in graph.units]] = np.inf
    return scores
