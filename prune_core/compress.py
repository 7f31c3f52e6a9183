"""``compress_network``: iterative Taylor pruning with fine-tuning (MATLAB's ``compressNetworkUsingTaylorPruning``).

Each pruning iteration scores the filters on ``num_importance_score_iterations`` mini-batches,
removes the lowest-scoring ones across all groups until at least ``increment`` of the
*original* learnables is gone (or nothing more can go: every layer keeps a filter), rebuilds
the optimizer, fine-tunes with ``options``, validates and checkpoints. It stops when

- the learnables reduction reaches ``goal`` -> "Learnables reduction goal reached.";
- nothing more can be removed -> "Maximum compression reached.";
- the validation objective crosses ``validation_threshold`` (rises above it for the loss and
  error metrics, falls below it for accuracy) -> "Validation threshold crossed." and the
  *previous* network, the last that did not cross, is returned;
- the training loss is not finite -> "Training loss is not finite." and the last network
  that trained normally is returned;
- ``options.output_fn`` returns True -> "Stopped by output function.", or Ctrl-C ->
  "Stopped manually.": the current network is returned, history intact.

The input model is not modified: it is copied first. See ``PruningInfo`` for what comes back.

>>> import torch, torch.nn as nn
>>> from prune_core.options import TrainingOptions
>>> torch.manual_seed(0) and None
>>> net = nn.Sequential(nn.Conv1d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
>>> x, y = torch.randn(64, 1, 8), torch.randint(0, 2, (64,))
>>> opts = TrainingOptions("adam", max_epochs=1, mini_batch_size=16)
>>> pruned, info = compress_network(net, x, y, "crossentropy", opts, goal=0.5, increment=0.25)
Compressed network has 61.5% fewer learnable parameters.
Pruning compressed 2 layers: "0","3"
>>> info.stop_reason, list(info.pruning_history["iteration"]), pruned[0].out_channels
('Learnables reduction goal reached.', [0, 1, 2], 3)
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from prune_core.data import as_source
from prune_core.importance import CRITERIA, NORMALIZATIONS
from prune_core.losses import resolve_loss
from prune_core.options import TrainingOptions
from prune_core.prunable import TaylorPrunableNetwork
from prune_core.pruning_info import PLOTS, VERBOSITY, PruningInfo, PruningRecord
from prune_core.selection import ALLOCATIONS, filter_floors
from prune_core.stop_reason import StopReason
from prune_core.training import fine_tune, to_device


def _parse_positional(args: tuple) -> tuple:
    """(targets, loss, options) from ``(loss[, options])`` or ``(targets, loss[, options])``."""
    if not args:
        raise TypeError("compress_network needs a loss: compress_network(model, data, loss, options) "
                        "or compress_network(model, predictors, targets, loss, options)")
    if len(args) > 3:
        raise TypeError(f"compress_network takes at most 5 positional arguments, got {len(args) + 2}")
    if isinstance(args[0], str) or (callable(args[0]) and not isinstance(args[0], torch.Tensor)):
        if len(args) == 3:
            raise TypeError("with data as one argument, pass compress_network(model, data, loss, options)")
        return None, args[0], args[1] if len(args) > 1 else None
    if len(args) == 1:
        raise TypeError("compress_network(model, predictors, targets, loss, options) needs a loss after the targets")
    return args[0], args[1], args[2] if len(args) > 2 else None


def check_pruning_options(**options) -> None:
    """Raise ValueError (or TypeError) for a ``compress_network`` keyword option, or a ``loss``, that no
    data could make valid: cheap, so an app can check its configuration before loading data or training.
    Options that need the data (``checkpoint_path``, ``plots_path``, validation) are checked by
    ``compress_network`` itself.

    >>> check_pruning_options(goal=0.5, increment=0.1, loss="crossentropy")
    >>> check_pruning_options(increment=0)
    Traceback (most recent call last):
    ValueError: increment must be a number in (0, 1], got 0
    """
    known = [name for name, p in inspect.signature(compress_network).parameters.items() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - {*known, "loss"})
    if unknown:
        raise TypeError(f"compress_network has no option {unknown[0]!r}; its options are {known}")
    if "loss" in options:
        resolve_loss(options["loss"])
    for name in ("goal", "increment"):
        value = options.get(name, 0.5)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    threshold = options.get("validation_threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        raise TypeError(f"validation_threshold must be a number or None, got {threshold!r}")
    n = options.get("num_importance_score_iterations", "auto")
    if n != "auto" and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"num_importance_score_iterations must be 'auto' or a positive integer, got {n!r}")
    frequency = options.get("checkpoint_frequency", 1)
    if isinstance(frequency, bool) or not isinstance(frequency, int) or frequency < 1:
        raise ValueError(f"checkpoint_frequency must be a positive integer, got {frequency!r}")
    for name, allowed in (("verbosity", VERBOSITY), ("plots", PLOTS), ("criterion", CRITERIA),
                          ("normalization", NORMALIZATIONS), ("allocation", ALLOCATIONS)):
        if name in options and options[name] not in allowed:
            raise ValueError(f"{name} {options[name]!r} is not supported; use one of {allowed}")
    fraction = options.get("min_filter_fraction", 0.0)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ValueError(f"min_filter_fraction must be in [0, 1), got {fraction!r}")


def _check_arguments(options: TrainingOptions, iterations_per_fine_tune: int, checkpoint_path, plots_path,
                     **checked) -> None:
    check_pruning_options(**checked)
    if checked["validation_threshold"] is not None:
        if options.validation_data is None:
            raise ValueError("validation_threshold needs validation data: set options.validation_data")
        if options.validation_frequency > iterations_per_fine_tune:
            raise ValueError(f"options.validation_frequency={options.validation_frequency} is too large: each "
                             f"fine-tuning runs only {iterations_per_fine_tune} iterations, so validation_threshold "
                             f"could never be checked; use a validation_frequency <= {iterations_per_fine_tune}")
    if checkpoint_path is not None and not Path(checkpoint_path).is_dir():
        raise ValueError(f"checkpoint_path {str(checkpoint_path)!r} is not an existing folder; create it first")
    if plots_path is not None and not Path(plots_path).parent.is_dir():
        raise ValueError(f"plots_path {str(plots_path)!r}: folder {str(Path(plots_path).parent)!r} does not exist")


def compress_network(model: nn.Module, data, *args, goal: float = 1.0, validation_threshold: float | None = None,
                     increment: float = 0.05, num_importance_score_iterations: int | str = "auto",
                     layer_names: Iterable[str] | str | None = None, checkpoint_path=None,
                     checkpoint_frequency: int = 1, verbosity: str = "summary", plots: str = "none",
                     plots_path=None, criterion: str = "taylor", normalization: str = "l2",
                     per_learnable: bool = False, allocation: str = "global", min_filter_fraction: float = 0.0,
                     leaf_modules: Iterable[str | type] = (), verify: bool = True,
                     iteration_fn: Callable[[dict], None] | None = None) -> tuple[nn.Module, PruningInfo]:
    """Prune ``model`` iteratively; returns ``(pruned_model, info)``. See the module docstring.

    Call as ``compress_network(model, data, loss, options, ...)`` with ``data`` a DataLoader,
    Dataset, ``(predictors, targets)`` or DataFrame, or ``compress_network(model, predictors,
    targets, loss, options, ...)``. ``loss`` is a name from ``prune_core.losses`` or a callable;
    ``options`` a ``TrainingOptions`` (the fine-tuning after each iteration; default
    ``TrainingOptions()``). Beyond the reference's options: ``plots_path`` saves the progress
    figure; ``criterion`` ("taylor", "l1", "random"), ``normalization`` ("l2", "none"),
    ``per_learnable``, ``allocation`` ("global" or "uniform", see ``TaylorPrunableNetwork``) and
    ``min_filter_fraction`` (each layer keeps at least this fraction of its original filters)
    change how filters are chosen; ``leaf_modules`` is as in ``ChannelGraph.build``. Every
    surgery is checked on the first two training examples (``SurgeryMismatch`` if a pruned
    network is not the zeroed original; nothing is returned then); ``verify=False`` skips it.
    ``iteration_fn(row)`` is called with each pruning iteration's history row as soon as it is
    recorded (iteration 0 included): to log it live, say.
    """
    targets, loss, options = _parse_positional(args)
    options = TrainingOptions() if options is None else options
    if not isinstance(options, TrainingOptions):
        raise TypeError(f"options must be a prune_core.TrainingOptions, got {type(options).__name__}")
    loss_fn = resolve_loss(loss)
    source = as_source(data, targets)
    validation = None if options.validation_data is None else as_source(options.validation_data,
                                                                         argument="options.validation_data")
    _check_arguments(options, options.max_epochs * source.num_batches(options.mini_batch_size), checkpoint_path,
                     plots_path, goal=goal, increment=increment, validation_threshold=validation_threshold,
                     num_importance_score_iterations=num_importance_score_iterations,
                     checkpoint_frequency=checkpoint_frequency, verbosity=verbosity, plots=plots, criterion=criterion,
                     normalization=normalization, allocation=allocation, min_filter_fraction=min_filter_fraction)
    generator = torch.Generator()
    if options.seed is not None:
        torch.manual_seed(options.seed)
        generator.manual_seed(options.seed)
    model = copy.deepcopy(model).to(options.torch_device())
    example = to_device(source.first_inputs(2), options.torch_device())
    prunable = TaylorPrunableNetwork(model, example, layer_names=layer_names, leaf_modules=leaf_modules,
                                     criterion=criterion, normalization=normalization,
                                     per_learnable=per_learnable, allocation=allocation, seed=options.seed or 0,
                                     verify=verify)
    prunable.require_prunable()
    run = PruningRecord(prunable, source, validation, loss_fn, options, goal, verbosity, generator, iteration_fn)
    floors = filter_floors(prunable.graph, min_filter_fraction)
    batches = source.num_batches(options.mini_batch_size)
    n_scoring = min(100 if num_importance_score_iterations == "auto" else num_importance_score_iterations, batches)
    best, best_row, stop, phase = copy.deepcopy(model), 0, None, "pruning"
    run.record(0, 0, {}, run.validate_start())
    goal_learnables, step_learnables = (math.ceil(fraction * run.original - 1e-9) for fraction in (goal, increment))
    iteration = 0
    try:
        while stop is None:
            if run.removed() >= goal_learnables:
                stop = StopReason.GOAL
                break
            iteration += 1
            timing, phase = {}, "pruning"
            started = time.perf_counter()
            if criterion == "taylor" and not run.score(n_scoring):
                stop, model = StopReason.DIVERGED, best
                break
            timing["scoring_s"] = time.perf_counter() - started
            budget = min(step_learnables, goal_learnables - run.removed())
            started = time.perf_counter()
            chosen = prunable.choose(learnables=budget, floors=floors)
            if not chosen:
                stop = StopReason.MAXIMUM
                break
            prunable.remove(chosen)
            timing["surgery_s"] = time.perf_counter() - started
            phase, started = "fine-tuning", time.perf_counter()
            outcome = fine_tune(model, source, loss_fn, options, run.log, pruning_iteration=iteration,
                                validation=validation, generator=generator, progress=verbosity == "training")
            timing["fine_tuning_s"] = time.perf_counter() - started
            run.record(iteration, len(chosen), timing, outcome.validation)
            if outcome.status == "diverged":
                stop, model = StopReason.DIVERGED, best
                break
            if outcome.status == "stopped":
                stop, best_row = StopReason.OUTPUT_FN, len(run.rows) - 1
                break
            if validation_threshold is not None and run.crossed(outcome.validation, validation_threshold):
                stop, model = StopReason.THRESHOLD, best
                break
            if checkpoint_path is not None and iteration % checkpoint_frequency == 0:
                run.checkpoint(model, Path(checkpoint_path), iteration)
            best, best_row = copy.deepcopy(model), len(run.rows) - 1
    except KeyboardInterrupt:
        stop = StopReason.INTERRUPTED
        if phase != "fine-tuning":
            model = best
        else:  # the current network, part-way through its fine-tuning: its row closes the history
            if run.rows[-1]["iteration"] != iteration:
                run.record(iteration, len(chosen), timing, None)
            best_row = len(run.rows) - 1
    return model, run.finish(model, stop, best_row, plots, plots_path)

