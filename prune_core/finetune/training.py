"""Training and validation loops that fill the training and validation history tables.

``train_network(model, data, loss, options)`` trains a network once, the analogue of MATLAB's
``trainnet``: it takes the data and loss in any form ``compress_network`` does and returns the
trained model with its history tables. ``compress_network`` uses the loop underneath,
``fine_tune``, after every pruning iteration.

``fine_tune(model, source, loss_fn, options, log, ...)`` trains for ``options.max_epochs``
epochs with a fresh optimizer, validates every ``validation_frequency`` iterations and at
the end, and appends one row per iteration to ``log.training`` and one per validation to
``log.validation``; with ``progress=True`` it shows a progress bar and prints a line every
``options.verbose_frequency`` iterations. It returns how it ended (``FineTuneOutcome``): completed, diverged
(non-finite loss), or stopped by ``output_fn``. ``evaluate`` computes the loss and metrics
over a whole data source.

>>> import torch, torch.nn as nn
>>> from prune_core.finetune.data import as_source
>>> from prune_core.finetune.losses import resolve_loss
>>> from prune_core.finetune.options import TrainingOptions
>>> net = nn.Linear(3, 2)
>>> data = as_source(torch.randn(32, 3), torch.randint(0, 2, (32,)))
>>> log = TrainingLog()
>>> opts = TrainingOptions("adam", max_epochs=2, mini_batch_size=8, metrics=["accuracy"])
>>> fine_tune(net, data, resolve_loss("crossentropy"), opts, log, validation=data).status
'completed'
>>> len(log.training), list(log.validation[-1])[:4]
(8, ['pruning_iteration', 'epoch', 'iteration', 'loss'])
>>> trained, info = train_network(nn.Linear(3, 2), (torch.randn(32, 3), torch.randint(0, 2, (32,))),
...                               "crossentropy", TrainingOptions("adam", max_epochs=2, mini_batch_size=8, seed=0))
>>> info.status, len(info.training_history)
('completed', 8)
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from prune_core.finetune.data import DataSource, as_source
from prune_core.finetune.distillation import Distillation
from prune_core.finetune.losses import LossFn, resolve_loss
from prune_core.finetune.metrics import Metric
from prune_core.finetune.options import TrainingOptions
from prune_core.finetune.ranks import Ranks

_COUNTERS = ("pruning_iteration", "epoch", "iteration", "time_s")


@dataclass
class TrainingLog:
    """Rows of the training and validation history, and the global iteration counter."""

    training: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)
    iteration: int = 0
    started: float = field(default_factory=time.perf_counter)
    seconds: dict[str, float] = field(default_factory=dict)  # time spent building optimizers, validating

    def add_time(self, what: str, since: float) -> None:
        self.seconds[what] = self.seconds.get(what, 0.0) + time.perf_counter() - since

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


@dataclass
class FineTuneOutcome:
    """``status``: "completed", "diverged" or "stopped" (by ``output_fn``); the last validation row."""

    status: str
    validation: dict[str, Any] | None = None


def to_device(
    tensors: tuple[torch.Tensor, ...], device: torch.device, channels_last: bool = False
) -> tuple[torch.Tensor, ...]:
    """Every tensor of a batch part on ``device`` (4-D floating ones in channels-last layout if asked)."""
    moved = tuple(t.to(device, non_blocking=True) for t in tensors)
    if channels_last:
        moved = tuple(
            t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 and t.is_floating_point() else t
            for t in moved
        )
    return moved


def forward_outputs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The network's outputs on ``inputs``, always as a tuple (several outputs are allowed)."""
    out = model(*inputs)
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    source: DataSource,
    loss_fn: LossFn,
    metrics: tuple[Metric, ...],
    batch_size: int,
    device: torch.device,
    options: TrainingOptions | None = None,
    ranks: Ranks | None = None,
) -> dict[str, float]:
    """Mean loss (weighted by batch size) and each metric over all of ``source``, in eval mode, with the
    precision and memory format of ``options`` (when given). With ``ranks`` of a data-parallel run, each
    rank evaluates its share of the examples and every rank returns the values over all of them."""
    was_training = model.training
    model.eval()
    loss_sum, count = 0.0, 0
    sums = {m.name: (0.0, 0) for m in metrics}
    autocast = options.autocast(device) if options is not None else contextlib.nullcontext()
    channels_last = options is not None and options.channels_last
    try:
        loader_options = None if options is None else options.loader_options
        for inputs, targets in source.batches(batch_size, loader_options=loader_options, ranks=ranks, padded=False):
            inputs, targets = to_device(inputs, device, channels_last), to_device(targets, device)
            with autocast:
                outputs = tuple(o.float() for o in forward_outputs(model, inputs))
            n = len(targets[0])
            loss_sum += float(loss_fn(outputs, targets)) * n
            count += n
            for m in metrics:
                s, c = m.batch(outputs[0], targets[0])
                total, seen = sums[m.name]
                sums[m.name] = (total + s, seen + c)
    finally:
        model.train(was_training)
    if ranks is not None and ranks.distributed:
        totals = ranks.sum(torch.tensor([loss_sum, count, *(v for pair in sums.values() for v in pair)]).double())
        loss_sum, count = float(totals[0]), int(totals[1])
        sums = {m.name: (float(totals[2 + 2 * i]), int(totals[3 + 2 * i])) for i, m in enumerate(metrics)}
    return {"loss": loss_sum / count, **{m.name: m.finish(*sums[m.name]) for m in metrics}}


