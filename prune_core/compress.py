"""``compress_network``: iterative Taylor pruning with fine-tuning (MATLAB's ``compressNetworkUsingTaylorPruning``).

Each pruning iteration scores the filters on ``num_importance_score_iterations`` mini-batches,
removes the lowest-scoring ones across all groups until ``k x increment`` of the *original*
learnables is gone in all after iteration ``k`` (so "up to 1/increment iterations", as MATLAB
says: removals come in whole filters, and a step that overshoots its target makes the next
one smaller instead of shifting every later row), or nothing more can go (every layer keeps
a filter); it rebuilds the optimizer, fine-tunes with ``options``, validates and checkpoints (in
the background, one write in flight; ``compress_network`` returns once every checkpoint is
written). It stops when

- the learnables reduction reaches ``goal`` -> "Learnables reduction goal reached."; with
  ``budget="macs"``, goal and increment count MACs per example (``count_macs`` on the first
  training inputs) -> "MACs reduction goal reached.";
- nothing more can be removed -> "Maximum compression reached.";
- the validation objective crosses ``validation_threshold`` (rises above it for the loss and
  error metrics, falls below it for accuracy) -> "Validation threshold crossed." and the
  *previous* network, the last that did not cross, is returned;
- the training loss is not finite -> "Training loss is not finite." and the last network
  that trained normally is returned;
- ``options.output_fn`` returns True, or ``iteration_fn`` returns True for an iteration's row ->
  "Stopped by output function.", or Ctrl-C -> "Stopped manually.": the current network is
  returned, history intact.

With ``final_epochs``, the network to be returned is then fine-tuned for that many more epochs
(unless the run was stopped manually): one more history row, with no filters removed, whose
iteration is ``PruningInfo.final_iteration``. With ``options.distillation``, every fine-tuning
learns from the input network as the teacher (a frozen copy, in eval mode).

With ``resume_from``, a checkpoint of an earlier run of the same call, the run goes on from the
iteration after it, that run's history rows first (``prune_core.resume``).

Called on every process of a ``torch.distributed`` group (``torchrun``, ``srun``), it runs
data-parallel (``prune_core.finetune.ranks``): each rank scores and fine-tunes on its share of
every mini-batch (``DistributedDataParallel``, wrapped again after every surgery); the scores,
losses and metrics are summed across ranks, and the units removed and every stop are rank 0's,
so every rank removes the same units and returns the same network and the same ``PruningInfo``
(rank 0's). Only rank 0 prints, plots, checkpoints and calls ``iteration_fn``/``output_fn``.
An error on one rank fails every rank with that error; so does Ctrl-C (``KeyboardInterrupt``
on every rank, instead of the network so far: the ranks may have stopped at different points).

The input model is not modified: it is copied first. See ``PruningInfo`` for what comes back.
The options are a ``PruningOptions`` (``pruning=``), or its fields as keywords (``goal=0.5``),
or both (the keywords win).

>>> import torch, torch.nn as nn
>>> from prune_core.finetune.options import TrainingOptions
>>> torch.manual_seed(0) and None
>>> net = nn.Sequential(nn.Conv1d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
>>> x, y = torch.randn(64, 1, 8), torch.randint(0, 2, (64,))
>>> opts = TrainingOptions("adam", max_epochs=1, mini_batch_size=16)
>>> pruned, info = compress_network(net, x, y, "crossentropy", opts, goal=0.5, increment=0.25)
Compressed network has 61.5% fewer learnable parameters.
Pruning compressed 2 layers: "0","3"
>>> info.stop_reason, list(info.pruning_history["iteration"]), pruned[0].out_channels
('Learnables reduction goal reached.', [0, 1, 2], 3)
>>> from prune_core.pruning_options import PruningOptions
>>> settings = PruningOptions(goal=0.5, increment=0.25, verbosity="off")
>>> compress_network(net, x, y, "crossentropy", opts, pruning=settings)[1].stop_reason
'Learnables reduction goal reached.'
>>> _, info = compress_network(net, x, y, "crossentropy", opts, goal=0.5, budget="macs", verbosity="off")
>>> info.stop_reason, info.macs_reduction >= 0.5, list(info.pruning_history["macs"])[:2]
('MACs reduction goal reached.', True, [240.0, 210.0])
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Unpack, overload

import torch
from torch import nn

from prune_core.channels import PrunedMacs
from prune_core.checkpoint_writer import CheckpointWriter
from prune_core.finetune import (
    DataSource,
    FineTuneOutcome,
    LossFn,
    Ranks,
    TrainingLog,
    TrainingOptions,
    as_source,
    check_ranks,
    evaluate,
    fine_tune,
    resolve_loss,
)
from prune_core.importance import CRITERIA
from prune_core.prunable import TaylorPrunableNetwork
from prune_core.pruning_info import PruningInfo, PruningRecord, checkpoint_name, learnables
from prune_core.pruning_options import PruningKeywords, PruningOptions
from prune_core.resume import ResumePoint, read_resume_point, resume_extra
from prune_core.selection import filter_floors
from prune_core.stop_reason import StopReason

Loss = str | Callable[..., torch.Tensor]


def _parse_positional(args: tuple[Any, ...]) -> tuple[Any, Loss, TrainingOptions | None]:
    """(targets, loss, options) from ``(loss[, options])`` or ``(targets, loss[, options])``."""
    if not args:
        raise TypeError(
            "compress_network needs a loss: compress_network(model, data, loss, options) "
            "or compress_network(model, predictors, targets, loss, options)"
        )
    if len(args) > 3:
        raise TypeError(f"compress_network takes at most 5 positional arguments, got {len(args) + 2}")
    if isinstance(args[0], str) or (callable(args[0]) and not isinstance(args[0], torch.Tensor)):
        if len(args) == 3:
            raise TypeError("with data as one argument, pass compress_network(model, data, loss, options)")
        return None, args[0], args[1] if len(args) > 1 else None
    if len(args) == 1:
        raise TypeError("compress_network(model, predictors, targets, loss, options) needs a loss after the targets")
    return args[0], args[1], args[2] if len(args) > 2 else None


def _check_call(settings: PruningOptions, options: TrainingOptions, iterations_per_fine_tune: int) -> None:
    """The checks that need the data or the file system (``PruningOptions`` checked the rest)."""
    if settings.validation_threshold is not None:
        if options.validation_data is None:
            raise ValueError("validation_threshold needs validation data: set options.validation_data")
        if options.validation_frequency > iterations_per_fine_tune:
            raise ValueError(
                f"options.validation_frequency={options.validation_frequency} is too large: each "
                f"fine-tuning runs only {iterations_per_fine_tune} iterations, so validation_threshold "
                f"could never be checked; use a validation_frequency <= {iterations_per_fine_tune}"
            )
    if settings.resume_from is not None and not Path(settings.resume_from).is_file():
        raise ValueError(
            f"resume_from {str(settings.resume_from)!r} is not a file; give a checkpoint of an earlier run"
        )
    if settings.checkpoint_path is not None and not Path(settings.checkpoint_path).is_dir():
        raise ValueError(
            f"checkpoint_path {str(settings.checkpoint_path)!r} is not an existing folder; create it first"
        )
    plots_path = settings.plots_path
    if plots_path is not None and not Path(plots_path).parent.is_dir():
        raise ValueError(f"plots_path {str(plots_path)!r}: folder {str(Path(plots_path).parent)!r} does not exist")


def _validate_start(
    model: nn.Module,
    validation: DataSource | None,
    loss_fn: LossFn,
    options: TrainingOptions,
    log: TrainingLog,
    ranks: Ranks,
) -> dict[str, Any] | None:
    """Validation of the input network (iteration 0), also logged in the validation history."""
    if validation is None:
        return None
    started = time.perf_counter()
    metrics, device = options.resolved_metrics, options.torch_device()
    values = evaluate(model, validation, loss_fn, metrics, options.mini_batch_size, device, options, ranks)
    row = {"pruning_iteration": 0, "epoch": 0, "iteration": 0, **values, "time_s": log.elapsed()}
    log.validation.append(row)
    log.add_time("initial_validation", started)
    return row


def _crossed(validation: dict[str, Any] | None, threshold: float, options: TrainingOptions) -> bool:
    if validation is None:  # no validation in this fine-tuning: nothing crossed
        return False
    value: float = validation[options.objective_metric_name]
    return value < threshold if options.objective_maximized else value > threshold


def _channels(prunable: TaylorPrunableNetwork) -> dict[str, int]:
    return {fqn: units.size for fqn, units in prunable.graph.producer_units.items()}


def _figure_metric(settings: PruningOptions, options: TrainingOptions) -> str | None:
    """The metric the progress figure shows (None: no figure)."""
    if settings.plots != "pruning-progress":
        return None
    metrics = [m.name for m in options.resolved_metrics]
    shown = options.objective_metric_name
    return metrics[0] if shown == "loss" and metrics else shown


@overload
def compress_network(
    model: nn.Module,
    data: Any,
    loss: Loss,
    options: TrainingOptions | None = None,
    /,
    *,
    pruning: PruningOptions | None = None,
    **keywords: Unpack[PruningKeywords],
) -> tuple[nn.Module, PruningInfo]: ...


@overload
def compress_network(
    model: nn.Module,
    predictors: Any,
    targets: Any,
    loss: Loss,
    options: TrainingOptions | None = None,
    /,
    *,
    pruning: PruningOptions | None = None,
    **keywords: Unpack[PruningKeywords],
) -> tuple[nn.Module, PruningInfo]: ...


def compress_network(
    model: nn.Module, data: Any, *args: Any, pruning: PruningOptions | None = None, **keywords: Any
) -> tuple[nn.Module, PruningInfo]:
    """Prune ``model`` iteratively; returns ``(pruned_model, info)``. See the module docstring.

    Args:
        model: the trained network; it is copied, never modified.
        data: a DataLoader, Dataset, ``(predictors, targets)`` pair or DataFrame; or the predictors,
            followed by the targets (MATLAB's ``compressNetworkUsingTaylorPruning(net, X, T, ...)``).
        loss: a name from ``prune_core.finetune`` losses or a callable ``loss(outputs, targets)``.
        options: a ``TrainingOptions``, the fine-tuning after each iteration (default
            ``TrainingOptions()``).
        pruning: a ``PruningOptions``; its fields may also be given as keywords, which win.

    Every surgery is checked on the first two training examples (``SurgeryMismatch`` if a pruned
    network is not the zeroed original; nothing is returned then); ``verify=False`` skips it.
    """
    targets, loss, options = _parse_positional(args)
    options = TrainingOptions() if options is None else options
    if not isinstance(options, TrainingOptions):
        raise TypeError(f"options must be a prune_core.TrainingOptions, got {type(options).__name__}")
    settings = PruningOptions.from_keywords(pruning, keywords)
    loss_fn = resolve_loss(loss)
    source = as_source(data, targets)
    validation = (
        None
        if options.validation_data is None
        else as_source(options.validation_data, argument="options.validation_data")
    )
    ranks = Ranks.current()
    check_ranks(ranks, options, source, validation)
    CRITERIA.get(settings.criterion).check_ranks(ranks, settings.criterion)
    batches = source.num_batches(options.mini_batch_size, ranks)
    _check_call(settings, options, options.max_epochs * batches)
    if not ranks.main:  # rank 0 prints, plots, checkpoints and asks iteration_fn; the others compute
        settings = dataclasses.replace(
            settings, verbosity="off", plots_path=None, checkpoint_path=None, checkpoint_fn=None, iteration_fn=None
        )
    generator = torch.Generator()
    if options.seed is not None:
        torch.manual_seed(options.seed)
        generator.manual_seed(options.seed)
    with ranks.failing_together():
        return _compress(model, _Call(source, validation, loss_fn, options, settings, generator, ranks))


@dataclass(frozen=True)
class _Call:
    """What one ``compress_network`` call works with, once its arguments are checked."""

    source: DataSource
    validation: DataSource | None
    loss_fn: LossFn
    options: TrainingOptions
    settings: PruningOptions
    generator: torch.Generator
    ranks: Ranks


def _compress(given: nn.Module, call: _Call) -> tuple[nn.Module, PruningInfo]:
    """``compress_network`` once its arguments are checked (on each rank of a data-parallel run)."""
    options, settings, ranks = call.options, call.settings, call.ranks
    device = options.torch_device()
    model = copy.deepcopy(given).to(device)
    teacher = copy.deepcopy(model).eval().requires_grad_(False) if options.distilling else None
    resumed = None if settings.resume_from is None else read_resume_point(settings.resume_from, model)
    example = tuple(t.to(device) for t in call.source.first_inputs(2))
    prunable = TaylorPrunableNetwork(
        model if resumed is None else resumed.network,
        example,
        layer_names=settings.layer_names,
        leaf_modules=settings.leaf_modules,
        attention_units=settings.attention_units,
        compare_at=settings.compare_at,
        criterion=settings.criterion,
        normalization=settings.normalization,
        per_learnable=settings.per_learnable,
        allocation=settings.allocation,
        seed=options.seed or 0,
        verify=settings.verify,
        budget=settings.budget,
        flops_weight=settings.flops_weight,
        round_to=settings.round_to,
    )
    prunable.require_prunable()
    loop: _Compression | None = None
    try:  # an error closes the progress bar too, instead of leaving it to be drawn at exit
        with CheckpointWriter(settings.checkpoint_fn) as writer:
            loop = _Compression(prunable, example, call, writer, teacher)
            loop.start(model, resumed, given)
            del model, resumed  # the original's counts are in the record: its copy need not stay in memory
            returned, returned_row, stop = loop.run()
        loop.record.checkpointed(writer.written, writer.waited)
        final_iteration = None
        if settings.final_epochs and stop is not StopReason.INTERRUPTED:  # after every write: it may be `kept`
            returned, returned_row, stop, final_iteration = loop.final_fine_tune(returned, returned_row, stop)
        info = loop.record.finish(
            returned,
            stop,
            returned_row,
            figure_metric=_figure_metric(settings, options) if ranks.main else None,
            plots_path=settings.plots_path,
            final_iteration=final_iteration,
        )
        return returned, ranks.from_main(info)
    finally:
        if loop is not None:
            loop.record.reporter.close()


@dataclass(frozen=True)
class _Stop:
    """How a run ends: why, and which network it returns: the one it holds now (its row closes the
    history) or the last one kept (before an iteration that crossed the threshold or diverged)."""

    reason: StopReason
    current: bool


class _Compression:
    """One run of ``compress_network``: the state its pruning iterations share, and the loop over them.

    ``start()`` records the input network as row 0 (or takes a resumed run's rows), then ``run()``
    repeats ``_iteration()`` until it returns a ``_Stop``; every stop is decided there, and Ctrl-C
    (``_interrupted``) reads only this state, which exists from the start.
    """

    def __init__(
        self,
        prunable: TaylorPrunableNetwork,
        example: tuple[torch.Tensor, ...],
        call: _Call,
        writer: CheckpointWriter,
        teacher: nn.Module | None,
    ) -> None:
        self.prunable, self.example, self.source, self.validation = prunable, example, call.source, call.validation
        self.loss_fn, self.options, self.settings = call.loss_fn, call.options, call.settings
        self.generator, self.ranks, self.writer, self.teacher = call.generator, call.ranks, writer, teacher
        options, settings, source, ranks = call.options, call.settings, call.source, call.ranks
        self.device = options.torch_device()
        self.by_macs = settings.budget == "macs"
        # the iteration under way: its number, timings and removed units, and whether its surgery is done
        self.iteration, self.pruned = 0, False
        self.timing: dict[str, float] = {}
        self.chosen: list[int] = []
        self.score_iterations = settings.score_iterations(source.num_batches(options.mini_batch_size, ranks))

    def start(self, original: nn.Module, resumed: ResumePoint | None, given: nn.Module) -> None:
        """Record the ``original`` network (the copy of ``given``, the caller's) as history row 0 and keep it,
        or, going on from ``resumed`` (whose network ``prunable`` holds), take that run's rows, counts and floors."""
        settings, options, graph, model = self.settings, self.options, self.prunable.graph, self.model
        self.macs = PrunedMacs(original, self.example)  # MACs of its pruned versions, mostly without a pass
        macs = self.macs.original
        reachable = settings.goal
        if settings.verbosity == "summary":  # the bar's end: the goal, or the most that can go
            weights = self.prunable.macs_per_weight if self.by_macs else None
            most = graph.learnables_removed(graph.max_removal(), weights)
            start = macs if self.by_macs else learnables(original)
            now = start if resumed is None else resumed.rows[-1]["macs" if self.by_macs else "learnables"]
            reachable = min(settings.goal, (start - now + most) / start)
        self.record = PruningRecord(
            original,
            producers=list(graph.producer_units),
            objective=options.objective_metric_name,
            verbosity=settings.verbosity,
            reachable=reachable,
            iteration_fn=settings.iteration_fn,
            macs=macs,
            budget=settings.budget,
        )
        self.original = macs if self.by_macs else self.record.original
        self.goal_amount, self.step_amount = (
            math.ceil(fraction * self.original - 1e-9) for fraction in (settings.goal, settings.increment)
        )
        # the last network kept (that did not cross the threshold or diverge) and its row
        # at the start, the caller's network, which nothing changes: copied only if it is returned
        self.given, self.kept = given, None if resumed is None else copy.deepcopy(model)
        if resumed is None:
            self.floors = filter_floors(graph, settings.min_filter_fraction)
            self.kept_row = 0
            self.asked = self._record(
                model,
                0,
                {},
                _validate_start(model, self.validation, self.loss_fn, options, self.record.log, self.ranks),
                channels=_channels(self.prunable),
                macs=macs,
            )
            return
        self.floors = resumed.floors
        self.record.restore(resumed.rows, resumed.log_iteration)
        self.kept_row, self.asked, self.iteration = len(resumed.rows) - 1, False, resumed.iteration

    @property
    def model(self) -> nn.Module:
        return self.prunable.model

    def run(self) -> tuple[nn.Module, int, StopReason]:
        """Iterate until a stop; returns the network to return, its history row and the stop reason."""
        try:
            while (stop := self.ranks.from_main(self._iteration())) is None:  # every rank stops as rank 0 does
                pass
        except KeyboardInterrupt:
            if self.ranks.distributed:  # the ranks stopped at different points: nothing they could agree to return
                raise
            stop = self._interrupted()
        if stop.current:
            return self.model, len(self.record.rows) - 1, stop.reason
        return self._kept(), self.kept_row, stop.reason

    def _removed(self) -> int:
        return self.original - self.record.rows[-1]["macs"] if self.by_macs else self.record.removed(self.model)

    def _iteration(self) -> _Stop | None:
        """One pruning iteration: score, remove, fine-tune, validate, checkpoint. Its stop, or None."""
        removed = self._removed()
        if (stop := self._stop_before(removed)) is not None:
            return stop
        options, prunable = self.options, self.prunable
        self.iteration += 1
        self.timing, self.chosen, self.pruned = {}, [], False
        if prunable.needs_gradients:
            started = time.perf_counter()
            scoring = self.source.batches(
                options.mini_batch_size,
                options.shuffle,
                self.generator,
                limit=self.score_iterations,
                loader_options=options.loader_options,
                ranks=self.ranks,
            )
            finite = prunable.score_batches(scoring, self.loss_fn, self.device, self.ranks)
            self.timing["scoring_s"] = time.perf_counter() - started
            if not finite:
                return _Stop(StopReason.DIVERGED, current=False)
        started = time.perf_counter()
        target = min(self.iteration * self.step_amount, self.goal_amount)
        # rank 0's choice: the scores are the same on every rank, and so, by this, are the units
        self.chosen = self.ranks.from_main(prunable.choose(learnables=max(target - removed, 1), floors=self.floors))
        if not self.chosen:
            return _Stop(StopReason.MAXIMUM, current=True)
        prunable.remove(self.chosen)
        self.timing["surgery_s"] = time.perf_counter() - started
        self.pruned, started = True, time.perf_counter()
        outcome = self._fine_tune(self.model, options)
        self.timing["fine_tuning_s"] = time.perf_counter() - started
        self._record_row(outcome.validation)
        if outcome.status == "diverged":
            return _Stop(StopReason.DIVERGED, current=False)
        if outcome.status == "stopped":
            return _Stop(StopReason.OUTPUT_FN, current=True)
        threshold = self.settings.validation_threshold
        if threshold is not None and _crossed(outcome.validation, threshold, options):
            return _Stop(StopReason.THRESHOLD, current=False)
        # the network the next iteration stops with, unchanged, needs no copy (the checkpoint's snapshot too)
        self.kept = self.model if self._stop_before(self._removed()) is not None else copy.deepcopy(self.model)
        self.kept_row = len(self.record.rows) - 1
        self._checkpoint()
        return None

    def _kept(self) -> nn.Module:
        """The last network kept: the caller's network, copied to the device, until an iteration is kept."""
        return copy.deepcopy(self.given).to(self.device) if self.kept is None else self.kept

    def _stop_before(self, removed: int) -> _Stop | None:
        """The stop before an iteration changes the network: the goal is reached (``removed``: the amount
        removed so far), or ``iteration_fn`` asked to stop after the last iteration (which was kept)."""
        if removed >= self.goal_amount:
            return _Stop(StopReason.MACS_GOAL if self.by_macs else StopReason.GOAL, current=True)
        if self.asked:
            return _Stop(StopReason.OUTPUT_FN, current=True)
        return None

    def _fine_tune(self, network: nn.Module, options: TrainingOptions) -> FineTuneOutcome:
        """Fine-tune ``network`` in place as this iteration's fine-tuning (its rows in the log)."""
        return fine_tune(
            network,
            self.source,
            self.loss_fn,
            options,
            self.record.log,
            pruning_iteration=self.iteration,
            validation=self.validation,
            generator=self.generator,
            progress=self.settings.verbosity == "training",
            teacher=self.teacher,
            ranks=self.ranks,
        )

    def _record_row(self, validation: dict[str, Any] | None) -> None:
        self.asked = self._record(
            self.model,
            self.iteration,
            self.timing,
            validation,
            filters_removed=len(self.chosen),
            channels=_channels(self.prunable),
            macs=self.macs(self.model),
        )

    def _record(self, model: nn.Module, iteration: int, *args: Any, **keywords: Any) -> bool:
        """``PruningRecord.record``: whether ``iteration_fn`` asked to stop, as rank 0 (which asks it) says."""
        return self.ranks.from_main(self.record.record(model, iteration, *args, **keywords))

    def _checkpoint(self) -> None:
        """Hand the network just kept (a copy the loop never changes) to the background writer."""
        settings = self.settings
        if settings.checkpoint_path is None or self.iteration % settings.checkpoint_frequency:
            return
        path = Path(settings.checkpoint_path) / checkpoint_name(self.iteration)
        row = {k: v for k, v in self.record.rows[-1].items() if not k.startswith("channels[")}
        resume = resume_extra(self.record.rows, self.record.log.iteration, self.floors)
        self.writer.write(self._kept(), path, extra=row | resume)

    def final_fine_tune(self, network: nn.Module, row: int, stop: StopReason) -> tuple[nn.Module, int, StopReason, int]:
        """Fine-tune ``network`` (history row ``row``) for ``final_epochs`` more epochs, recorded as a
        history row of its own. Returns the network to return, its row, the stop reason and the final
        row's iteration; if the loss diverges, the network as it was before."""
        before = copy.deepcopy(network)
        self.iteration += 1
        channels = {fqn: self.record.rows[row][f"channels[{fqn}]"] for fqn in self.record.producers}
        options = dataclasses.replace(self.options, max_epochs=self.settings.final_epochs)
        started, validation = time.perf_counter(), None
        try:
            outcome = self._fine_tune(network, options)
            validation, status = outcome.validation, outcome.status
        except KeyboardInterrupt:
            if self.ranks.distributed:
                raise
            status = "interrupted"
        self.record.record(
            network,
            self.iteration,
            {"fine_tuning_s": time.perf_counter() - started},
            validation,
            channels=channels,
            macs=self.record.rows[row]["macs"],
        )
        if status == "diverged":
            return before, row, StopReason.DIVERGED, self.iteration
        final = len(self.record.rows) - 1
        if status == "interrupted":
            return network, final, StopReason.INTERRUPTED, self.iteration
        return network, final, StopReason.OUTPUT_FN if status == "stopped" else stop, self.iteration

    def _interrupted(self) -> _Stop:
        """Ctrl-C: before this iteration's surgery is done, the last kept network; after it, the network
        as it is, part-way through its fine-tuning, its row closing the history."""
        if not self.pruned:
            return _Stop(StopReason.INTERRUPTED, current=False)
        if self.record.rows[-1]["iteration"] != self.iteration:
            self._record_row(None)
        return _Stop(StopReason.INTERRUPTED, current=True)
