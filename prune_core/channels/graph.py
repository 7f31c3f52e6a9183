"""Channel groups of a network: which channels can be removed, and what goes with them.

``ChannelGraph.build(model, example_input)`` traces the model (``tracing``), runs it once
on the example input while propagating channel labels (``propagate``), and collects the
result into *removal units*. A unit is the smallest set of channels that can be removed on
its own: one conv filter plus the matching BatchNorm entries and the matching input
channels of every layer that consumes it; for a residual stream, the same channel index of
every branch feeding the addition; for a grouped convolution, a whole group (how groups
are kept consistent: groups are removed whole, never thinned); for a GroupNorm, a whole
norm group. Units removed from the same set of layers form a *channel group*.

A unit that cannot be removed says why (``Unit.reasons``): it reaches the network output,
an operation the analysis does not understand, or a layer outside ``layer_names``.

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Conv1d(1, 8, 3), nn.BatchNorm1d(8), nn.ReLU(),
...                     nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 3))
>>> g = ChannelGraph.build(net, torch.zeros(2, 1, 32))
>>> len(g.removable_units()), g.units[0].members
(8, ('0', '1', '5'))
"""

from __future__ import annotations

import difflib
import gc
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from prune_core.channels.example import ExampleInput
from prune_core.channels.labels import distinct
from prune_core.channels.preserve import preserved, set_training
from prune_core.channels.propagate import ChannelPropagation
from prune_core.channels.sites import Site, owner
from prune_core.channels.tracing import example_inputs, traced_forward

ATTENTION_UNITS = ("heads", "head_dims")


@dataclass(slots=True)
class Unit:
    """One removable channel (with everything coupled to it).

    ``counts`` maps each site (name, dim) the unit touches to how many of its entries go.
    """

    id: int
    counts: dict[tuple[str, int], int]
    producers: tuple[str, ...]
    members: tuple[str, ...]
    reasons: tuple[str, ...] = ()

    @property
    def removable(self) -> bool:
        return not self.reasons


