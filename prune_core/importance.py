"""Filter importance: criteria registered by name, the activation Taylor criterion (Molchanov et al.
2017) and two baselines.

A criterion is a ``Criterion`` subclass registered with ``register_criterion(name, cls)``;
``TaylorPrunableNetwork`` and ``compress_network`` build one per channel graph (again after
every surgery) and ask it for one raw score per removal unit. One that ``needs_gradients``
records ordinary forward/backward passes inside ``recording(model)``: ``compress_network``
runs ``num_importance_score_iterations`` of them before every removal. "taylor", "l1" and
"random" are registered the same way a user's own criterion is.

Taylor: removing a filter is the same as zeroing its channel where it is consumed (the input
of every conv, conv-transpose or linear layer it feeds; the surgery tests check exactly
this). So the criterion is taken there, on the activation a layer receives: per example,
``|sum over the unit's positions of (activation x dLoss/dactivation)|``, the first-order change
of the loss when that channel is zeroed, averaged over the examples of every scored
mini-batch and summed over the consuming layers. (Molchanov's mean over positions rescales a
whole layer, which the per-layer normalisation below removes; the sum keeps consumers of
different sizes comparable.) ``TaylorAccumulator.hooks(model)`` collects it during ordinary
forward/backward passes: a forward pre-hook on each consuming layer hands it an alias of its
input (a view, so the gradient that reaches it is this layer's share only) and registers a
gradient hook that reduces (activation, gradient) to one number per example and unit and lets
both go. Nothing is kept between batches.

"taylor-squared" squares each example's contribution instead of taking its absolute value.
"taylor-bn" is Taylor-FO-BN (Molchanov et al. 2019): per scored batch, ``(γ·∂L/∂γ + β·∂L/∂β)``
of the BatchNorm channels that go with the unit, summed over those channels, squared and
averaged over batches; units with no BatchNorm keep the activation Taylor score.
"taylor-weight" is the Taylor criterion on the weights instead of the activations:
``|w x dLoss/dw|`` over every parameter entry of the unit (filters, consumers' input channels,
norm parameters), the gradient summed over the scored batches (Torch-Pruning's
``TaylorImportance``).

"bn-scale" is network slimming's criterion (Liu et al. 2017, Torch-Pruning's ``BNScaleImportance``): the
summed ``|γ|`` of the BatchNorm channels that go with the unit; units with no BatchNorm score as "l1".

Baselines: "l1" (sum of absolute filter weights of the unit's producers, Li et al. 2017) and
"random".

``normalize`` turns raw unit scores into comparable ones: the scores of each channel group
(units removed from the same producers) are divided by their mean magnitude (``"mean"``, the default),
by their L2 norm (``"l2"``, Molchanov et al. 2017) or kept raw (``"none"``); units that cannot
be removed get ``inf``. The L2 norm of n equal scores is sqrt(n) times one of them, so under
``"l2"`` a unit of a wide group scores below an equally important unit of a narrow one and a
global ranking drives every group towards the same width: a network that widens with depth
(32/64/128 channels) loses its last stage first, and collapses at 90% fewer MACs
(``benchmarks/criteria_2d.py``). Over the mean, a group's typical unit scores 1 whatever its
width.

>>> import torch, torch.nn as nn
>>> from prune_core.channels.graph import ChannelGraph
>>> net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 2))
>>> graph = ChannelGraph.build(net, torch.zeros(1, 1, 8))
>>> taylor = TaylorAccumulator(graph)
>>> with taylor.hooks(net):
...     nn.functional.cross_entropy(net(torch.randn(5, 1, 8)), torch.tensor([0, 1, 0, 1, 1])).backward()
>>> scores = normalize(graph, taylor.unit_scores())  # 4 filters, then the classifier's 2 outputs (kept)
>>> taylor.examples, scores.shape, bool(np.isinf(scores[4:]).all())
(5, (6,), True)

A criterion of one's own (here: the filters' largest absolute weight):

>>> class MaxWeight(Criterion):
...     def scores(self, model):
...         return self.graph_scores(model, lambda w: w.abs().flatten(1).amax(1))
>>> register_criterion("max-weight", MaxWeight)
>>> CRITERIA.get("max-weight")(graph, np.random.default_rng(0)).scores(net).shape  # a score per unit
(6,)
>>> CRITERIA.unregister("max-weight")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from prune_core.channels import ChannelGraph, layer_family, out_proj_called, owner
from prune_core.finetune import Ranks
from prune_core.registry import Registry

# What each normalisation divides a group's scores by (0: they stay as they are).
_SCALES: dict[str, Callable[[np.ndarray], float]] = {
    "mean": lambda values: float(np.abs(values).mean()),
    "l2": lambda values: float(np.linalg.norm(values)),
    "none": lambda values: 0.0,
}
NORMALIZATIONS = tuple(_SCALES)


class Criterion:
    """How important each removal unit of ``graph`` is; subclass it and register it by name.

    Override ``scores(model)``: one raw score per unit of ``graph`` (lower goes first; scores of
    units that cannot be removed are ignored). A criterion with ``needs_gradients = True``
    overrides ``recording`` and ``examples`` too. ``normalized = False`` skips the per-group
    normalisation. ``rng`` is the random generator of the pruning run (seeded by its seed).
    """

    needs_gradients: ClassVar[bool] = False
    normalized: ClassVar[bool] = True

    def __init__(self, graph: ChannelGraph, rng: np.random.Generator) -> None:
        self.graph, self.rng = graph, rng

    @contextmanager
    def recording(self, model: nn.Module) -> Iterator[list[torch.Tensor]]:
        """Record the forward/backward passes run inside; yields the tensors whose gradients it needs."""
        yield []

    @property
    def examples(self) -> int:
        """Examples recorded since this criterion was built."""
        return 0

    def scores(self, model: nn.Module) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement scores(model)")

    def all_reduce(self, ranks: Ranks) -> None:
        """In a data-parallel run, combine what each rank recorded from its share of the scoring batches, so
        that ``scores`` is the same on every rank, and what one process scoring the whole batches gives.
        A criterion that scores from the weights alone (the same on every rank) needs nothing; one that
        ``needs_gradients`` overrides this (``check_ranks`` refuses it before the run otherwise)."""

    @classmethod
    def check_ranks(cls, ranks: Ranks, name: str) -> None:
        """Refuse a criterion that records gradients but cannot combine them across ``ranks``."""
        if ranks.distributed and cls.needs_gradients and cls.all_reduce is Criterion.all_reduce:
            raise ValueError(
                f"criterion {name!r} records gradients but does not say how to combine them across the "
                f"{ranks.world} processes of this run: override Criterion.all_reduce, or run in one process"
            )

    def graph_scores(self, model: nn.Module, per_filter: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        """Sum ``per_filter(filters)`` (one value per filter; ``filters`` is the weight with the filters
        along dim 0) over each unit's producer layers: the usual shape of a weight-based criterion."""
        modules = dict(model.named_modules())
        removable = _removable(self.graph)
        out = np.zeros(len(self.graph.units))
        for fqn, units in self.graph.producer_units.items():
            if not removable[units].any():
                continue
            name, filter_dim = _filters(modules[fqn])
            weight = getattr(modules[fqn], name).detach()
            values = per_filter(weight.movedim(filter_dim, 0)).double().cpu().numpy()
            # the unit of each filter: several filters per unit where a unit is an attention head
            units = self.graph.site_units.get((f"{fqn}.{name}", filter_dim), units)
            keep = units >= 0
            np.add.at(out, units[keep], values[keep])
        return out


