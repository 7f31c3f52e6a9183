"""Which units to remove: the lowest-scoring ones, across all groups, under a budget.

``choose_units(graph, scores, learnables=N)`` walks the units from the lowest score up and
takes each one that leaves every layer at least its floor of channels (1 by default; a
``floors`` entry raises it for a site), until the exact learnables removed reach ``N`` or
``max_units`` are taken. With ``per_learnable=True`` the walk is ordered by score divided by
the learnables the unit removes (cheap-to-keep filters go last). With ``weights`` (an amount per
entry of each parameter, ``macs_per_weight`` for a MACs budget) the budget and ``per_learnable``
count that amount instead of learnables.

``choose_uniform`` allocates instead of ranking globally: every channel group (units removed
from the same producers) loses the same share of its filters, the smallest share that reaches
the budget, and the scores pick which filters within each group.

Allocations are registered by name (``register_allocation``): "global" is ``choose_units``,
"uniform" is ``choose_uniform`` under a learnables budget (``choose_units`` under a count). An
allocation is a function ``(graph, scores, *, learnables, max_units, per_learnable, floors)``
returning the unit ids to remove; ``choose_units`` on a reordered score vector is the usual way
to write one. Under a MACs budget (``PruningOptions(budget="macs")``) it is also passed
``weights=``, and ``learnables`` is then a number of MACs.

>>> import torch, torch.nn as nn
>>> import numpy as np
>>> from prune_core.channels.graph import ChannelGraph
>>> net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Conv1d(4, 2, 3))
>>> graph = ChannelGraph.build(net, torch.zeros(1, 1, 8))
>>> choose_units(graph, np.array([0.4, 0.1, 0.3, 0.2]), learnables=15)   # 10 learnables per filter
[1, 3]
>>> choose_units(graph, np.array([0.4, 0.1, 0.3, 0.2]), max_units=10)
[1, 3, 2]
>>> ALLOCATIONS.get("global")(graph, np.array([0.4, 0.1, 0.3, 0.2]), learnables=15, max_units=None,
...                           per_learnable=False, floors=None)
[1, 3]
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from prune_core.channels import ChannelGraph, RemovalTally
from prune_core.registry import Registry


class Allocation(Protocol):
    """Which units to remove under a budget (see the module docstring)."""

    def __call__(
        self,
        graph: ChannelGraph,
        scores: np.ndarray,
        *,
        learnables: int | None,
        max_units: int | None,
        per_learnable: bool,
        floors: dict[tuple[str, int], int] | None,
        weights: dict[str, float] | None = None,
    ) -> list[int]: ...


ALLOCATIONS: Registry[Allocation] = Registry("allocation", "prune_core.register_allocation")


def register_allocation(name: str, allocation: Allocation, *, replace: bool = False) -> None:
    """Make ``allocation`` available as ``allocation=name``."""
    if not callable(allocation):
        raise TypeError(f"allocation {name!r} must be a function, got {allocation!r}")
    ALLOCATIONS.register(name, allocation, replace=replace)


def choose_units(
    graph: ChannelGraph,
    scores: np.ndarray,
    *,
    learnables: int | None = None,
    max_units: int | None = None,
    per_learnable: bool = False,
    floors: dict[tuple[str, int], int] | None = None,
    weights: dict[str, float] | None = None,
) -> list[int]:
    """Units to remove, lowest score first; see the module docstring. Infinite scores are never taken."""
    floors = floors or {}
    keys = np.asarray(scores, dtype=np.float64)
    if per_learnable:
        costs = np.array([graph.unit_cost(u.id, weights) if u.removable else 1 for u in graph.units], dtype=np.float64)
        keys = keys / np.maximum(costs, 1e-12 if weights is not None else 1)
    remaining = {key: units.size for key, units in graph.site_units.items()}
    tally, taken = RemovalTally(graph, weights), list[int]()
    for uid in np.argsort(keys, kind="stable").tolist():
        if not np.isfinite(keys[uid]) or (max_units is not None and len(taken) >= max_units):
            break
        if learnables is not None and tally.total >= learnables:
            break
        counts = graph.units[uid].counts
        if all(remaining[key] - count >= floors.get(key, 1) for key, count in counts.items()):
            for key, count in counts.items():
                remaining[key] -= count
            tally.add(uid)
            taken.append(uid)
    return taken


def channel_groups(graph: ChannelGraph) -> dict[tuple[str, ...], list[int]]:
    """The unit ids of each channel group: units removed from the same producers, in unit order."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for unit in graph.units:
        groups.setdefault(unit.producers, []).append(unit.id)
    return groups


def filter_floors(graph: ChannelGraph, fraction: float) -> dict[tuple[str, int], int]:
    """Keep at least ``fraction`` of every filter site's channels (at least 1), from this graph's sizes.

    ``fraction`` is ``PruningOptions.min_filter_fraction``, checked there."""
    return {
        key: max(1, math.ceil(fraction * graph.size(key))) for key, site in graph.sites.items() if site.role == "filter"
    }


def choose_uniform(
    graph: ChannelGraph,
    scores: np.ndarray,
    *,
    learnables: float,
    floors: dict[tuple[str, int], int] | None = None,
    weights: dict[str, float] | None = None,
) -> list[int]:
    """Units to remove when every group loses the same share of its filters; see the module docstring."""
    finite = ([uid for uid in ids if np.isfinite(scores[uid])] for ids in channel_groups(graph).values())
    ranked = [sorted(ids, key=lambda uid: scores[uid]) for ids in finite if ids]

    def take(share: float) -> list[int]:
        picked = [uid for ids in ranked for uid in ids[: int(share * len(ids))]]
        order = np.full(len(graph.units), np.inf)
        order[picked] = scores[picked]
        return choose_units(graph, order, floors=floors)

    everything = take(1.0)
    if graph.learnables_removed(everything, weights) < learnables:
        return everything
    low, high = 0.0, 1.0
    for _ in range(30):
        mid = (low + high) / 2
        low, high = (low, mid) if graph.learnables_removed(take(mid), weights) >= learnables else (mid, high)
    return take(high)


def _uniform(
    graph: ChannelGraph,
    scores: np.ndarray,
    *,
    learnables: int | None,
    max_units: int | None,
    per_learnable: bool,
    floors: dict[tuple[str, int], int] | None,
    weights: dict[str, float] | None = None,
) -> list[int]:
    if learnables is None:  # a count budget has no share to spread: rank globally
        return choose_units(
            graph, scores, max_units=max_units, per_learnable=per_learnable, floors=floors, weights=weights
        )
    return choose_uniform(graph, scores, learnables=learnables, floors=floors, weights=weights)


register_allocation("global", choose_units)
register_allocation("uniform", _uniform)
