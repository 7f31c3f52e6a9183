"""``PruningOptions``: every option of ``compress_network`` in one value that checks itself.

The analogue of the name-value arguments of MATLAB's ``compressNetworkUsingTaylorPruning``.
Building one validates every value that needs no data, so an app can check a configuration
before it loads data or trains anything; ``compress_network`` checks the rest (the folders,
validation data) when it is called. ``PruningKeywords`` lists the same options for the keyword
form ``compress_network(..., goal=0.5)``, so that type checkers see them.

>>> PruningOptions(goal=0.5, increment=0.1).score_iterations(batches=40)
40
>>> PruningOptions(increment=0)
Traceback (most recent call last):
...
ValueError: increment must be a number in (0, 1], got 0
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypedDict

from prune_core.channels import ATTENTION_UNITS
from prune_core.checks import check_number, is_number
from prune_core.importance import CRITERIA
from prune_core.prunable import check_scoring
from prune_core.reporting import REPORTERS
from prune_core.selection import ALLOCATIONS

# num_importance_score_iterations="auto" scores on every mini-batch of the training data, at most this many.
AUTO_SCORE_ITERATIONS = 100
VERBOSITY = tuple(REPORTERS)
PLOTS = ("none", "pruning-progress")


@dataclass
class PruningOptions:
    """How ``compress_network`` prunes.

    Args:
        goal: stop once this fraction of the original learnables (MACs with ``budget="macs"``) is
            gone, in (0, 1].
        increment: remove at least this fraction of the original learnables (or MACs) per
            iteration, in (0, 1].
        budget: what ``goal``, ``increment`` and ``per_learnable`` count: "learnables" or "macs"
            (multiply-accumulates per example of the input, ``count_macs``).
        validation_threshold: stop when the validation objective crosses it (rises above it for a
            loss or error, falls below it for accuracy) and return the last network that did not;
            None never stops on validation.
        num_importance_score_iterations: mini-batches scored before each removal; "auto" scores
            every mini-batch, at most ``AUTO_SCORE_ITERATIONS``.
        layer_names: prune only filters that shrink these layers (dotted paths or "a/b"); None: all.
        criterion: a registered criterion: "taylor", "taylor-squared", "taylor-bn", "taylor-weight", "bn-scale",
            "l1", "random" or one's own.
        allocation: a registered allocation: "global", "uniform" or one's own.
        normalization: how scores are made comparable across layers: "mean" (each group's scores over
            their mean), "l2" (over their L2 norm) or "none".
        per_learnable: rank filters by score per learnable removed (per MAC with ``budget="macs"``).
        flops_weight: λ of the FLOPs-regularised criterion (score − λ·MACs of the filter over the
            largest filter's MACs, Molchanov et al. 2017), >= 0; 0 leaves the scores as they are.
        min_filter_fraction: every layer keeps at least this fraction of its filters, in [0, 1).
        round_to: every pruned layer keeps a multiple of this many channels (8 to 32 suit GPU
            kernels and tensor cores), >= 1; 1 keeps what the allocation chose.
        leaf_modules: module names or types the analysis does not trace into.
        attention_units: what an attention (timm's ViT family and Swin, nn.MultiheadAttention, Hugging Face's) loses:
            "heads" (whole heads, the default) or "head_dims" (the same dims of every head's query, key and
            value; the heads stay).
        compare_at: module names whose outputs the surgery check compares instead of the network's
            (outputs that are post-processed: a detector's backbone and heads); () compares the outputs.
        verify: check every surgery against the zeroed original.
        final_epochs: after the last pruning iteration, fine-tune the network to be returned for this
            many more epochs (0: none), with the same options; it is a history row of its own
            (``PruningInfo.final_fine_tune``).
        checkpoint_path: an existing folder that receives a checkpoint every
            ``checkpoint_frequency`` iterations; None writes none.
        checkpoint_frequency: a positive integer.
        resume_from: a checkpoint an earlier run of the same call wrote (``checkpoint_path``'s files):
            this run goes on from the iteration after it, with that run's history rows
            (``prune_core.resume``); None starts from the input network.
        checkpoint_fn: called with each checkpoint's path once the file is complete, on the thread
            that writes checkpoints in the background (the loop does not wait for it); an error it
            raises fails the run.
        verbosity: "summary" (a progress bar and the summary), "pruning" (a line per iteration),
            "training" (and fine-tuning progress) or "off".
        plots: "none" or "pruning-progress" (a figure in ``PruningInfo.figure``).
        plots_path: where to save that figure as well (its folder must exist).
        iteration_fn: called with each pruning iteration's history row as soon as it is recorded;
            returning True stops the run after that iteration ("Stopped by output function.", the
            network of the last iteration that did not cross the threshold or diverge returned).
    """

    goal: float = 1.0
    increment: float = 0.05
    budget: str = "learnables"
    validation_threshold: float | None = None
    num_importance_score_iterations: int | str = "auto"
    layer_names: list[str] | str | None = None
    criterion: str = "taylor"
    allocation: str = "global"
    normalization: str = "mean"
    per_learnable: bool = False
    flops_weight: float = 0.0
    min_filter_fraction: float = 0.0
    round_to: int = 1
    leaf_modules: Sequence[str | type] = ()
    attention_units: str = "heads"
    compare_at: Sequence[str] = ()
    verify: bool = True
    final_epochs: int = 0
    checkpoint_path: str | os.PathLike[str] | None = None
    checkpoint_frequency: int = 1
    resume_from: str | os.PathLike[str] | None = None
    checkpoint_fn: Callable[[Path], None] | None = None
    verbosity: str = "summary"
    plots: str = "none"
    plots_path: str | os.PathLike[str] | None = None
    iteration_fn: Callable[[dict[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        check_number("goal", self.goal, "(0, 1]")
        check_number("increment", self.increment, "(0, 1]")
        threshold = self.validation_threshold
        if threshold is not None and not is_number(threshold):
            raise TypeError(f"validation_threshold must be a number or None, got {threshold!r}")
        n = self.num_importance_score_iterations
        if n != "auto" and not (isinstance(n, int) and is_number(n, integer=True) and n >= 1):
            raise ValueError(f"num_importance_score_iterations must be 'auto' or a positive integer, got {n!r}")
        check_number("checkpoint_frequency", self.checkpoint_frequency, "[1, inf)", integer=True)
        check_number("final_epochs", self.final_epochs, "[0, inf)", integer=True)
        for name, allowed in (("verbosity", VERBOSITY), ("plots", PLOTS), ("attention_units", ATTENTION_UNITS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r} is not supported; use one of {allowed}")
        check_scoring(budget=self.budget, normalization=self.normalization, flops_weight=self.flops_weight)
        CRITERIA.check(self.criterion)
        ALLOCATIONS.check(self.allocation)
        check_number("min_filter_fraction", self.min_filter_fraction, "[0, 1)")
        check_number("round_to", self.round_to, "[1, inf)", integer=True)
        if self.plots == "pruning-progress":
            try:
                import matplotlib  # noqa: F401 (the figure needs it: say so before any work)
            except ImportError as exc:
                raise ValueError(
                    "plots='pruning-progress' needs matplotlib: pip install matplotlib, or use plots='none'"
                ) from exc
        for name in ("iteration_fn", "checkpoint_fn"):
            function = getattr(self, name)
            if function is not None and not callable(function):
                raise TypeError(f"{name} must be callable or None, got {type(function).__name__}")

    def score_iterations(self, batches: int) -> int:
        """Mini-batches to score before each removal, with ``batches`` per epoch of training data."""
        n = self.num_importance_score_iterations
        return min(n if isinstance(n, int) else AUTO_SCORE_ITERATIONS, batches)

    @classmethod
    def from_keywords(cls, pruning: PruningOptions | None, keywords: dict[str, Any]) -> PruningOptions:
        """``pruning`` (or the defaults) with ``keywords`` replacing its values; unknown names raise TypeError."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(keywords) - set(known))
        if unknown:
            raise TypeError(f"compress_network has no option {unknown[0]!r}; its options are {known}")
        if pruning is not None and not isinstance(pruning, PruningOptions):
            raise TypeError(f"pruning must be a prune_core.PruningOptions, got {type(pruning).__name__}")
        base = {f.name: getattr(pruning, f.name) for f in fields(cls)} if pruning is not None else {}
        return cls(**(base | keywords))


class PruningKeywords(TypedDict, total=False):
    """The fields of ``PruningOptions``, as keyword arguments of ``compress_network``."""

    goal: float
    increment: float
    budget: str
    validation_threshold: float | None
    num_importance_score_iterations: int | str
    layer_names: list[str] | str | None
    criterion: str
    allocation: str
    normalization: str
    per_learnable: bool
    flops_weight: float
    min_filter_fraction: float
    round_to: int
    leaf_modules: Sequence[str | type]
    attention_units: str
    compare_at: Sequence[str]
    verify: bool
    final_epochs: int
    checkpoint_path: str | os.PathLike[str] | None
    checkpoint_frequency: int
    resume_from: str | os.PathLike[str] | None
    checkpoint_fn: Callable[[Path], None] | None
    verbosity: str
    plots: str
    plots_path: str | os.PathLike[str] | None
    iteration_fn: Callable[[dict[str, Any]], None] | None