CRITERIA: Registry[type[Criterion]] = Registry("criterion", "prune_core.register_criterion")


def register_criterion(name: str, criterion: type[Criterion], *, replace: bool = False) -> None:
    """Make ``criterion`` (a ``Criterion`` subclass) available as ``criterion=name``."""
    if not (isinstance(criterion, type) and issubclass(criterion, Criterion)):
        raise TypeError(f"criterion {name!r} must be a subclass of prune_core.Criterion, got {criterion!r}")
    CRITERIA.register(name, criterion, replace=replace)


def _removable(graph: ChannelGraph) -> np.ndarray:
    """Boolean per unit, with a trailing False so that index -1 (no unit) reads as not removable."""
    return np.array([u.removable for u in graph.units] + [False])


def _filters(producer: nn.Module) -> tuple[str, int]:
    """The name of the weight holding a producer layer's filters, and the dim they lie along (its family's)."""
    family = layer_family(producer)
    return family.filters if family is not None else ("weight", 0)


def input_channel_dim(module: nn.Module, ndim: int) -> int:
    """The channel dim of a consuming layer's input of ``ndim`` dims (its family's ``input_dim``): before the
    spatial dims for a convolution, the last for a linear layer or a multi-head attention."""
    family = layer_family(module)
    if family is None:
        raise ValueError(f"{type(module).__name__} has no family: its input channels cannot be scored")
    return family.channel_dim_of_input(module, ndim)


