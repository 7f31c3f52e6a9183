"""Trace a model into a torch.fx graph, with errors a user can act on.

torch.fx is used rather than walking the autograd graph of a forward pass: fx gives every
operation with its module path, its arguments (so ``dim`` of a ``cat`` or the order of a
``permute`` are known exactly), parameters used directly in functional code (``get_attr``),
and operations that have no gradient. Modules whose channel behaviour is known (convs,
norms, activations, pools, ...) are kept as leaves; everything else is traced through, so
nested submodules at any depth and functional code are seen operation by operation.

The model is traced in training mode, so that branches used only in training (auxiliary
heads) are part of the graph and are kept consistent by surgery.

>>> import torch, torch.nn as nn
>>> gm = trace_model(nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU()))
>>> [n.op for n in gm.graph.nodes]
['placeholder', 'call_module', 'call_module', 'output']
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import fx, nn

from prune_core.ops import module_kind


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


def trace_model(model: nn.Module, leaf_modules: Iterable[str | type] = ()) -> fx.GraphModule:
    """Symbolically trace ``model`` (in training mode) into a GraphModule sharing its modules.

    ``leaf_modules`` names modules (dotted paths) or module classes that are not traced into;
    their channels are left unpruned.
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
    modes = {m: m.training for m in model.modules()}
    model.train()
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        where = tracer.failed_at
        place = f"the forward of `{where}` ({type(known[where]).__name__})" if where else "the model's forward"
        fix = (
            f"mark it as a leaf with leaf_modules=[{where!r}] (its channels are then not pruned)"
            if where
            else "make the forward traceable by torch.fx (no Python control flow on tensor values)"
        )
        raise TraceFailure(
            f"could not trace the model: {place} raised {type(exc).__name__}: {exc}. To go on, {fix}, "
            "or exclude it from pruning."
        ) from exc
    finally:
        for module, mode in modes.items():
            module.training = mode
    return fx.GraphModule(model, graph)


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
