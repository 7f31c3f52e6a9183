"""Channel counts in steps of N: ``round_kept`` adjusts a removal so every pruned layer keeps a multiple.

GPU kernels, tensor cores and vectorised CPU code run in steps of 8 to 32 channels, so a layer cut
to 27 channels runs no faster than one of 32. ``round_kept(graph, scores, chosen, round_to=8)``
takes the units an allocation chose and, in each channel group (units removed from the same
producers), moves the number kept to the nearest multiple of ``round_to`` channels: it gives back
the highest-scoring chosen units or takes the next lowest-scoring ones. A group's count that is
already a multiple, and a group nothing was taken from, stay as they are. A group keeps at least
``round_to`` channels and its floors. When rounding to the nearest would undo the whole removal,
the group that lost the most is rounded down instead, so an iteration always makes progress
where one is possible.

A group is rounded in units: a unit that removes ``c`` entries of each of its filter sites needs
``round_to / gcd(round_to, c)`` units per step (one attention head of 64 channels is a step of
its own). Groups whose filter sites hold channels of other groups too are left as chosen.

>>> import torch, torch.nn as nn, numpy as np
>>> from prune_core.channels.graph import ChannelGraph
>>> net = nn.Sequential(nn.Conv2d(3, 12, 3), nn.ReLU(), nn.Conv2d(12, 4, 3))
>>> graph = ChannelGraph.build(net, torch.zeros(1, 3, 8, 8))
>>> scores = np.arange(12.0)
>>> round_kept(graph, scores, [0, 1, 2], round_to=4)      # 9 kept: back to 8
[0, 1, 2, 3]
>>> round_kept(graph, scores, [0], round_to=4)            # 11 kept: back to 12
[]
>>> round_kept(graph, scores, [0], round_to=4, progress=True)   # the only group loses the most: down
[0, 1, 2, 3]
"""

from __future__ import annotations

import math

import numpy as np

from prune_core.channels import ChannelGraph
from prune_core.selection import channel_groups


def _step(graph: ChannelGraph, ids: list[int], round_to: int) -> int | None:
    """Units per step of ``round_to`` channels, or None where the group does not own its filter sites."""
    first = graph.units[ids[0]]
    filters = [key for key in first.counts if graph.sites[key].role == "filter"]
    if not filters or any(graph.units[uid].counts != first.counts for uid in ids):
        return None
    members = np.asarray(ids)
    if not all(np.isin(graph.site_units[key], members).all() for key in filters):
        return None
    return math.lcm(*(round_to // math.gcd(round_to, first.counts[key]) for key in filters))


def round_kept(
    graph: ChannelGraph,
    scores: np.ndarray,
    chosen: list[int],
    *,
    round_to: int,
    floors: dict[tuple[str, int], int] | None = None,
    progress: bool = False,
) -> list[int]:
    """``chosen`` with every group's kept channels a multiple of ``round_to`` (see the module docstring).

    ``progress=True`` rounds down the group that lost the most where rounding to the nearest would
    remove nothing at all (``choose`` asks for it when the allocation chose something)."""
    if round_to == 1 or not chosen:
        return list(chosen)
    floors = floors or {}
    taken = set(chosen)
    plans = []  # per group that lost units: its units lowest score first, those chosen, its step
    for ids in channel_groups(graph).values():
        step = _step(graph, ids, round_to) if taken.intersection(ids) else None
        if step is not None:
            order = sorted(ids, key=lambda uid: scores[uid])
            plans.append((order, [uid for uid in order if uid in taken], step))
    rounded = [_nearest(graph, scores, order, picked, step, floors, down=False) for order, picked, step in plans]
    if progress and plans and not any(rounded):
        most = max(range(len(plans)), key=lambda k: len(plans[k][1]))
        rounded[most] = _nearest(graph, scores, *plans[most], floors, down=True)
    dropped = {uid for (_, picked, _), now in zip(plans, rounded) for uid in set(picked) - set(now)}
    added = [uid for now in rounded for uid in now if uid not in taken]
    return [uid for uid in chosen if uid not in dropped] + added


def _nearest(
    graph: ChannelGraph,
    scores: np.ndarray,
    order: list[int],
    picked: list[int],
    step: int,
    floors: dict[tuple[str, int], int],
    *,
    down: bool,
) -> list[int]:
    """The group's units to remove once its kept count is a multiple of ``step`` units: the nearest
    multiple (ties keep more), or with ``down`` the one below where it is allowed."""
    size, kept = len(order), len(order) - len(picked)
    counts = graph.units[order[0]].counts
    least = max([step, *(math.ceil(floors.get(key, 1) / count) for key, count in counts.items())])
    removable = [uid for uid in order if graph.units[uid].removable and np.isfinite(scores[uid])]
    up, low = min(size, math.ceil(kept / step) * step), kept // step * step
    target = up
    if low >= least and size - low <= len(removable) and (down or kept - low < up - kept):
        target = low
    if target == kept:
        return picked
    if target > kept:  # give back the highest-scoring chosen units
        return picked[: size - target]
    chosen = set(picked)
    extra = [uid for uid in removable if uid not in chosen]
    return picked + extra[: kept - target]
