"""Trace a model into a torch.fx graph, with errors a user can act on.

torch.fx is used rather than walking the autograd graph of a forward pass: fx gives every
operation with its module path, its arguments (so ``dim`` of a ``cat`` or the order of a
``permute`` are known exactly), parameters used directly in functional code (``get_attr``),
and operations that have no gradient. Modules whose channel behaviour is known (convs,
norms, activations, pools, ...) are kept as leaves; everything else is traced through, so
nested submodules at any depth and functional code are seen operation by operation.

The model is traced in training mode, so that branches used only in training (auxiliary
heads) are part of the graph and are kept consistent by surgery.

Where symbolic tracing fails (any Python that proxies cannot run: iterating a ``chunk``,
``len``/``int``/``math`` on sizes, ``None`` on one path, a branch on shapes or values) or the
example input is not a tuple of tensors (a list of images, keyword arguments), the forward is
*recorded as it runs* on the example input instead (``recorder``): a ``TorchFunctionMode``
writes down each torch function and Tensor method with its real arguments, tensors known by
identity, and the same leaf modules as ``call_module`` nodes. That choice over the others:

- ``torch.export.export(strict=False)`` and ``make_fx`` give ATen graphs, where modules are
  decomposed into ``aten.convolution``, ``aten.native_batch_norm`` and friends: every rule
  here is written for the function level (``F.relu``, ``Tensor.view``, leaf modules), and
  export still refuses data-dependent Python and costs seconds on a ResNet-50;
- the recording yields exactly the nodes symbolic tracing yields, so every rule, the surgery
  and the report apply unchanged, and no Python a model uses can stop it: only an error of the
  model's own forward on the example input does (``TraceFailure`` quoting the model's frame).

Symbolic tracing stays the first choice where it works: it is faster (no forward pass) and
keeps sizes symbolic, so a reshape to ``x.shape[1]`` follows pruning; a recording has the
example's sizes as constants (channels reshaped to a constant size are kept) and takes the
example's path at every branch (the surgery check catches a branch that turns after pruning).
A model is recorded in training mode, or in the caller's eval mode where training mode raises.
The recording keeps the value of every node (``Traced.values``), and the label propagation
replays them instead of running the forward again (a detector's forward is seconds).

>>> import torch, torch.nn as nn
>>> gm = trace_model(nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU()))
>>> [n.op for n in gm.graph.nodes]
['placeholder', 'call_module', 'call_module', 'output']
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import fx, nn
from torch.fx._lazy_graph_module import _LazyGraphModule  # compiles its Python code on first call only

from prune_core.channels.example import ExampleInput
from prune_core.channels.ops import module_family
from prune_core.channels.preserve import preserved, set_training
from prune_core.channels.recorder import record_forward


class TraceFailure(ValueError):
    """The model could not be traced; the message names the module and the fix."""


class Traced(NamedTuple):
    """What ``traced_forward`` found: the module the nodes' targets are paths into, the graph, and, for a forward
    recorded as it ran, the value each node that ran an operation gave (None for a symbolic trace)."""

    root: nn.Module
    graph: fx.Graph
    values: dict[fx.Node, object] | None = None


# Argument types fx's ``Tracer.create_arg`` hands on unchanged, after checks for parameters, buffers, modules and
# constants that none of them can be: proxies (their node) and plain values. ``_ChannelTracer`` takes them first.
_PLAIN_ARGUMENTS = frozenset(
    (
        int,
        float,
        bool,
        str,
        complex,
        type(None),
        type(...),
        torch.dtype,
        torch.device,
        torch.memory_format,
        torch.layout,
    )
)


class _ChannelTracer(fx.Tracer):
    def __init__(self, leaf_modules: set[str], leaf_types: tuple[type, ...]) -> None:
        super().__init__()
        self.leaf_names = leaf_modules
        self.leaf_types = leaf_types
        self.failed_at: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_names or isinstance(m, self.leaf_types):
            return True
        if module_family(m) is not None:
            return True
        if next(m.children(), None) is not None:  # torch.nn's compositions too (nn.TransformerEncoderLayer)
            return False
        return super().is_leaf_module(m, module_qualified_name)

    def create_arg(self, a):
        # the same result as fx's own, for the most common arguments without its lookups (about a ninth of a trace)
        kind = type(a)
        if kind is fx.Proxy:
            return a.node
        if kind in _PLAIN_ARGUMENTS:
            return a
        if kind is tuple:
            return tuple([self.create_arg(item) for item in a])
        if kind is list:
            return [self.create_arg(item) for item in a]
        return super().create_arg(a)

    def call_module(self, m, forward, args, kwargs):
        # fx's own call_module also keeps a module stack for each node's ``nn_module_stack``, a dict copied onto
        # every node (a fifth of a trace); nothing here reads it, so a module call is only a leaf node or its forward
        try:
            name = self.path_of_module(m)
            if self.is_leaf_module(m, name):
                return self.create_proxy("call_module", name, args, kwargs)
            return forward(*args, **kwargs)
        except Exception:
            if self.failed_at is None:
                self.failed_at = self.path_of_module(m)
            raise


def trace_model(
    model: nn.Module, leaf_modules: Iterable[str | type] = (), example_input: ExampleInput | None = None
) -> fx.GraphModule:
    """Trace ``model`` (in training mode) into a GraphModule sharing its modules.

    ``leaf_modules`` names modules (dotted paths) or module classes that are not traced into;
    their channels are left unpruned. With ``example_input`` (an ``ExampleInput``), a model that
    symbolic tracing refuses, or one whose example is not a tuple of tensors, is recorded as it runs
    on it (``recorder``); only an error of the model's own forward on the example then stops it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    with preserved(model):
        root, graph, _ = traced_forward(model, leaf_modules, example_input)
    return root if isinstance(root, fx.GraphModule) else _LazyGraphModule(root, graph)


