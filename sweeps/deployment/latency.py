"""Measured inference latency: the median of timed runs, warm-up excluded, with its spread.

``measure(run)`` calls ``run()`` ``warmup`` times untimed, then takes timed samples until the
spread, the interquartile range of the samples over their median, is below ``max_spread``
(checked every ``min_runs`` samples) or ``max_seconds`` have passed. ``Latency.stable`` says
which. A sample is the mean of enough consecutive calls to last about ``sample_seconds`` (2 ms;
one call for anything slower), so that calls of a few microseconds are not timed against the
clock's own jitter. ``onnx_latency``
and ``torch_latency`` time an onnxruntime session or a PyTorch module on a random batch of the
example's shape.

>>> timing = measure(lambda: sum(range(1000)), min_runs=30)
>>> timing.runs >= 30, timing.median_ms > 0, 0 <= timing.spread
(True, True, True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

MAX_SPREAD = 0.10


@dataclass(frozen=True)
class Latency:
    """Median milliseconds per call over ``runs`` timed samples of ``calls_per_sample`` calls each;
    ``spread`` = IQR / median of the samples."""

    median_ms: float
    spread: float
    runs: int
    max_spread: float = MAX_SPREAD
    calls_per_sample: int = 1

    @property
    def stable(self) -> bool:
        """Whether the spread is below ``max_spread``."""
        return self.spread < self.max_spread


def measure(
    run: Callable[[], object],
    *,
    warmup: int = 10,
    min_runs: int = 20,
    max_seconds: float = 3.0,
    max_spread: float = MAX_SPREAD,
    sample_seconds: float = 0.002,
) -> Latency:
    """Time ``run()`` (see the module docstring)."""
    started = time.perf_counter()
    for _ in range(warmup):
        run()
    per_call = (time.perf_counter() - started) / max(warmup, 1)
    calls = max(1, math.ceil(sample_seconds / per_call)) if per_call > 0 else 1
    times: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while True:
        for _ in range(min_runs):
            started = time.perf_counter()
            for _ in range(calls):
                run()
            times.append((time.perf_counter() - started) / calls)
        q25, median, q75 = np.percentile(times, [25, 50, 75])
        spread = float((q75 - q25) / median) if median > 0 else 0.0
        if spread < max_spread or time.perf_counter() >= deadline:
            return Latency(1e3 * float(median), spread, len(times), max_spread, calls)


def batch_of(example, batch: int) -> tuple[torch.Tensor, ...]:
    """Random inputs shaped like ``example`` (a tensor or tuple of tensors) with ``batch`` rows."""
    inputs = example if isinstance(example, (tuple, list)) else (example,)
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn((batch, *t.shape[1:]), generator=generator).to(t.dtype) for t in inputs)


def onnx_latency(runner, example, batch: int, **options) -> Latency:
    """Latency of an onnxruntime session on a batch of ``batch`` inputs shaped like ``example``."""
    names = [i.name for i in runner.get_inputs()]
    feed = {name: t.numpy() for name, t in zip(names, batch_of(example, batch), strict=True)}
    return measure(lambda: runner.run(None, feed), **options)


def torch_latency(model: nn.Module, example, batch: int, threads: int = 1, **options) -> Latency:
    """Latency of ``model`` (eval mode, inference mode, CPU, ``threads`` threads) on such a batch; the model's
    mode and the thread count are restored after."""
    inputs, was_training, before = batch_of(example, batch), model.training, torch.get_num_threads()
    torch.set_num_threads(threads)
    model.eval()
    try:
        with torch.inference_mode():
            return measure(lambda: model(*inputs), **options)
    finally:
        model.train(was_training)
        torch.set_num_threads(before)
