"""Trace a model into a torch.fx graph, with errors a user can act on.

torch.fx is used rather than walking the autograd graph of a forward pass: fx gives every
operation with its module path, its arguments (so ``dim`` of a ``cat`` or the order of a
``permute`` are known exactly), parameters used directly in functional code (``get_attr``),
and operations that have no gradient. Modules whose channel behaviour is known (convs,
norms, activations, pools, ...) are kept as leaves; everything else is traced through, so
nested submodules at any depth and functional code are seen operation by operation.

The model is traced in training mode, so that branches used only in training (auxiliary
heads) are part of the graph and are kept consistent by surgery.

Where symbolic tracing fails on Python control flow (``if x.shape[-1] != skip.shape[-1]:``,
common in encoder-decoder and feature-pyramid models) and an example input is given, the
model is traced again by ``_ConcreteTracer``: it runs every recorded operation on the example
input as it goes, so a branch on shapes, sizes or lengths takes the example's path (the
graph is specialised to it; the surgery check catches a branch that turns after pruning).
A branch on tensor *values* is still refused: that control flow depends on the data.

>>> import torch, torch.nn as nn
>>> gm = trace_model(nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU()))
>>> [n.op for n in gm.graph.nodes]
['placeholder', 'call_module', 'call_module', 'output']
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence

import torch
from torch import fx, nn
from torch.fx.node import map_arg

from prune_core.channels.ops import module_kind
from prune_core.channels.preserve import preserved


class TraceFailure(ValueError):
    """The model could not be traced; the message names the module and the fix."""


class _ChannelTracer(fx.Tracer):
    def __init__(self, leaf_modules: set[str], leaf_types: tuple[type, ...]) -> None:
        super().__init__()
        self.leaf_names = leaf_modules
        self.leaf_types = leaf_types
        self.failed_at: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_names or isinstance(m, self.leaf_types):
            return True
        if module_kind(m) is not None:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_at is None:
                self.failed_at = self.path_of_module(m)
            raise


class _ConcreteProxy(fx.Proxy):
    """A proxy whose ``len`` is the length of its concrete value (a shape, a tuple, a batch)."""

    def __len__(self) -> int:
        return len(self.tracer.values[self.node])


class _ConcreteTracer(_ChannelTracer):
    """Traces while running every operation on the example input (see the module docstring)."""

    def __init__(self, leaf_modules: set[str], leaf_types: tuple[type, ...], inputs: Sequence[torch.Tensor]) -> None:
        super().__init__(leaf_modules, leaf_types)
        self.inputs = list(inputs)
        self.values: dict[fx.Node, object] = {}
        self.running = False  # True while an operation runs for its value: nothing is recorded then

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ConcreteProxy(node, self)

    def call_module(self, m, forward, args, kwargs):
        return forward(*args, **kwargs) if self.running else super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        return attr_val if self.running else super().getattr(attr, attr_val, parameter_proxy_cache)

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None) -> fx.Node:
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        self.running = True
        try:
            self.values[node] = self._value(kind, target, *map_arg((args, kwargs), lambda a: self.values[a]))
        finally:
            self.running = False
        return node

    def _value(self, kind, target, args, kwargs):
        if kind == "placeholder":
            position = sum(n.op == "placeholder" for n in self.values)
            return self.inputs[position] if position < len(self.inputs) else (args[0] if args else None)
        if kind == "get_attr":
            return operator.attrgetter(target)(self.root)
        if kind == "call_function":
            return target(*args, **kwargs)
        if kind == "call_method":
            return getattr(args[0], target)(*args[1:], **kwargs)
        if kind == "call_module":
            return self.root.get_submodule(target)(*args, **kwargs)
        return None  # the output node

    def to_bool(self, obj: fx.Proxy) -> bool:
        value = self.values[obj.node]
        if isinstance(value, torch.Tensor):  # a branch on tensor values: data-dependent, refused
            return super().to_bool(obj)
        return bool(value)

    def iter(self, obj: fx.Proxy):
        value = self.values[obj.node]
        if isinstance(value, torch.Tensor):
            return super().iter(obj)
        return iter([obj[i] for i in range(len(value))])


def trace_model(model: nn.Module, leaf_modules: Iterable[str | type] = (),
                example_input: Sequence[torch.Tensor] | None = None) -> fx.GraphModule:
    """Trace ``model`` (in training mode) into a GraphModule sharing its modules.

    ``leaf_modules`` names modules (dotted paths) or module classes that are not traced into;
    their channels are left unpruned. With ``example_input`` (a tuple of tensors), a model that
    symbolic tracing refuses for shape-dependent control flow is traced concretely on it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = {m for m in leaf_modules if isinstance(m, str)}
    types = tuple(m for m in leaf_modules if isinstance(m, type))
    known = dict(model.named_modules())
    unknown = sorted(names - known.keys())
    if unknown:
        raise ValueError(f"leaf_modules names {unknown} that are not modules of the model")
    tracer = _ChannelTracer(names, types)
    attributes = set(vars(model))
    try:
        with preserved(model):
            model.train()
            try:
                graph = tracer.trace(model)
            except Exception as exc:
                if example_input is None:
                    raise _trace_failure(tracer, known, exc) from exc
                concrete = _ConcreteTracer(names, types, example_input)
                try:
                    graph = concrete.trace(model)
                except Exception:
                    raise _trace_failure(tracer, known, exc) from exc
        return fx.GraphModule(model, graph)  # copies the tensor constants fx stored on the model...
    finally:
        for name in set(vars(model)) - attributes:  # ...which are taken off it again
            delattr(model, name)


def _trace_failure(tracer: _ChannelTracer, known: dict[str, nn.Module], exc: Exception) -> TraceFailure:
    """The error for a model neither tracer could trace, naming the module where it failed."""
    where = tracer.failed_at
    place = f"the forward of `{where}` ({type(known[where]).__name__})" if where else "the model's forward"
    fix = (
        f"mark it as a leaf with leaf_modules=[{where!r}] (its channels are then not pruned)"
        if where
        else "make the forward traceable by torch.fx (no Python control flow on tensor values)"
    )
    return TraceFailure(
        f"could not trace the model: {place} raised {type(exc).__name__}: {exc}. To go on, {fix}, "
        "or exclude it from pruning."
    )


def example_inputs(model: nn.Module, example_input) -> tuple[torch.Tensor, ...]:
    """Check ``example_input`` (a tensor or a tuple of tensors) against the model's device."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
        kinds = [type(x).__name__ for x in inputs]
        raise TypeError(f"example_input must be a tensor or a tuple of tensors, got {kinds or 'an empty tuple'}")
    params = next(iter(model.parameters()), None)
    if params is not None:
        for i, x in enumerate(inputs):
            if x.device != params.device:
                raise ValueError(
                    f"example_input[{i}] is on {x.device} but the model's parameters are on {params.device}; "
                    f"move one of them (e.g. example_input.to('{params.device}'))"
                )
    return inputs
