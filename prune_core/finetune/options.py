"""``TrainingOptions``: how each fine-tuning runs, the analogue of MATLAB ``trainingOptions``.

Defaults are MATLAB's (``max_epochs=30``, ``mini_batch_size=128``, ``shuffle="once"``,
``momentum=0.9``, ``l2_regularization=1e-4``, ``validation_frequency=50``, solver learn rates
0.01 for sgdm and 0.001 for adam/rmsprop). Within ``compress_network`` the options describe
the fine-tuning after *each* pruning iteration, so ``max_epochs`` is per iteration.

>>> TrainingOptions("adam", max_epochs=2, metrics=["accuracy"]).learn_rate
0.001
>>> TrainingOptions("sgd")
Traceback (most recent call last):
...
ValueError: solver 'sgd' is not supported; use one of ('sgdm', 'adam', 'rmsprop', 'lbfgs')
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prune_core.checks import check_number
from prune_core.finetune.data import SHUFFLE_CHOICES
from prune_core.finetune.distillation import Distillation
from prune_core.finetune.metrics import Metric, resolve_metric
from prune_core.finetune.ranks import Ranks

SOLVERS = ("sgdm", "adam", "rmsprop", "lbfgs")
DEFAULT_LEARN_RATES = {"sgdm": 0.01, "adam": 0.001, "rmsprop": 0.001, "lbfgs": 1.0}
# "piecewise": MATLAB's (learn_rate_drop_factor every learn_rate_drop_period epochs); "cosine" and
# "onecycle" run over each fine-tuning's iterations, restarted after every surgery.
SCHEDULES = ("none", "piecewise", "cosine", "onecycle")
# training.precision: the autocast dtype of forward passes (None: full precision).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CLIP_METHODS = ("l2norm", "global-l2norm", "absolute-value")


@dataclass
class TrainingOptions:
    """Fine-tuning options (see the module docstring for the defaults).

    ``output_fn(state) -> bool`` is called after every iteration with a dict (pruning
    iteration, epoch, iteration, loss, learn rate and, after a validation, the validation
    values); returning True stops training (and pruning). ``validation_data`` accepts any
    form ``prune_core.finetune.as_source`` does. ``objective_metric_name`` ("loss" or one of
    ``metrics``) is what ``validation_threshold`` and ``validation_patience`` watch.
    ``precision`` runs forward passes of training and validation under autocast ("bf16",
    "fp16", with a gradient scaler; "fp32": none); scoring passes stay in full precision.
    ``channels_last`` trains and validates in that memory format (4-D inputs).
    ``num_workers``, ``pin_memory`` and ``persistent_workers`` configure the DataLoaders that
    read Dataset data (with ``mini_batch_size``); a DataLoader given as data is used as it is.
    ``learn_rate_schedule``: "none", "piecewise" (MATLAB's, per epoch), "cosine" (from the learn
    rate to 0 over each fine-tuning's iterations) or "onecycle" (up from a 25th of it over the
    first 30% of the iterations, then down to nearly 0; PyTorch's ``OneCycleLR`` without momentum
    cycling). ``distillation``: a ``Distillation`` (or a mapping of its fields) to learn from a
    teacher as well as from the targets; ``compress_network``'s teacher is the input network.
    """

    solver: str = "sgdm"
    initial_learn_rate: float | None = None
    max_epochs: int = 30
    mini_batch_size: int = 128
    shuffle: str = "once"
    momentum: float = 0.9
    gradient_decay_factor: float = 0.9
    squared_gradient_decay_factor: float | None = None
    epsilon: float = 1e-8
    l2_regularization: float = 1e-4
    gradient_threshold: float = math.inf
    gradient_threshold_method: str = "l2norm"
    learn_rate_schedule: str = "none"
    learn_rate_drop_factor: float = 0.1
    learn_rate_drop_period: int = 10
    validation_data: Any = None
    validation_frequency: int = 50
    validation_patience: float = math.inf
    metrics: Sequence[str | Metric] = ()
    objective_metric_name: str = "loss"
    verbose_frequency: int = 50
    device: str = "auto"
    seed: int | None = None
    output_fn: Callable[[dict[str, Any]], bool] | None = None
    history_size: int = 10
    precision: str = "fp32"
    channels_last: bool = False
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False
    distillation: Distillation | None = None
    resolved_metrics: tuple[Metric, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _choice("solver", self.solver, SOLVERS)
        _choice("shuffle", self.shuffle, SHUFFLE_CHOICES)
        _choice("learn_rate_schedule", self.learn_rate_schedule, SCHEDULES)
        _choice("gradient_threshold_method", self.gradient_threshold_method, CLIP_METHODS)
        _choice("precision", self.precision, tuple(PRECISIONS))
        if self.precision == "fp16" and self.solver == "lbfgs":
            raise ValueError(
                "precision 'fp16' needs a gradient scaler, which solver 'lbfgs' cannot use; "
                "use precision 'bf16' or 'fp32'"
            )
        for name in (
            "max_epochs",
            "mini_batch_size",
            "validation_frequency",
            "verbose_frequency",
            "learn_rate_drop_period",
            "history_size",
        ):
            check_number(name, getattr(self, name), "[1, inf)", integer=True)
        if self.initial_learn_rate is not None:
            check_number("initial_learn_rate", self.initial_learn_rate, "(0, inf)")
        for name in ("gradient_threshold", "validation_patience", "epsilon"):
            check_number(name, getattr(self, name), "(0, inf]")
        for name in ("momentum", "gradient_decay_factor", "learn_rate_drop_factor"):
            check_number(name, getattr(self, name), "[0, 1]")
        if self.squared_gradient_decay_factor is not None:
            check_number("squared_gradient_decay_factor", self.squared_gradient_decay_factor, "[0, 1)")
        check_number("num_workers", self.num_workers, "[0, inf)", integer=True)
        check_number("l2_regularization", self.l2_regularization, "[0, inf)")
        if isinstance(self.metrics, (str, Metric)):
            self.metrics = [self.metrics]
        self.resolved_metrics = tuple(resolve_metric(m) for m in self.metrics)
        names = ["loss", *(m.name for m in self.resolved_metrics)]
        if self.objective_metric_name not in names:
            raise ValueError(
                f"objective_metric_name {self.objective_metric_name!r} is not computed; "
                f"use one of {names} (add it to metrics)"
            )
        self.distillation = Distillation.of(self.distillation)
        if self.output_fn is not None and not callable(self.output_fn):
            raise TypeError(f"output_fn must be callable, got {type(self.output_fn).__name__}")
        self.torch_device()

    @property
    def learn_rate(self) -> float:
        return DEFAULT_LEARN_RATES[self.solver] if self.initial_learn_rate is None else self.initial_learn_rate

    @property
    def distilling(self) -> bool:
        """Whether fine-tuning learns from a teacher: ``distillation`` is set with alpha > 0."""
        return self.distillation is not None and self.distillation.active

    @property
    def objective_maximized(self) -> bool:
        """Whether larger values of the objective metric are better (accuracy) or worse (loss)."""
        return any(m.maximize for m in self.resolved_metrics if m.name == self.objective_metric_name)

    def torch_device(self) -> torch.device:
        """``device`` as a ``torch.device``; "auto" picks CUDA when present. In a data-parallel run, CUDA
        without an index is each rank's own GPU (``Ranks.device``)."""
        return Ranks.current().device(self._device())

    def _device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device {self.device!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r}: CUDA is not available on this machine; use 'auto' or 'cpu'")
        return device

    @property
    def loader_options(self) -> dict[str, Any]:
        """The DataLoader options for Dataset data (see ``prune_core.finetune.data``)."""
        return {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
        }

    def autocast(self, device: torch.device) -> AbstractContextManager[object]:
        """The autocast context of ``precision`` on ``device`` (a no-op for "fp32")."""
        dtype = PRECISIONS[self.precision]
        return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)

    def build_scheduler(
        self, optimizer: torch.optim.Optimizer, steps_per_epoch: int
    ) -> torch.optim.lr_scheduler.LRScheduler | None:
        """The schedule of one fine-tuning, stepped once per iteration (None: a constant learn rate)."""
        total = max(1, self.max_epochs * steps_per_epoch)
        schedulers = torch.optim.lr_scheduler
        if self.learn_rate_schedule == "piecewise":
            period = self.learn_rate_drop_period * max(1, steps_per_epoch)
            return schedulers.StepLR(optimizer, step_size=period, gamma=self.learn_rate_drop_factor)
        if self.learn_rate_schedule == "cosine":
            return schedulers.CosineAnnealingLR(optimizer, T_max=total)
        if self.learn_rate_schedule == "onecycle":
            return schedulers.OneCycleLR(optimizer, max_lr=self.learn_rate, total_steps=total, cycle_momentum=False)
        return None

    def build_optimizer(self, parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """A fresh optimizer over ``parameters`` (rebuilt after every surgery)."""
        params = [p for p in parameters if p.requires_grad]
        lr, decay = self.learn_rate, self.l2_regularization
        if self.solver == "sgdm":
            return torch.optim.SGD(params, lr=lr, momentum=self.momentum, weight_decay=decay)
        if self.solver == "adam":
            beta2 = 0.999 if self.squared_gradient_decay_factor is None else self.squared_gradient_decay_factor
            return torch.optim.Adam(
                params, lr=lr, betas=(self.gradient_decay_factor, beta2), eps=self.epsilon, weight_decay=decay
            )
        if self.solver == "rmsprop":
            alpha = 0.9 if self.squared_gradient_decay_factor is None else self.squared_gradient_decay_factor
            return torch.optim.RMSprop(params, lr=lr, alpha=alpha, eps=self.epsilon, weight_decay=decay)
        return torch.optim.LBFGS(params, lr=lr, history_size=self.history_size, line_search_fn="strong_wolfe")


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} {value!r} is not supported; use one of {allowed}")