def clip_gradients(parameters: list[nn.Parameter], threshold: float, method: str) -> None:
    """MATLAB's gradient thresholding: per-parameter L2 norm, global L2 norm, or element value."""
    if math.isinf(threshold):
        return
    if method == "global-l2norm":
        nn.utils.clip_grad_norm_(parameters, threshold)
    elif method == "absolute-value":
        nn.utils.clip_grad_value_(parameters, threshold)
    else:
        for p in parameters:
            nn.utils.clip_grad_norm_([p], threshold)


@dataclass
class _Patience:
    """Counts validations without improvement of the objective."""

    limit: float
    maximize: bool
    best: float = math.nan
    waited: int = 0

    def exhausted(self, value: float) -> bool:
        better = math.isnan(self.best) or (value > self.best if self.maximize else value < self.best)
        self.best, self.waited = (value, 0) if better else (self.best, self.waited + 1)
        return self.waited >= self.limit


def fine_tune(
    model: nn.Module,
    source: DataSource,
    loss_fn: LossFn,
    options: TrainingOptions,
    log: TrainingLog,
    *,
    pruning_iteration: int = 0,
    validation: DataSource | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    teacher: nn.Module | None = None,
    ranks: Ranks | None = None,
) -> FineTuneOutcome:
    """Train ``model`` in place for ``options.max_epochs`` epochs; see the module docstring.

    ``teacher`` (in eval mode, on the device) is the network ``options.distillation`` learns from.
    With ``ranks`` of a data-parallel run (``prune_core.finetune.ranks``), every rank trains on its share
    of each batch in ``DistributedDataParallel``; the rows hold the values over all ranks, the same on
    each; only rank 0 shows progress and calls ``output_fn``, whose answer every rank follows.
    """
    ranks = Ranks() if ranks is None else ranks
    progress = progress and ranks.main
    device = options.torch_device()
    objective = _Objective.of(loss_fn, options, teacher)
    metrics = options.resolved_metrics
    if options.channels_last:  # again after every surgery: the new, smaller tensors are contiguous
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    scaler = torch.amp.GradScaler(device.type) if options.precision == "fp16" else None
    started = time.perf_counter()
    optimizer = options.build_optimizer(params)
    batches_per_epoch = source.num_batches(options.mini_batch_size, ranks)
    scheduler = options.build_scheduler(optimizer, batches_per_epoch)
    log.add_time("optimizer", started)
    patience = _Patience(options.validation_patience, options.objective_maximized)
    scheduled_steps = options.max_epochs * batches_per_epoch
    bar = tqdm(
        total=options.max_epochs * batches_per_epoch,
        disable=not progress,
        leave=False,
        desc=f"fine-tuning after pruning iteration {pruning_iteration}" if pruning_iteration else "training",
        unit="it",
    )
    last_validation = None

    def validate(epoch: int) -> dict[str, Any]:
        assert validation is not None
        started = time.perf_counter()
        values = evaluate(model, validation, loss_fn, metrics, options.mini_batch_size, device, options, ranks)
        row = {
            "pruning_iteration": pruning_iteration,
            "epoch": epoch,
            "iteration": log.iteration,
            **values,
            "time_s": log.elapsed(),
        }
        log.validation.append(row)
        log.add_time("validation", started)
        return row

    asks = ranks.main_says(options.output_fn is not None)  # rank 0's callback decides for every rank
    model.train()
    network = ranks.wrap(model)  # again in every call: a surgery in between changes the parameters' shapes
    try:
        steps = 0
        for epoch in range(options.max_epochs):
            for inputs, targets in source.batches(
                options.mini_batch_size,
                options.shuffle,
                generator,
                loader_options=options.loader_options,
                ranks=ranks,
            ):
                inputs, targets = to_device(inputs, device, options.channels_last), to_device(targets, device)
                learn_rate = optimizer.param_groups[0]["lr"]
                loss, outputs = _step(network, optimizer, params, objective, options, inputs, targets, scaler)
                steps += 1
                if scheduler is not None and steps < scheduled_steps:
                    scheduler.step()
                log.iteration += 1
                row = {
                    "pruning_iteration": pruning_iteration,
                    "epoch": epoch + 1,
                    "iteration": log.iteration,
                    **_step_values(loss, outputs[0].detach().float(), targets[0], metrics, ranks),
                    "learn_rate": learn_rate,
                    "time_s": log.elapsed(),
                }
                log.training.append(row)
                bar.update()
                if not math.isfinite(row["loss"]):
                    return FineTuneOutcome("diverged", last_validation)
                state = dict(row)
                if validation is not None and log.iteration % options.validation_frequency == 0:
                    last_validation = validate(epoch + 1)
                    state.update({f"validation_{k}": v for k, v in last_validation.items() if k not in _COUNTERS})
                    if patience.exhausted(last_validation[options.objective_metric_name]):
                        return FineTuneOutcome("completed", last_validation)
                if progress and log.iteration % options.verbose_frequency == 0:
                    values = ", ".join(f"{k} {v:.4g}" for k, v in state.items() if k not in _COUNTERS)
                    tqdm.write(f"  iteration {log.iteration} (epoch {epoch + 1}): {values}")
                if asks and ranks.main_says(ranks.main and bool(options.output_fn and options.output_fn(state))):
                    return FineTuneOutcome("stopped", last_validation)
        if validation is not None and (last_validation is None or last_validation["iteration"] != log.iteration):
            last_validation = validate(options.max_epochs)
        return FineTuneOutcome("completed", last_validation)
    finally:
        bar.close()


