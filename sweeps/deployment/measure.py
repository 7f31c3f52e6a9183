"""What a job measures of the network it returns: its ONNX export and its CPU latency.

The ``export`` config group (``conf/export/onnx.yaml``) says what to do; ``DeploymentOptions``
checks it before any work. ``measure_deployment(model, example, folder, options, program)``
(``program``: the job's one ``torch.export`` of the model, ``sweeps.deployment.program``, or None):

- with ``onnx``: exports the network (``sweeps.deployment.onnx_export``), checks onnxruntime against
  PyTorch within ``tolerance`` and keeps ``model.onnx`` in ``folder``; metric
  ``onnx_max_abs_diff``, tag ``taylorprune.onnx`` = "exported";
- with ``latency``: times it with onnxruntime at each of ``batch_sizes`` on ``threads`` CPU
  threads (``sweeps.deployment.latency``): metrics ``latency_ms`` (batch 1) or ``latency_ms_b<N>``, and
  ``latency_spread`` / ``latency_spread_b<N>`` (interquartile range over the median);
  tag ``taylorprune.latency_source`` = "onnxruntime".

An export that fails does not fail the job: the tag ``taylorprune.onnx`` says "failed: <why>",
no ``model.onnx`` is kept, and the latency is measured on the PyTorch module instead, with
``taylorprune.latency_source`` = "torch" so it is never mistaken for the exported model's.

>>> DeploymentOptions(batch_sizes=[0])
Traceback (most recent call last):
ValueError: batch_sizes must be positive integers, got [0]
>>> metric_name("latency_ms", 1), metric_name("latency_ms", 64)
('latency_ms', 'latency_ms_b64')
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn
from torch.export import ExportedProgram

from prune_core import check_number, is_number
from sweeps.deployment.latency import MAX_SPREAD, Latency, onnx_latency, torch_latency
from sweeps.deployment.onnx_export import TOLERANCE, ExportFailed, export_onnx, session
from sweeps.layout import LATENCY_SOURCE, ONNX, ONNX_FILE

log = logging.getLogger(__name__)


@dataclass
class DeploymentOptions:
    """The ``export`` config group (see the module docstring)."""

    onnx: bool = True
    tolerance: float = TOLERANCE
    latency: bool = True
    batch_sizes: list[int] = field(default_factory=lambda: [1, 64])
    threads: int = 1
    max_seconds: float = 3.0
    max_spread: float = MAX_SPREAD

    def __post_init__(self) -> None:
        sizes = list(self.batch_sizes)
        if not sizes or not all(is_number(b, integer=True) and b >= 1 for b in sizes):
            raise ValueError(f"batch_sizes must be positive integers, got {sizes}")
        for name in ("tolerance", "max_seconds", "max_spread"):
            check_number(name, getattr(self, name), "(0, inf)")
        check_number("threads", self.threads, "[1, inf)", integer=True)

    def metrics(self) -> list[str]:
        """The metric names a job with these options logs (what ``sweep.objectives`` may name)."""
        names = ["onnx_max_abs_diff"] if self.onnx else []
        if self.latency:
            names += [metric_name(base, b) for b in self.batch_sizes for base in ("latency_ms", "latency_spread")]
        return names


def metric_name(base: str, batch: int) -> str:
    """``latency_ms`` for batch 1, ``latency_ms_b64`` for batch 64 (likewise ``latency_spread``)."""
    return base if batch == 1 else f"{base}_b{batch}"


@dataclass
class Deployment:
    """What ``measure_deployment`` found: metrics, tags and the ONNX file (None when not exported)."""

    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    onnx_path: Path | None = None


def measure_deployment(
    model: nn.Module, example, folder: Path, options: DeploymentOptions, program: ExportedProgram | None = None
) -> Deployment:
    """Export and time ``model`` on inputs shaped like ``example`` (see the module docstring)."""
    result, runner = Deployment(), None
    if options.onnx:
        try:
            exported = export_onnx(model, example, Path(folder) / ONNX_FILE, options.tolerance, program)
        except ExportFailed as exc:
            log.warning(f"ONNX export failed, the trial goes on without it: {exc}")
            result.tags[ONNX] = f"failed: {exc}"[:5000]
        else:
            result.onnx_path, result.tags[ONNX] = exported.path, "exported"
            result.metrics["onnx_max_abs_diff"] = exported.max_abs_diff
            runner = session(exported.path, options.threads)
    if options.latency:
        result.tags[LATENCY_SOURCE] = "onnxruntime" if runner is not None else "torch"
        timing = {"max_seconds": options.max_seconds, "max_spread": options.max_spread}
        for batch in options.batch_sizes:
            latency: Latency = (
                onnx_latency(runner, example, batch, **timing)
                if runner is not None
                else torch_latency(model.cpu(), example, batch, options.threads, **timing)
            )
            if not latency.stable:
                log.warning(
                    f"latency at batch {batch}: spread {100 * latency.spread:.0f}% after {latency.runs} runs "
                    f"(more than {100 * options.max_spread:.0f}%): the machine is busy"
                )
            result.metrics[metric_name("latency_ms", batch)] = latency.median_ms
            result.metrics[metric_name("latency_spread", batch)] = latency.spread
    return result