def traced_forward(
    model: nn.Module, leaf_modules: Iterable[str | type] = (), example_input: ExampleInput | None = None
) -> Traced:
    """``trace_model``'s graph with the module its nodes' targets are paths into: the model itself where
    symbolic tracing works and stored no tensor constant (no GraphModule is built), else a GraphModule; for a
    recorded forward, also the values it gave (``Traced``).

    The caller restores the model's modes and buffers (``preserved``): this leaves it in training mode (a
    recorded forward's buffer updates already undone).

    >>> net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU())
    >>> root, graph, values = traced_forward(net)
    >>> root is net, [n.op for n in graph.nodes], values
    (True, ['placeholder', 'call_module', 'call_module', 'output'], None)
    """
    names = {m for m in leaf_modules if isinstance(m, str)}
    types = tuple(m for m in leaf_modules if isinstance(m, type))
    unknown = sorted(names - dict(model.named_modules()).keys()) if names else []
    if unknown:
        raise ValueError(f"leaf_modules names {unknown} that are not modules of the model")
    tracer = _ChannelTracer(names, types)
    plain = example_input is None or (
        not example_input.kwargs and all(isinstance(x, torch.Tensor) for x in example_input.args)
    )
    attributes = set(vars(model))
    caller_mode = model.training
    set_training(model, True)
    try:
        if plain:
            try:
                graph = tracer.trace(model)
            except Exception as exc:
                if example_input is None:
                    raise _trace_failure(tracer, dict(model.named_modules()), exc) from exc
            else:
                if set(vars(model)) == attributes:
                    return Traced(model, graph)
                gm = _LazyGraphModule(model, graph)  # copies the tensor constants fx stored...
                return Traced(gm, gm.graph)
        with preserved(model):  # a forward recorded in training mode updates running statistics: not for the analysis
            gm, values = _record(model, example_input, lambda m, name: tracer.is_leaf_module(m, name), caller_mode)
        return Traced(gm, gm.graph, values)
    finally:
        for name in set(vars(model)) - attributes:  # ...on the model, which are taken off it again
            delattr(model, name)


def _record(
    model: nn.Module, example: ExampleInput, is_leaf, caller_mode: bool
) -> tuple[fx.GraphModule, dict[fx.Node, object]]:
    """The recorded forward in training mode, or in the caller's eval mode where training mode raises
    (a detector that wants targets, a BatchNorm on a batch of one)."""
    try:
        return record_forward(model, example, is_leaf)
    except Exception as exc:
        if caller_mode:
            raise _forward_failure(exc) from exc
        first = exc
    set_training(model, False)
    try:
        return record_forward(model, example, is_leaf)
    except Exception as exc:
        raise _forward_failure(exc) from first


# the folders of torch and prune_core: frames there are not the model's own
_LIBRARIES = tuple(
    str(folder) + os.sep for folder in (Path(torch.__file__).resolve().parent, Path(__file__).resolve().parents[1])
)


def _forward_failure(exc: Exception) -> TraceFailure:
    """The error for a forward that raised on the example input, quoting the model's own frame."""
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if not str(Path(f.filename).resolve()).startswith(_LIBRARIES)
    ]
    where = f" at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}: `{frames[-1].line}`" if frames else ""
    return TraceFailure(
        f"the model's own forward raised {type(exc).__name__} on the example input{where}: {exc}. The analysis "
        "runs the forward once as it is: give an example input it runs on (the same form as in training)."
    )


def _trace_failure(tracer: _ChannelTracer, known: dict[str, nn.Module], exc: Exception) -> TraceFailure:
    """The error for a model symbolic tracing refused and no example input was given to record it on."""
    where = tracer.failed_at
    place = f"the forward of `{where}` ({type(known[where]).__name__})" if where else "the model's forward"
    fix = (
        f"mark it as a leaf with leaf_modules=[{where!r}] (its channels are then not pruned)"
        if where
        else "give an example input, on which the forward is recorded as it runs"
    )
    return TraceFailure(
        f"could not trace the model: {place} raised {type(exc).__name__}: {exc}. To go on, {fix}, "
        "or exclude it from pruning."
    )


def example_inputs(model: nn.Module, example_input) -> ExampleInput:
    """``example_input`` in any of its forms (``ExampleInput.of``), checked against the model's device."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return ExampleInput.of(example_input).check_device(model)