def _step_values(
    loss: torch.Tensor, output: torch.Tensor, target: torch.Tensor, metrics: tuple[Metric, ...], ranks: Ranks
) -> dict[str, float]:
    """A step's loss and metrics for its history row: over the whole batch, across every rank's share."""
    parts = [m.batch(output, target) for m in metrics]
    if not ranks.distributed:
        return {"loss": float(loss), **{m.name: m.finish(*part) for m, part in zip(metrics, parts, strict=True)}}
    totals = ranks.sum(torch.tensor([float(loss), *(v for part in parts for v in part)], dtype=torch.float64))
    values = {"loss": float(totals[0]) / ranks.world}
    for i, m in enumerate(metrics):
        values[m.name] = m.finish(float(totals[1 + 2 * i]), int(totals[2 + 2 * i]))
    return values


@dataclass(frozen=True)
class _Objective:
    """The loss a step minimises: the task loss, or with distillation, the blend with the teacher's."""

    loss_fn: LossFn
    teacher: nn.Module | None = None
    distillation: Distillation | None = None

    @classmethod
    def of(cls, loss_fn: LossFn, options: TrainingOptions, teacher: nn.Module | None) -> _Objective:
        if not options.distilling:
            return cls(loss_fn)
        if teacher is None:
            raise ValueError(
                "options.distillation needs a teacher network: compress_network uses the input network; "
                "train_network(..., teacher=net); or set options.distillation=None"
            )
        return cls(loss_fn, teacher, options.distillation)

    def __call__(
        self, outputs: tuple[torch.Tensor, ...], inputs: tuple[torch.Tensor, ...], targets: tuple[torch.Tensor, ...]
    ) -> torch.Tensor:
        loss = self.loss_fn(outputs, targets)
        if self.teacher is None or self.distillation is None:
            return loss
        with torch.no_grad():
            taught = forward_outputs(self.teacher, inputs)[0]
        return self.distillation.loss(outputs[0], taught, loss)