@contextmanager
def _without_gc() -> Iterator[None]:
    """The garbage collector paused: the analysis allocates many small objects and frees none of them."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def check_compare_at(model: nn.Module, compare_at: Iterable[str]) -> tuple[str, ...]:
    """``compare_at`` as a tuple of module names of ``model``; a ValueError names any that is not one."""
    names = (compare_at,) if isinstance(compare_at, str) else tuple(compare_at)
    if not names:
        return names
    modules = dict(model.named_modules())
    unknown = [name for name in names if not isinstance(name, str) or not name or name not in modules]
    if unknown:
        raise ValueError(
            f"compare_at names {unknown}, which are not submodules of the model; use dotted module names "
            f"such as {[n for n in modules if n][:3]}"
        )
    return names


@dataclass
class ChannelGraph:
    """Removal units of a model; see the module docstring. Build with ``ChannelGraph.build``."""

    units: list[Unit]
    sites: dict[tuple[str, int], Site]
    site_units: dict[tuple[str, int], np.ndarray]  # unit id of every entry of a site, -1 if none
    param_shapes: dict[str, tuple[int, ...]]
    producer_units: dict[str, np.ndarray] = field(default_factory=dict)  # unit id of each output channel
    grouped_convs: dict[str, int] = field(default_factory=dict)
    norm_groups: dict[str, int] = field(default_factory=dict)
    renormalizing: set[str] = field(default_factory=set)
    products: set[str] = field(default_factory=set)  # producers whose filters enter a product (q·k)
    example_input: ExampleInput | None = None  # what the analysis ran on; the surgery check reuses it
    compare_at: tuple[str, ...] = ()  # modules whose outputs the surgery check compares (none: the network's)
    unsupported: tuple[str, ...] = ()  # operations the analysis did not understand

    @classmethod
    def build(
        cls,
        model: nn.Module,
        example_input,
        layer_names: Iterable[str] | None = None,
        leaf_modules: Iterable[str | type] = (),
        compare_at: Iterable[str] = (),
        attention_units: str = "heads",
    ) -> ChannelGraph:
        """Analyse ``model`` on ``example_input`` (a tensor, a tuple of positional arguments or a dict of
        keyword arguments: ``ExampleInput``).

        ``layer_names`` (dotted paths, or MATLAB-style "a/b") restricts pruning to units whose
        filters or channel-wise parameters lie in those layers (or inside them) -- naming a
        BatchNorm prunes the conv feeding it, naming a conv prunes its filters and shrinks the
        layers that consume them; ``leaf_modules`` are not traced into and their channels are
        left alone. ``compare_at`` names the modules whose outputs the surgery check compares instead
        of the network's outputs (``prune_core.channels.verify``): for a detector, the heads whose
        raw predictions come before post-processing. ``attention_units``: what an attention's removal units
        are (timm's ViT family and Swin, ``nn.MultiheadAttention``, Hugging Face's): "heads" (whole heads) or
        "head_dims" (dim j of every head's query, key and value; see ``rules_attention``).
        """
        if attention_units not in ATTENTION_UNITS:
            raise ValueError(f"attention_units {attention_units!r} is not supported; use one of {ATTENTION_UNITS}")
        inputs = example_inputs(model, example_input)
        compared = check_compare_at(model, compare_at)
        names = resolve_layer_names(model, layer_names)
        with _without_gc():
            with preserved(model):  # traced-through modules may update buffers as they run
                root, forward, recorded = traced_forward(model, leaf_modules, inputs)
                set_training(model, False)
                with torch.no_grad():
                    prop = ChannelPropagation.over(root, forward, model, inputs.values, attention_units, recorded)
            graph = cls._from_propagation(model, prop, names)
        graph.example_input, graph.compare_at = inputs, compared
        return graph

    @classmethod
    def _from_propagation(cls, model: nn.Module, prop: ChannelPropagation, names: list[str] | None) -> ChannelGraph:
        slots = prop.slots
        root_of = slots.all_roots()
        is_produced = np.zeros(len(slots), dtype=bool)
        is_produced[root_of[np.concatenate([np.zeros(0, np.int64), *prop.producer_slots.values()])]] = True
        order = np.flatnonzero(is_produced)  # every produced root, ascending
        unit_of_root = np.full(len(slots), -1, dtype=np.int64)
        unit_of_root[order] = np.arange(len(order))
        producer_units = {fqn: unit_of_root[root_of[ids]] for fqn, ids in prop.producer_slots.items()}
        producers = _producers(len(order), producer_units)
        # Sites with the same slots (a layer's filters, its bias, its norm's parameters and statistics) form one
        # group, whose entries are worked on once. (unit, group, count) for every group a unit touches; units
        # touching the same groups alike (the filters of one layer, say) share one counts dict and members tuple.
        keys = list(prop.sites)
        group_of: dict[bytes, int] = {}
        site_group = [group_of.setdefault(prop.sites[key].vector.tobytes(), len(group_of)) for key in keys]
        vectors = [np.frombuffer(content, dtype=np.int64) for content in group_of]
        every = unit_of_root[root_of[np.concatenate([np.zeros(0, np.int64), *vectors])]]  # all groups' entries
        sizes = [vector.size for vector in vectors]
        ends = np.cumsum(sizes, dtype=np.int64).tolist()
        group_units = [every[end - size : end] for size, end in zip(sizes, ends)]
        site_units = {key: group_units[g] for key, g in zip(keys, site_group)}  # one array per group
        sites_in: list[list[int]] = [[] for _ in vectors]
        for i, g in enumerate(site_group):
            sites_in[g].append(i)
        owned = every >= 0
        group_at = np.repeat(np.arange(len(vectors), dtype=np.int64), sizes)
        # entries by unit, each unit's groups in order (a stable sort of group-ordered entries, whose units mostly
        # run in order within a group); runs of one (unit, group) pair give its entry count
        unit_ids, group_ids = every[owned], group_at[owned]
        by_unit = np.argsort(unit_ids, kind="stable")
        unit_ids, group_ids = unit_ids[by_unit], group_ids[by_unit]
        runs = np.flatnonzero(np.diff(unit_ids, prepend=-1) | np.diff(group_ids, prepend=-1))
        group_counts = np.diff(runs, append=unit_ids.size)
        unit_ids, group_ids = unit_ids[runs], group_ids[runs]
        bounds = np.searchsorted(unit_ids, np.arange(len(order) + 1))
        alike, first = _alike(unit_ids, group_ids, group_counts, bounds)
        site_owner = [owner(key[0]) for key in keys]
        counts_of, members_of, unselected = [], [], []  # per kind of unit
        for kind, k in enumerate(first.tolist()):
            groups_k, counts_k = group_ids[bounds[k] : bounds[k + 1]].tolist(), group_counts[bounds[k] : bounds[k + 1]]
            sites_k = sorted((i, c) for g, c in zip(groups_k, counts_k.tolist()) for i in sites_in[g])
            counts_of.append({keys[i]: c for i, c in sites_k})
            members_of.append(tuple(sorted({site_owner[i] for i, _ in sites_k})))
            if names is not None and not _selected(counts_of[-1], prop.sites, names):
                unselected.append(kind)
        reasons: list[tuple[str, ...]] = [()] * len(order)
        for root, found in slots.root_reasons().items():
            if unit_of_root[root] >= 0:
                reasons[unit_of_root[root]] = tuple(sorted(found))
        for k in np.flatnonzero(np.isin(alike, unselected)).tolist():
            reasons[k] = tuple(sorted({*reasons[k], "not affected by the requested layer_names"}))
        kinds = alike.tolist()
        counts, members = list(map(counts_of.__getitem__, kinds)), list(map(members_of.__getitem__, kinds))
        units = list(map(Unit, range(len(kinds)), counts, producers, members, reasons))
        return cls(
            units=units,
            sites=prop.sites,
            site_units=site_units,
            param_shapes=dict(prop.parameter_shapes),
            producer_units=producer_units,
            grouped_convs=dict(prop.grouped_convs),
            norm_groups=dict(prop.norm_groups),
            renormalizing=set(prop.renormalizing),
            products=set(prop.products),
            unsupported=tuple(prop.unsupported),
        )

    def after_removal(self, unit_ids: Iterable[int], model: nn.Module) -> ChannelGraph | None:
        """The graph of ``model`` once ``remove_units`` has removed ``unit_ids``, without re-analysing it.

        Removing whole units changes no coupling: every other unit keeps its channels, counts,
        layers and reasons, and only the removed entries leave each site (ids are renumbered).
        That holds while every site keeps at least two units: a layer down to its last unit
        can change kind (a grouped convolution left with one group is an ordinary one, whose
        filters a fresh analysis makes prunable one by one; a channel split down to one
        channel per piece is a size-1 dim). Then this returns None and the caller re-analyses.
        The surgery check still runs the real model after every surgery, so a forward that
        changes with the channel count is caught there.
        """
        removed = np.zeros(len(self.units) + 1, dtype=bool)  # the extra entry stands for -1 (no unit)
        removed[np.fromiter(unit_ids, np.int64)] = True
        renumber = np.append(np.cumsum(~removed[:-1]) - 1, -1)
        is_removed = removed.tolist()
        kept = [u for u in self.units if not is_removed[u.id]]

        def shrink(ids: np.ndarray) -> np.ndarray:
            return renumber[ids[~removed[ids]]]

        remaining, sites, updated = {}, {}, {}  # updated: by the id of a units array sites share (a site group)
        for key, ids in self.site_units.items():
            done = updated.get(id(ids))
            if done is None:
                gone = removed[ids]
                left = renumber[ids[~gone]]
                owned = left[left >= 0]
                if gone.any() and owned.size and (owned == owned[0]).all():
                    return None  # this removal left the site with its last unit
                done = updated[id(ids)] = (gone, left)
            gone, remaining[key] = done
            site = self.sites[key]
            sites[key] = Site(site.vector[~gone], site.kind, site.role)
        with _without_gc():
            counts, producers = [u.counts for u in kept], [u.producers for u in kept]
            members, reasons = [u.members for u in kept], [u.reasons for u in kept]
            units = list(map(Unit, range(len(kept)), counts, producers, members, reasons))
        return ChannelGraph(
            units=units,
            sites=sites,
            site_units=remaining,
            param_shapes={name: tuple(p.shape) for name, p in model.named_parameters()},
            producer_units={fqn: shrink(ids) for fqn, ids in self.producer_units.items()},
            grouped_convs=self.grouped_convs,
            norm_groups=self.norm_groups,
            renormalizing=self.renormalizing,
            products=self.products,
            example_input=self.example_input,
            compare_at=self.compare_at,
            unsupported=self.unsupported,
        )

    # -- queries --------------------------------------------------------------------------
    @property
    def total_learnables(self) -> int:
        return sum(math.prod(shape) for shape in self.param_shapes.values())

    def removable_units(self) -> list[Unit]:
        return [u for u in self.units if u.removable]

    def size(self, key: tuple[str, int]) -> int:
        """Number of entries of a site (channels of that parameter dim or attribute)."""
        return self.site_units[key].size

    def removal_plan(self, unit_ids: Iterable[int]) -> dict[tuple[str, int], np.ndarray]:
        """Sorted indices to remove for every site touched by the given units."""
        chosen = np.zeros(len(self.units) + 1, dtype=bool)  # the extra entry stands for -1 (no unit)
        ids = list(unit_ids)
        chosen[ids] = True
        keys = {key for uid in ids for key in self.units[uid].counts}
        return {key: np.flatnonzero(chosen[self.site_units[key]]) for key in keys}

    def learnables_removed(self, unit_ids: Iterable[int], weights: dict[str, float] | None = None) -> float:
        """Exact number of parameters that removing these units deletes (entries belong to one unit each);
        with ``weights`` (an amount per entry of some parameters, e.g. ``macs_per_weight``), that amount."""
        tally = RemovalTally(self, weights)
        for uid in unit_ids:
            tally.add(uid)
        return tally.total

    def unit_cost(self, uid: int, weights: dict[str, float] | None = None) -> float:
        """Parameters (or, with ``weights``, that amount) removed by this unit alone."""
        return self.learnables_removed([uid], weights)

    def check_removal(self, unit_ids: Sequence[int]) -> None:
        """Raise ValueError unless every unit is removable and every layer keeps a channel."""
        for uid in unit_ids:
            if not 0 <= uid < len(self.units):
                raise ValueError(f"unit id {uid} is out of range: the model has {len(self.units)} units")
            if self.units[uid].reasons:
                unit = self.units[uid]
                raise ValueError(
                    f"unit {uid} (filters of {', '.join(unit.producers)}) cannot be removed: {'; '.join(unit.reasons)}"
                )
        plan = self.removal_plan(unit_ids)
        for name, dim in sorted(plan, key=lambda key: self.sites[key].role != "filter"):
            if plan[(name, dim)].size >= self.size((name, dim)):
                raise ValueError(
                    f"the removal would delete every channel of `{owner(name)}` ({name}, dim {dim}); "
                    "every pruned layer keeps at least one channel"
                )

    def greedy_removal(self, order: Sequence[int]) -> list[int]:
        """Units taken in ``order``, skipping any whose removal would empty a layer."""
        remaining = {key: units.size for key, units in self.site_units.items()}
        taken = []
        for uid in order:
            unit = self.units[uid]
            if not unit.removable:
                continue
            if all(remaining[key] > count for key, count in unit.counts.items()):
                for key, count in unit.counts.items():
                    remaining[key] -= count
                taken.append(uid)
        return taken

    def max_removal(self) -> list[int]:
        """The most learnables that can go with every layer keeping a channel (costly units first)."""
        units = self.removable_units()
        order = sorted((u.id for u in units), key=lambda uid: -self.unit_cost(uid))
        return self.greedy_removal(order)


class RemovalTally:
    """Exact learnables removed by a growing set of units (no entry counted twice).

    With ``weights`` (an amount per entry, by parameter name, e.g. ``macs_per_weight``), ``total``
    is that amount instead; parameters not named count nothing.
    """

    def __init__(self, graph: ChannelGraph, weights: dict[str, float] | None = None) -> None:
        self.graph, self.weights = graph, weights
        self.removed_dims: dict[str, dict[int, int]] = {}
        self.per_param: dict[str, int] = {}
        self.total = 0

    def add(self, uid: int) -> None:
        touched = set()
        for (name, dim), count in self.graph.units[uid].counts.items():
            if name in self.graph.param_shapes:
                dims = self.removed_dims.setdefault(name, {})
                dims[dim] = dims.get(dim, 0) + count
                touched.add(name)
        for name in touched:
            shape, dims = self.graph.param_shapes[name], self.removed_dims[name]
            removed = math.prod(shape) - math.prod(size - dims.get(d, 0) for d, size in enumerate(shape))
            weight = 1 if self.weights is None else self.weights.get(name, 0.0)
            self.total += (removed - self.per_param.get(name, 0)) * weight
            self.per_param[name] = removed


def _producers(count: int, units_of: dict[str, np.ndarray]) -> list[tuple[str, ...]]:
    """The producer layers of each of ``count`` units, sorted, from the unit of each channel each layer produces
    (most units have one producer; a residual stream's have several). Units with the same producers share one
    tuple: each unit's producers are read as the digits of one integer, and alike integers are named once.

    >>> _producers(3, {"b": np.array([0, 1]), "a": np.array([1, 2, 2])})
    [('b',), ('a', 'b'), ('a',)]
    >>> stream = _producers(2, {f"block{i:02d}": np.array([0, 1]) for i in range(70)})   # 70 digits: past int64
    >>> stream[0] is stream[1], len(stream[0]), stream[0][:2]
    (False, 70, ('block00', 'block01'))
    """
    fqns = sorted(units_of)
    base = max(len(fqns), 1)
    units = np.concatenate([np.zeros(0, np.int64), *(units_of[fqn] for fqn in fqns)])
    which = np.repeat(np.arange(len(fqns), dtype=np.int64), [units_of[fqn].size for fqn in fqns])
    keys = distinct(units * base + which)  # each (unit, producer) once, by unit, then by name
    units, which = keys // base, keys % base
    starts = np.flatnonzero(np.diff(units, prepend=-1))
    lengths = np.diff(starts, append=units.size)
    found = np.empty(count, dtype=object)
    for length in np.flatnonzero(np.bincount(lengths)).tolist():
        rows = starts[lengths == length]
        if base**length >= 2**62:  # too many producers for one integer: name each unit's on its own
            for row in rows.tolist():
                found[units[row]] = tuple(fqns[j] for j in which[row : row + length].tolist())
            continue
        code = np.zeros(rows.size, dtype=np.int64)
        for j in range(length):
            code = code * base + which[rows + j]
        codes, alike = np.unique(code, return_inverse=True)
        names = np.empty(codes.size, dtype=object)
        for i, number in enumerate(codes.tolist()):
            digits = []
            for _ in range(length):
                number, digit = divmod(number, base)
                digits.append(fqns[digit])
            names[i] = tuple(reversed(digits))
        found[units[rows]] = names[alike.reshape(-1)]
    return found.tolist()  # type: ignore[no-any-return]


def _alike(
    unit_ids: np.ndarray, site_ids: np.ndarray, site_counts: np.ndarray, bounds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A kind per unit, the same for units that touch the same sites with as many entries each (the filters of
    one layer, say), and the first unit of each kind. Each unit's (site, count) pairs, sorted by site, are
    hashed together; every unit is then compared, pair by pair, with the first of its kind, and a hash that
    joined different units (never seen) falls back to comparing the padded rows whole."""
    lengths = np.diff(bounds)
    position = np.arange(len(unit_ids)) - np.repeat(bounds[:-1], lengths)
    with np.errstate(over="ignore"):
        mixed = (site_ids.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        mixed ^= (site_counts.astype(np.uint64) + np.uint64(1)) * np.uint64(0xC2B2AE3D27D4EB4F)
        mixed ^= (position.astype(np.uint64) + np.uint64(1)) * np.uint64(0x165667B19E3779F9)
        mixed ^= mixed >> np.uint64(29)
        mixed *= np.uint64(0xBF58476D1CE4E5B9)
        hashed = np.zeros(len(lengths), dtype=np.uint64)
        np.add.at(hashed, unit_ids, mixed)
    _, first, kind = np.unique(hashed, return_index=True, return_inverse=True)
    twin = first[kind]  # the first unit of each unit's kind
    same = np.array_equal(lengths, lengths[twin])
    if same:
        mate = bounds[twin[unit_ids]] + position
        same = np.array_equal(site_ids, site_ids[mate]) and np.array_equal(site_counts, site_counts[mate])
    if same:
        return kind.reshape(-1), first
    rows = np.full((len(lengths), 2 * int(lengths.max(initial=0))), -1, dtype=np.int64)
    rows[unit_ids, 2 * position], rows[unit_ids, 2 * position + 1] = site_ids, site_counts
    _, first, kind = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    return kind.reshape(-1), first


def _selected(counts: dict[tuple[str, int], int], sites: dict[tuple[str, int], Site], names: list[str]) -> bool:
    """Whether a unit shrinks a named layer (or one inside it) other than through its inputs."""
    shrinking = {owner(key[0]) for key in counts if sites[key].role != "input"}
    return any(m == n or m.startswith(n + ".") for m in shrinking for n in names)


def resolve_layer_names(model: nn.Module, layer_names: Iterable[str] | str | None) -> list[str] | None:
    """Normalise ``layer_names`` to dotted module paths; unknown names raise with near matches."""
    if layer_names is None:
        return None
    if isinstance(layer_names, str):
        layer_names = [layer_names]
    known = [name for name, _ in model.named_modules() if name]
    resolved = []
    for raw in layer_names:
        if not isinstance(raw, str):
            raise TypeError(f"layer_names must hold strings, got {raw!r}")
        name = raw.replace("/", ".")
        if name not in known:
            near = difflib.get_close_matches(name, known, n=5)
            hint = f"; did you mean {near}?" if near else f"; the model's layers include {known[:8]}"
            raise ValueError(f"layer_names entry {raw!r} is not a layer of the model{hint}")
        resolved.append(name)
    if not resolved:
        raise ValueError("layer_names is empty; pass None to prune every prunable layer")
    return resolved
