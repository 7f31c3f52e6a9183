"""The returned network exported once by ``torch.export``, for its ONNX file and its MLflow model both.

A job hands the network it returns to two exporters: ``torch.onnx.export`` (the deployment's
``model.onnx``) and MLflow's pt2 flavour (``mlflow.pytorch.log_model(serialization_format="pt2")``,
the logged model). Each runs ``torch.export.export`` on it, a tenth of a second or more per call.

- ``export_program(model, example)`` exports a copy of ``model`` in eval mode once, the batch
  dimension of every input dynamic (as both exporters ask). It returns ``None`` when
  ``torch.export`` cannot export it: each consumer then exports on its own, as it would without a
  shared program, and reports its own failure.
- ``exports_as(model, program)`` is a context in which ``torch.export.export(model, ...)`` returns
  ``program``, and any other module is exported as usual. MLflow's flavour takes no program, and
  calls ``torch.export.export`` on the module it is given: this is how it gets the shared one.

The caller's model is never changed: a copy is exported.

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(24, 2))
>>> program = export_program(net, torch.randn(2, 1, 8))
>>> program.module()(torch.randn(5, 1, 8)).shape, net.training  # any batch size; the model stays in training
(torch.Size([5, 2]), True)
>>> with exports_as(net, program):
...     torch.export.export(net, (torch.randn(2, 1, 8),)) is program
True
>>> torch.export.export(net.eval(), (torch.randn(2, 1, 8),)) is program  # outside the context: exported anew
False
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator

import torch
from torch import nn
from torch.export import ExportedProgram

log = logging.getLogger(__name__)


def example_inputs(example) -> tuple[torch.Tensor, ...]:
    """``example`` (a tensor, or a tuple or list of them) as the tuple of CPU tensors an exporter takes."""
    return tuple(t.detach().cpu() for t in (example if isinstance(example, (tuple, list)) else (example,)))


def batch_dynamic(inputs: tuple[torch.Tensor, ...]) -> tuple[dict[int, torch.export.Dim], ...]:
    """The ``dynamic_shapes`` that leave every input's first dimension, the batch, free."""
    batch = torch.export.Dim("batch")
    return tuple({0: batch} for _ in inputs)


def export_program(model: nn.Module, example) -> ExportedProgram | None:
    """``model`` exported once for both exporters, or None (see the module docstring)."""
    inputs = example_inputs(example)
    try:
        return torch.export.export(copy.deepcopy(model).cpu().eval(), inputs, dynamic_shapes=batch_dynamic(inputs))
    except Exception as exc:  # each consumer exports on its own and says why it failed
        log.debug(f"no shared torch.export program ({type(exc).__name__}: {exc})")
        return None


@contextlib.contextmanager
def exports_as(model: nn.Module, program: ExportedProgram | None) -> Iterator[None]:
    """Within the context, ``torch.export.export(model, ...)`` returns ``program`` (nothing changes when it is None)."""
    if program is None:
        yield
        return
    export = torch.export.export

    def shared(module, *args, **kwargs):
        return program if module is model else export(module, *args, **kwargs)

    torch.export.export = shared
    try:
        yield
    finally:
        torch.export.export = export