class TaylorAccumulator:
    """Per consuming layer: sums over examples of |first-order loss change| of zeroing each unit
    (its square with ``squared=True``)."""

    def __init__(self, graph: ChannelGraph, squared: bool = False) -> None:
        self.graph, self.squared = graph, squared
        removable = _removable(graph)
        # per consuming layer: its units, where they lie among its input channels, and how many those are
        self.consumers: dict[str, tuple[np.ndarray, torch.Tensor, torch.Tensor, int]] = {}
        for key, site in graph.sites.items():
            units = graph.site_units[key]
            if site.role == "input" and site.kind == "parameter" and removable[units].any():
                positions = np.flatnonzero(units >= 0)
                local, inverse = np.unique(units[positions], return_inverse=True)
                self.consumers[owner(key[0])] = (
                    local,
                    torch.as_tensor(positions),
                    torch.as_tensor(inverse),
                    units.size,
                )
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    @property
    def examples(self) -> int:
        """Examples scored so far (by the consuming layer that saw the most)."""
        return max(self.counts.values(), default=0)

    def _record(self, fqn: str, module: nn.Module, activation: torch.Tensor, gradient: torch.Tensor) -> None:
        local, positions, inverse, size = self.consumers[fqn]
        cdim = input_channel_dim(module, activation.ndim)
        n, channels = activation.shape[0], activation.shape[cdim]
        if channels != size:  # a convolution subclass whose forward changes its input before the convolution
            raise ValueError(
                f"the input of `{fqn}` has {channels} channels where its weight takes {size}: its forward changes the "
                "channels before the layer uses them, so the Taylor criterion cannot be taken there; keep it out of "
                f"pruning (leaf_modules=[{fqn!r}]) or use a criterion without gradients (criterion='l1')"
            )
        a = activation.movedim(cdim, -1).reshape(n, -1, channels)
        g = gradient.movedim(cdim, -1).reshape(n, -1, channels)
        per_channel = torch.einsum("nsc,nsc->nc", a, g).index_select(1, positions.to(a.device))
        per_unit = per_channel.new_zeros(n, local.size).index_add_(1, inverse.to(a.device), per_channel)
        total = (per_unit.square_() if self.squared else per_unit.abs_()).sum(0).to(torch.float64)
        self.sums[fqn] = self.sums[fqn] + total if fqn in self.sums else total
        self.counts[fqn] = self.counts.get(fqn, 0) + n

    @contextmanager
    def hooks(self, model: nn.Module) -> Iterator[list[torch.Tensor]]:
        """Collect scores from the forward/backward passes run inside; yields the live input aliases."""
        modules = dict(model.named_modules())
        live: list[torch.Tensor] = []

        def pre_hook(fqn: str) -> Callable[[nn.Module, tuple[Any, ...]], tuple[Any, ...] | None]:
            def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
                x = args[0] if args else None
                if not isinstance(x, torch.Tensor) or not x.requires_grad or x.ndim < 2:
                    return None
                alias, activation = x.view_as(x), x.detach()
                live.append(alias)
                alias.register_hook(lambda gradient: self._record(fqn, module, activation, gradient))
                # an attention's query, key and value: one tensor, read through the alias in every place
                return tuple(alias if a is x else a for a in args)

            return hook

        handles = [modules[fqn].register_forward_pre_hook(pre_hook(fqn)) for fqn in self.consumers]
        try:
            with out_proj_called(model):  # so that the hooks see the heads' outputs of nn.MultiheadAttention
                yield live
        finally:
            for handle in handles:
                handle.remove()
            live.clear()

    def all_reduce(self, ranks: Ranks) -> None:
        """The sums and example counts of every rank, added up (see ``Criterion.all_reduce``)."""
        parts = []  # per consuming layer: its sums, then its example count
        for fqn, (local, *_) in self.consumers.items():
            total = self.sums.get(fqn, torch.zeros(len(local), dtype=torch.float64)).cpu()
            parts.append(torch.cat([total, torch.tensor([self.counts.get(fqn, 0)], dtype=torch.float64)]))
        totals = ranks.sum(torch.cat(parts)).split([len(part) for part in parts])
        for fqn, total in zip(self.consumers, totals, strict=True):
            if total[-1] > 0:
                self.sums[fqn], self.counts[fqn] = total[:-1], int(total[-1])

    def unit_scores(self) -> np.ndarray:
        """Raw score of every unit: the mean over examples, summed over consuming layers (0 before any batch)."""
        out = np.zeros(len(self.graph.units))
        for fqn, total in self.sums.items():
            np.add.at(out, self.consumers[fqn][0], total.cpu().numpy() / self.counts[fqn])
        return out


