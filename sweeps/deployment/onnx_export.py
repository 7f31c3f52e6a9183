"""ONNX export of a network, checked against PyTorch with onnxruntime.

``export_onnx(model, example, path)`` exports a copy of ``model`` in eval mode with
``torch.onnx.export(..., dynamo=True)`` (the batch dimension dynamic), from ``program`` when given
(``sweeps.deployment.program``: the job's one ``torch.export`` of it), writes it to ``path``
through a temporary name, runs it with onnxruntime on ``example`` and compares the outputs with
PyTorch's. It raises ``ExportFailed`` (with the reason) when the exporter fails or the outputs
differ by more than ``tolerance``; nothing is left at ``path`` then. The caller's model is
never changed (a copy is exported).

>>> import torch, torch.nn as nn, tempfile, pathlib
>>> net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(24, 2))
>>> with tempfile.TemporaryDirectory() as folder:
...     exported = export_onnx(net, torch.randn(2, 1, 8), pathlib.Path(folder) / "model.onnx")
...     exported.path.name, exported.max_abs_diff < 1e-4, net.training
('model.onnx', True, True)
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.export import ExportedProgram

from prune_core.channels import atomic_path
from sweeps.deployment.program import batch_dynamic, example_inputs

TOLERANCE = 1e-4


class ExportFailed(RuntimeError):
    """The network could not be exported to ONNX, or onnxruntime disagrees with PyTorch on it."""


@dataclass(frozen=True)
class OnnxExport:
    """An exported network: its file and the largest absolute difference from PyTorch's outputs."""

    path: Path
    max_abs_diff: float


def _outputs(value) -> list[np.ndarray]:
    values = value if isinstance(value, (tuple, list)) else (value,)
    return [v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in values]


def session(path: Path, threads: int = 1):
    """An onnxruntime CPU session on ``path`` with ``threads`` intra-op threads (one inter-op thread) that do not
    spin between calls (spinning threads take the cores from whatever runs next, a timer included)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def _quiet():
    """The exporter's progress lines and its optimiser's INFO logging kept out of the job's log."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            for logger in loggers:
                logger.setLevel(logging.WARNING)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_onnx(
    model: nn.Module, example, path: Path, tolerance: float = TOLERANCE, program: ExportedProgram | None = None
) -> OnnxExport:
    """Export ``model`` (from ``program`` when given) to ``path`` and check it on ``example`` (see the module
    docstring)."""
    inputs = example_inputs(example)
    network = copy.deepcopy(model).cpu().eval()
    try:
        with _quiet():
            onnx_program = torch.onnx.export(
                network if program is None else program,
                inputs,
                dynamo=True,
                verbose=False,
                dynamic_shapes=batch_dynamic(inputs),
            )
    except Exception as exc:
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()[0][:300]
        raise ExportFailed(f"torch.onnx.export failed: {type(exc).__name__}: {first}") from exc
    with atomic_path(path) as tmp:
        with _quiet():
            onnx_program.save(str(tmp))
        try:
            runner = session(tmp)
            names = [i.name for i in runner.get_inputs()]
            got = runner.run(None, {name: t.numpy() for name, t in zip(names, inputs, strict=True)})
        except Exception as exc:
            raise ExportFailed(f"onnxruntime could not run the export: {type(exc).__name__}: {str(exc)[:300]}") from exc
        with torch.no_grad():
            expected = _outputs(network(*inputs))
        if len(got) != len(expected) or any(a.shape != b.shape for a, b in zip(got, expected, strict=False)):
            raise ExportFailed(
                f"onnxruntime returned shapes {[a.shape for a in got]}, PyTorch {[b.shape for b in expected]}"
            )
        diff = max(float(np.abs(a.astype(np.float64) - b).max(initial=0.0)) for a, b in zip(got, expected, strict=True))
        if not diff <= tolerance:
            raise ExportFailed(f"onnxruntime's outputs differ from PyTorch's by {diff:.3g}, more than {tolerance:g}")
    return OnnxExport(Path(path), diff)
