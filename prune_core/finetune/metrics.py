"""Metrics for fine-tuning and validation (``TrainingOptions.metrics``).

A metric sums a per-batch quantity and an example count, then finishes the ratio:
``accuracy`` (percent, for class-index or one-hot targets), ``error-rate`` (percent),
``mae``, ``mse``, ``rmse``. Custom metrics are ``Metric(name, batch_fn, maximize)`` where
``batch_fn(output, target) -> (sum, count)`` on the first network output and target.

>>> import torch
>>> m = resolve_metric("accuracy")
>>> m.batch(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
(1.0, 2)
>>> m.finish(1.0, 2), m.maximize
(50.0, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


def _labels(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    predicted = output.argmax(1)
    truth = target.argmax(1) if target.is_floating_point() and target.shape == output.shape else target.long()
    return predicted, truth.reshape(predicted.shape)


def _correct(output: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
    predicted, truth = _labels(output, target)
    return float((predicted == truth).sum()), truth.numel()


def _wrong(output: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
    predicted, truth = _labels(output, target)
    return float((predicted != truth).sum()), truth.numel()


def _abs_error(output: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
    return float((output - target.to(output.dtype).reshape(output.shape)).abs().sum()), output.numel()


def _sq_error(output: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
    return float((output - target.to(output.dtype).reshape(output.shape)).square().sum()), output.numel()


@dataclass(frozen=True)
class Metric:
    """A named metric: ``batch(output, target) -> (sum, count)``; ``finish(sum, count)`` gives the value."""

    name: str
    batch: Callable[[torch.Tensor, torch.Tensor], tuple[float, int]]
    maximize: bool = False
    scale: float = 1.0
    root: bool = False

    def finish(self, total: float, count: int) -> float:
        value = self.scale * total / max(count, 1)
        return math.sqrt(value) if self.root else value


NAMED_METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", _correct, maximize=True, scale=100.0),
    "error-rate": Metric("error-rate", _wrong, scale=100.0),
    "mae": Metric("mae", _abs_error),
    "mse": Metric("mse", _sq_error),
    "rmse": Metric("rmse", _sq_error, root=True),
}


def resolve_metric(metric: str | Metric) -> Metric:
    """The ``Metric`` for a name in ``NAMED_METRICS`` (or a ``Metric`` itself)."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str) and metric.lower() in NAMED_METRICS:
        return NAMED_METRICS[metric.lower()]
    raise ValueError(
        f"metrics entry {metric!r} is not a known metric; use one of {sorted(NAMED_METRICS)} or a prune_core.Metric"
    )