def normalize(graph: ChannelGraph, raw: np.ndarray, normalization: str = "mean") -> np.ndarray:
    """Scores comparable across layers (``inf`` for units that cannot be removed); see the module docstring.
    ``normalization`` is one of ``NORMALIZATIONS`` (``check_scoring`` refuses any other)."""
    scores = np.full(len(graph.units), np.inf)
    groups: dict[tuple[str, ...], list[int]] = {}
    for unit in graph.units:
        if unit.removable:
            groups.setdefault(unit.producers, []).append(unit.id)
    for ids in groups.values():
        values = raw[ids]
        norm = _SCALES[normalization](values)
        scores[ids] = values / norm if norm > 0 else values
    return scores


class TaylorCriterion(Criterion):
    """ "taylor": the activation Taylor criterion (see the module docstring)."""

    needs_gradients = True
    squared: ClassVar[bool] = False

    def __init__(self, graph: ChannelGraph, rng: np.random.Generator) -> None:
        super().__init__(graph, rng)
        self.accumulator = TaylorAccumulator(graph, squared=self.squared)

    def recording(self, model: nn.Module) -> AbstractContextManager[list[torch.Tensor]]:  # type: ignore[override]
        return self.accumulator.hooks(model)

    @property
    def examples(self) -> int:
        return self.accumulator.examples

    def scores(self, model: nn.Module) -> np.ndarray:
        return self.accumulator.unit_scores()

    def all_reduce(self, ranks: Ranks) -> None:
        self.accumulator.all_reduce(ranks)


class SquaredTaylorCriterion(TaylorCriterion):
    """ "taylor-squared": the activation Taylor criterion with each example's contribution squared."""

    squared = True


