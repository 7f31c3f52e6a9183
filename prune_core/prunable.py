"""``TaylorPrunableNetwork``: Taylor scores and pruning steps for custom training loops.

The analogue of MATLAB's ``taylorPrunableNetwork`` / ``updateScore`` / ``updatePrunables``.
``.model`` is a plain ``nn.Module`` at every point (train it, save it, use it as usual).

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Conv1d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
>>> prunable = TaylorPrunableNetwork(net, example_input=torch.zeros(1, 1, 8))
>>> prunable.num_prunables
7
>>> x, y = torch.randn(16, 1, 8), torch.randint(0, 2, (16,))
>>> loss = prunable.update_score(x, y, "crossentropy")      # forward + backward, scores accumulate
>>> with prunable.scoring():                                  # or score your own passes
...     nn.functional.cross_entropy(prunable.model(x), y).backward()
>>> prunable.prune(max_to_prune=3)
3
>>> prunable.num_prunables, prunable.model[0].out_channels
(4, 5)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from prune_core.channels import NETWORK_OUTPUT, ChannelGraph, macs_per_weight, remove_units
from prune_core.checks import check_number
from prune_core.finetune import LossFn, Ranks, forward_outputs, resolve_loss, to_device
from prune_core.importance import CRITERIA, NORMALIZATIONS, Criterion, normalize
from prune_core.rounding import round_kept
from prune_core.selection import ALLOCATIONS, choose_units

BUDGETS = ("learnables", "macs")


def check_scoring(*, budget: str, normalization: str, flops_weight: float) -> None:
    """The checks of the scoring settings ``TaylorPrunableNetwork`` and ``PruningOptions`` share."""
    if budget not in BUDGETS:
        raise ValueError(f"budget {budget!r} is not supported; use one of {BUDGETS}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization {normalization!r} is not supported; use one of {NORMALIZATIONS}")
    check_number("flops_weight", flops_weight, "[0, inf)")


class TaylorPrunableNetwork:
    """Wraps ``model`` for score accumulation and pruning (see the module docstring).

    Args:
        model: the network; wrapping analyses it and leaves it as it is, ``prune`` shrinks it.
        example_input: a tensor or tuple of tensors the model runs on (for the channel analysis).
        layer_names, leaf_modules, attention_units, compare_at: as in ``ChannelGraph.build`` (``compare_at``: the
            modules whose outputs the surgery check compares, for outputs that are post-processed).
        criterion: a registered criterion name: "taylor" (default), "l1", "random" or one's own
            (``prune_core.register_criterion``).
        normalization: "mean" (default), "l2" or "none" (see ``prune_core.importance``).
        per_learnable: order filters by score per learnable removed.
        allocation: a registered allocation name: "global" (default: lowest scores across all
            layers), "uniform" (every group loses the same share of its filters; learnables budgets
            only) or one's own (``prune_core.register_allocation``).
        seed: seeds the generator a criterion may use ("random").
        verify: check every surgery (see ``remove_units``); False skips it.
        budget: what ``choose(learnables=N)`` and ``per_learnable`` count: "learnables" (default)
            or "macs" (multiply-accumulates on ``example_input``, per example).
        flops_weight: λ of the FLOPs-regularised criterion (Molchanov et al. 2017): each unit's
            score minus λ times its MACs over the largest unit's MACs; 0 (default) leaves scores as
            they are.
        round_to: every layer ``choose`` shrinks keeps a multiple of this many channels
            (``prune_core.rounding``); 1 (default) keeps what the allocation chose.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: Any,
        *,
        layer_names: Iterable[str] | None = None,
        leaf_modules: Iterable[str | type] = (),
        attention_units: str = "heads",
        compare_at: Iterable[str] = (),
        criterion: str = "taylor",
        normalization: str = "mean",
        per_learnable: bool = False,
        allocation: str = "global",
        seed: int = 0,
        verify: bool = True,
        budget: str = "learnables",
        flops_weight: float = 0.0,
        round_to: int = 1,
    ) -> None:
        check_scoring(budget=budget, normalization=normalization, flops_weight=flops_weight)
        check_number("round_to", round_to, "[1, inf)", integer=True)
        self._criterion_class = CRITERIA.get(criterion)
        self._allocate = ALLOCATIONS.get(allocation)
        self.model = model
        self.example_input = example_input
        self.layer_names = [layer_names] if isinstance(layer_names, str) else layer_names
        self.layer_names = None if self.layer_names is None else list(self.layer_names)
        self.leaf_modules, self.attention_units = tuple(leaf_modules), attention_units
        self.compare_at = (compare_at,) if isinstance(compare_at, str) else tuple(compare_at)
        self.criterion, self.normalization, self.per_learnable = criterion, normalization, per_learnable
        self.allocation, self.verify = allocation, verify
        self.budget, self.flops_weight, self.round_to = budget, float(flops_weight), round_to
        self._random = np.random.default_rng(seed)
        self.graph = self._build()
        # MACs per weight entry: constant under filter pruning (output positions do not change)
        self.macs_per_weight = macs_per_weight(model, example_input) if budget == "macs" or self.flops_weight else None
        self.scorer: Criterion = self._criterion_class(self.graph, self._random)

    def _build(self) -> ChannelGraph:
        return ChannelGraph.build(
            self.model,
            self.example_input,
            self.layer_names,
            self.leaf_modules,
            compare_at=self.compare_at,
            attention_units=self.attention_units,
        )

    @property
    def needs_gradients(self) -> bool:
        """Whether the criterion scores from forward/backward passes (``update_score``, ``score_batches``)."""
        return self.scorer.needs_gradients

    @property
    def num_prunables(self) -> int:
        """Number of filters (removal units) that can still be pruned, every layer keeping one."""
        return len(choose_units(self.graph, self._removable_first()))

    def _removable_first(self) -> np.ndarray:
        """Scores that let an allocation take any removable unit and never another."""
        return np.array([0.0 if u.removable else np.inf for u in self.graph.units])

    @contextmanager
    def scoring(self) -> Iterator[list[torch.Tensor]]:
        """Accumulate scores from the forward/backward passes run inside the block."""
        with self.scorer.recording(self.model) as live:
            yield live

    def update_score(
        self, inputs: Any, targets: Any, loss: str | Callable[..., torch.Tensor] = "crossentropy"
    ) -> float:
        """One scoring pass on a batch (no weight update, gradients of the weights untouched); returns the loss.

        ``inputs``/``targets`` are tensors or tuples of tensors; ``loss`` a name from
        ``prune_core.finetune`` losses or a callable ``loss(*outputs, *targets)``.
        """
        inputs = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
        targets = targets if isinstance(targets, (tuple, list)) else (targets,)
        return self.score_batch(tuple(inputs), tuple(targets), resolve_loss(loss))

    def score_batch(
        self, inputs: tuple[torch.Tensor, ...], targets: tuple[torch.Tensor, ...], loss_fn: LossFn, share: float = 1.0
    ) -> float:
        """``update_score`` with a resolved loss function; the gradients are those of ``share`` x the loss (a
        rank's share of a batch split among ranks)."""
        with self.scoring() as live:
            value = loss_fn(forward_outputs(self.model, inputs), targets)
            if live:
                torch.autograd.grad(value * share, live, allow_unused=True)
        return float(value.detach())

    def score_batches(
        self, batches: Iterable[Any], loss_fn: LossFn, device: torch.device | None = None, ranks: Ranks | None = None
    ) -> bool:
        """Scoring passes over ``batches`` (``(inputs, targets)`` tuples of tensors) in eval mode, the model's
        mode restored after; False as soon as a loss is not finite (what ``compress_network`` runs).

        With ``ranks`` of a data-parallel run, ``batches`` are this rank's shares of the scoring batches:
        the criterion's records are then summed across the ranks (``Criterion.all_reduce``), so that every
        rank holds the scores one process gets from the whole batches, and all return False if one saw a
        loss that is not finite."""
        ranks = Ranks() if ranks is None else ranks
        was_training = self.model.training
        self.model.eval()
        finite = True
        try:
            for inputs, targets in batches:
                if device is not None:
                    inputs, targets = to_device(inputs, device), to_device(targets, device)
                if not math.isfinite(self.score_batch(inputs, targets, loss_fn, 1 / ranks.world)):
                    finite = False
                    break
        finally:
            self.model.train(was_training)
        if ranks.distributed:
            finite = not ranks.sum(torch.tensor([0.0 if finite else 1.0]))[0]
            self.scorer.all_reduce(ranks)
        return finite

    def scores(self) -> np.ndarray:
        """One score per unit of ``graph`` under the criterion (``inf`` where not removable)."""
        raw = np.asarray(self.scorer.scores(self.model), dtype=np.float64)
        if raw.shape != (len(self.graph.units),):
            raise ValueError(
                f"criterion {self.criterion!r} returned {raw.shape} scores for {len(self.graph.units)} units"
            )
        if self.scorer.normalized:
            scores = normalize(self.graph, raw, self.normalization)
        else:
            scores = np.where([u.removable for u in self.graph.units], raw, np.inf)
        if self.flops_weight:
            macs = np.array([self.graph.unit_cost(u.id, self.macs_per_weight) for u in self.graph.units])
            scores = scores - self.flops_weight * macs / max(macs.max(initial=0.0), 1e-12)
        return scores

    def choose(
        self,
        *,
        max_units: int | None = None,
        learnables: int | None = None,
        floors: dict[tuple[str, int], int] | None = None,
    ) -> list[int]:
        """The units ``prune`` would remove under a count or learnables budget (MACs with ``budget="macs"``)."""
        extra = {"weights": self.macs_per_weight} if self.budget == "macs" else {}
        scores = self.scores()
        chosen = self._allocate(
            self.graph,
            scores,
            learnables=learnables,
            max_units=max_units,
            per_learnable=self.per_learnable,
            floors=floors,
            **extra,
        )
        return round_kept(self.graph, scores, list(chosen), round_to=self.round_to, floors=floors, progress=True)

    def remove(self, unit_ids: list[int]) -> None:
        """Remove these units of ``graph``, update the graph to the smaller model and reset the scores."""
        if unit_ids:
            remove_units(self.model, self.graph, unit_ids, verify=self.verify)
            self.graph = self.graph.after_removal(unit_ids, self.model) or self._build()
        self.scorer = self._criterion_class(self.graph, self._random)

    def prune(self, max_to_prune: int = 8) -> int:
        """Remove up to ``max_to_prune`` lowest-scoring filters; returns how many went."""
        check_number("max_to_prune", max_to_prune, "[1, inf)", integer=True)
        self.require_prunable()
        if self.scorer.needs_gradients and self.scorer.examples == 0:
            raise RuntimeError("no scores yet: call update_score(...) or run a pass inside scoring() before prune()")
        chosen = self.choose(max_units=max_to_prune)
        self.remove(chosen)
        return len(chosen)

    def require_prunable(self) -> None:
        """Raise ValueError, with the analysis' reasons, when no filter can be pruned."""
        if choose_units(self.graph, self._removable_first(), max_units=1):  # one is enough: no need to count all
            return
        inner = [u for u in self.graph.units if u.reasons != (NETWORK_OUTPUT,)]  # not just the network's outputs
        reasons = sorted({r for u in inner for r in u.reasons})
        if not inner:
            why = (
                "its only filters are the network's outputs, which are never pruned"
                if self.graph.units
                else "it has no convolution filters or hidden units the analysis can see"
            )
            if self.graph.unsupported:
                why += f" (operations it does not understand: {', '.join(self.graph.unsupported[:5])})"
        elif not reasons:
            why = "every prunable layer has a single filter left"
        else:
            why = "; ".join(reasons[:5])
        raise ValueError(
            f"model has nothing to prune: {why}. Run prune_core.analyze_compression(model, example) for the full report"
        )