def _step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    objective: _Objective,
    options: TrainingOptions,
    inputs: tuple[torch.Tensor, ...],
    targets: tuple[torch.Tensor, ...],
    scaler: torch.amp.GradScaler | None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """One optimisation step (under ``options``' autocast, through ``scaler`` for fp16); returns the
    (detached) loss and the outputs it was computed from."""
    device = options.torch_device()
    if options.solver == "lbfgs":
        seen: dict[str, tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = {}

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            with options.autocast(device):
                outputs = forward_outputs(model, inputs)
                loss = objective(outputs, inputs, targets)
            if options.l2_regularization:
                loss = loss + 0.5 * options.l2_regularization * sum(p.square().sum() for p in params)
            loss.backward()
            clip_gradients(params, options.gradient_threshold, options.gradient_threshold_method)
            seen.setdefault("result", (loss.detach(), outputs))
            return loss

        optimizer.step(closure)  # type: ignore[arg-type]  # LBFGS reads the loss tensor the closure returns
        return seen["result"]
    optimizer.zero_grad(set_to_none=True)
    with options.autocast(device):
        outputs = forward_outputs(model, inputs)
        loss = objective(outputs, inputs, targets)
    if scaler is None:
        loss.backward()
        clip_gradients(params, options.gradient_threshold, options.gradient_threshold_method)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clipping sees the true gradients
        clip_gradients(params, options.gradient_threshold, options.gradient_threshold_method)
        scaler.step(optimizer)
        scaler.update()
    return loss.detach(), outputs


@dataclass
class TrainingInfo:
    """What ``train_network`` did: ``status`` ("completed", "diverged" or "stopped" by ``output_fn``)
    and the ``training_history`` and ``validation_history`` tables (columns as in ``PruningInfo``)."""

    status: str
    training_history: pd.DataFrame
    validation_history: pd.DataFrame


def train_network(
    model: nn.Module,
    data: Any,
    loss: str | Callable[..., torch.Tensor],
    options: TrainingOptions,
    *,
    teacher: nn.Module | None = None,
    progress: bool = False,
) -> tuple[nn.Module, TrainingInfo]:
    """Train ``model`` in place with ``options``; returns ``(model, info)``. See the module docstring.

    Args:
        model: the network; it is moved to ``options``' device and trained in place.
        data: a DataLoader, Dataset, ``(predictors, targets)`` pair or DataFrame (see ``as_source``).
        loss: a name from ``prune_core.finetune.losses`` or a callable ``loss(outputs, targets)``.
        options: a ``TrainingOptions``; ``options.seed`` (when set) seeds the shuffling.
        teacher: the network ``options.distillation`` learns from; it is run in eval mode on
            ``options``' device, never trained, and its mode is restored afterwards.
        progress: show a progress bar and a line every ``options.verbose_frequency`` iterations.

    In a process group of several processes, it trains data-parallel (``prune_core.finetune.ranks``):
    call it on every rank; each returns the same trained network and rank 0's ``info``.
    """
    if not isinstance(options, TrainingOptions):
        raise TypeError(f"options must be a prune_core.TrainingOptions, got {type(options).__name__}")
    loss_fn = resolve_loss(loss)
    source = as_source(data)
    validation = (
        None
        if options.validation_data is None
        else as_source(options.validation_data, argument="options.validation_data")
    )
    ranks = Ranks.current()
    check_ranks(ranks, options, source, validation)
    generator = None if options.seed is None else torch.Generator().manual_seed(options.seed)
    if teacher is not None and not options.distilling:
        raise ValueError(
            "teacher is given, but options.distillation is off; set options.distillation=Distillation(...)"
        )
    _Objective.of(loss_fn, options, teacher)  # a missing teacher fails before anything moves
    model.to(options.torch_device())
    log = TrainingLog()
    with ranks.failing_together(), _as_teacher(teacher, options.torch_device()) as frozen:
        outcome = fine_tune(
            model,
            source,
            loss_fn,
            options,
            log,
            validation=validation,
            generator=generator,
            progress=progress,
            teacher=frozen,
            ranks=ranks,
        )
        info = TrainingInfo(outcome.status, pd.DataFrame(log.training), pd.DataFrame(log.validation))
        return model, ranks.from_main(info)  # the same tables on every rank, timed by rank 0


def check_ranks(ranks: Ranks, options: TrainingOptions, source: DataSource, validation: DataSource | None) -> None:
    """Refuse, before any work, what a data-parallel run over ``ranks`` cannot split among them."""
    if not ranks.distributed:
        return
    if options.solver == "lbfgs":  # its line search reads each rank's own loss: the ranks would step apart
        raise ValueError(
            f"options.solver='lbfgs' cannot run on the {ranks.world} processes of this run; use 'sgdm', "
            "'adam' or 'rmsprop', or run in one process"
        )
    ranks.local_batch_size(options.mini_batch_size)
    source.check_shardable(ranks)
    if validation is not None:
        validation.check_shardable(ranks, "options.validation_data")


@contextlib.contextmanager
def _as_teacher(teacher: nn.Module | None, device: torch.device) -> Iterator[nn.Module | None]:
    """``teacher`` in eval mode on ``device`` for the duration; the caller's network is left as it was."""
    if teacher is None:
        yield None
        return
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
    on_device = all(t.device == device for t in [*teacher.parameters(), *teacher.buffers()])
    frozen = teacher if on_device else copy.deepcopy(teacher).to(device)
    was_training = frozen.training
    frozen.eval()
    try:
        yield frozen
    finally:
        frozen.train(was_training)