def _channel_weights(graph: ChannelGraph) -> dict[str, np.ndarray]:
    """The unit of each entry of every per-channel ``weight`` that follows the channels (a norm's ``γ``), by
    owning module."""
    return {
        owner(name): graph.site_units[(name, 0)]
        for (name, dim), site in graph.sites.items()
        if dim == 0 and site.role == "follower" and name.endswith(".weight")
    }


def _affine_batchnorms(model: nn.Module, names: Iterable[str]) -> dict[str, nn.modules.batchnorm._NormBase]:
    """Those of the modules ``names`` that are BatchNorms (or InstanceNorms) with a ``γ`` and ``β``."""
    modules = dict(model.named_modules())
    return {
        fqn: modules[fqn]
        for fqn in names
        if isinstance(modules.get(fqn), nn.modules.batchnorm._NormBase) and modules[fqn].affine
    }


def _filter_l1(filters: torch.Tensor) -> torch.Tensor:
    """Each filter's summed absolute weights (filters along dim 0)."""
    return filters.abs().flatten(1).sum(1)


class BatchNormTaylorCriterion(TaylorCriterion):
    """ "taylor-bn": Taylor-FO-BN on the BatchNorm after each filter (see the module docstring)."""

    def __init__(self, graph: ChannelGraph, rng: np.random.Generator) -> None:
        super().__init__(graph, rng)
        self.affine = _channel_weights(graph)
        self.per_batch: list[np.ndarray] = []  # (γ·∂L/∂γ + β·∂L/∂β) per unit, one array per scored batch
        self.covered = np.zeros(len(graph.units), dtype=bool)

    @contextmanager
    def recording(self, model: nn.Module) -> Iterator[list[torch.Tensor]]:
        norms = _affine_batchnorms(model, self.affine)
        grads: dict[tuple[str, str], torch.Tensor] = {}
        handles = [
            getattr(bn, part).register_hook(lambda g, key=(fqn, part): grads.__setitem__(key, g.detach()))
            for fqn, bn in norms.items()
            for part in ("weight", "bias")
        ]
        try:
            with self.accumulator.hooks(model) as live:
                live += [getattr(bn, part) for bn in norms.values() for part in ("weight", "bias")]
                yield live
        finally:
            for handle in handles:
                handle.remove()
        if grads:
            batch = np.zeros(len(self.graph.units))
            for fqn, bn in norms.items():
                if (fqn, "weight") not in grads:
                    continue
                value = bn.weight.detach() * grads[(fqn, "weight")] + bn.bias.detach() * grads[(fqn, "bias")]
                units = self.affine[fqn]
                keep = units >= 0
                np.add.at(batch, units[keep], value.double().cpu().numpy()[keep])
                self.covered[units[keep]] = True
            self.per_batch.append(batch)

    def all_reduce(self, ranks: Ranks) -> None:
        """Every batch's BatchNorm terms summed across the ranks before they are squared: the terms of the
        whole batch, as one process computes them."""
        super().all_reduce(ranks)
        count = int(ranks.sum(torch.tensor([len(self.per_batch)]))[0])
        if count != ranks.world * len(self.per_batch):
            raise RuntimeError(f"taylor-bn: the ranks scored different numbers of batches ({count} in all)")
        if self.per_batch:
            terms = ranks.sum(torch.from_numpy(np.stack(self.per_batch)))
            self.per_batch = list(terms.numpy())
        self.covered = ranks.sum(torch.from_numpy(self.covered.astype(np.float64))).numpy() > 0

    def scores(self, model: nn.Module) -> np.ndarray:
        taylor = self.accumulator.unit_scores()
        squares = sum((batch**2 for batch in self.per_batch), np.zeros(len(self.graph.units)))
        return np.where(self.covered, squares / max(len(self.per_batch), 1), taylor)


class WeightTaylorCriterion(Criterion):
    """ "taylor-weight": first-order Taylor on the weights (Molchanov et al. 2019, as Torch-Pruning's
    ``TaylorImportance``): ``|w x g|`` summed over every parameter entry that goes with the unit
    (its filters, its consumers' input channels, its norm parameters), ``g`` the gradient summed
    over the scored batches."""

    needs_gradients = True

    def __init__(self, graph: ChannelGraph, rng: np.random.Generator) -> None:
        super().__init__(graph, rng)
        self.parameter_sites = [
            (name, dim, units)
            for (name, dim), units in graph.site_units.items()
            if graph.sites[(name, dim)].kind == "parameter"
        ]
        self.gradients: dict[str, torch.Tensor] = {}
        self.batches = 0

    @contextmanager
    def recording(self, model: nn.Module) -> Iterator[list[torch.Tensor]]:
        parameters = dict(model.named_parameters())
        wanted = {name: parameters[name] for name, _, _ in self.parameter_sites if name in parameters}
        seen: dict[str, torch.Tensor] = {}
        handles = [
            p.register_hook(lambda g, name=name: seen.__setitem__(name, g.detach())) for name, p in wanted.items()
        ]
        try:
            yield list(wanted.values())
        finally:
            for handle in handles:
                handle.remove()
        for name, gradient in seen.items():
            total = self.gradients.get(name)
            self.gradients[name] = gradient.clone() if total is None else total + gradient
        self.batches += bool(seen)

    @property
    def examples(self) -> int:
        """Scored batches (each holds at least one example)."""
        return self.batches

    def all_reduce(self, ranks: Ranks) -> None:
        """The summed gradients of every rank added up: the gradients of the whole batches."""
        for name in sorted(self.gradients):
            self.gradients[name] = ranks.sum(self.gradients[name])

    def scores(self, model: nn.Module) -> np.ndarray:
        parameters = dict(model.named_parameters())
        out = np.zeros(len(self.graph.units))
        for name, dim, units in self.parameter_sites:
            if name not in self.gradients:
                continue
            product = (parameters[name].detach() * self.gradients[name]).abs().movedim(dim, 0)
            values = product.reshape(product.shape[0], -1).sum(1).double().cpu().numpy()
            keep = units >= 0
            np.add.at(out, units[keep], values[keep])
        return out


class L1Criterion(Criterion):
    """ "l1": the summed absolute weights of a unit's filters (Li et al. 2017)."""

    def scores(self, model: nn.Module) -> np.ndarray:
        return self.graph_scores(model, _filter_l1)


class BatchNormScaleCriterion(Criterion):
    """ "bn-scale": the summed ``|γ|`` of the BatchNorm channels that go with a unit (Liu et al. 2017, network
    slimming; Torch-Pruning's ``BNScaleImportance``); a unit with no affine BatchNorm scores its filters' L1."""

    def scores(self, model: nn.Module) -> np.ndarray:
        channels = _channel_weights(self.graph)
        scales = np.zeros(len(self.graph.units))
        covered = np.zeros(len(self.graph.units), dtype=bool)
        for fqn, norm in _affine_batchnorms(model, channels).items():
            units = channels[fqn]
            keep = units >= 0
            np.add.at(scales, units[keep], norm.weight.detach().abs().double().cpu().numpy()[keep])
            covered[units[keep]] = True
        return np.where(covered, scales, self.graph_scores(model, _filter_l1))


class RandomCriterion(Criterion):
    """ "random": uniform random scores, the baseline every criterion must beat."""

    normalized = False

    def scores(self, model: nn.Module) -> np.ndarray:
        return self.rng.random(len(self.graph.units))


register_criterion("taylor", TaylorCriterion)
register_criterion("taylor-squared", SquaredTaylorCriterion)
register_criterion("taylor-bn", BatchNormTaylorCriterion)
register_criterion("taylor-weight", WeightTaylorCriterion)
register_criterion("l1", L1Criterion)
register_criterion("bn-scale", BatchNormScaleCriterion)
register_criterion("random", RandomCriterion)
