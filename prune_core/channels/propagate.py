"""Run a traced network once on an example input and propagate channel labels through it.

``ChannelPropagation`` is a torch.fx ``Interpreter``: it executes every node (so every shape
is known exactly; a convolution, linear layer or BatchNorm only as far as its output's shape,
``shape_only``) and, beside the value, computes the node's channel labels
(see ``labels``). Along the way it records *sites*: the (parameter or attribute, dimension)
pairs whose entries belong to channel slots -- a conv's filters (dim 0 of its weight), the
matching input channels of the layers that consume them (dim 1), norm parameters and
running statistics, ``num_features`` and the like. What each operation does to the labels
is its family's rule (``family``), looked up by ``ops``. ``graph`` turns the
result into removal units. Values are freed after their last use (fx's garbage collection), labels are small
integer arrays.

>>> import torch, torch.nn as nn
>>> from prune_core.channels.tracing import trace_model
>>> gm = trace_model(nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Conv1d(4, 2, 3)))
>>> prop = ChannelPropagation(gm)
>>> _ = prop.run(torch.zeros(1, 1, 16))
>>> sorted(key for key in prop.sites if key[0].startswith("0."))
[('0.bias', 0), ('0.weight', 0), ('0.weight', 1)]

A leaf module that takes one list of tensors (a detector's concatenation) runs for real, and the rest of
the pass stays shape-only:

>>> from prune_core.channels.tracing import traced_forward
>>> class Concat(nn.Module):
...     def forward(self, parts):
...         return torch.cat(parts, 1)
>>> class TwoBranches(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.a, self.b, self.cat = nn.Conv1d(1, 2, 3), nn.Conv1d(1, 2, 3), Concat()
...     def forward(self, x):
...         return self.cat([self.a(x), self.b(x)])
>>> net = TwoBranches()
>>> root, graph, _ = traced_forward(net, [Concat])
>>> ChannelPropagation.over(root, graph, net, (torch.zeros(1, 1, 16),), "heads").shape_only
True

A forward recorded as it ran (``recorder``) is not run again: each node's recorded value is replayed.

>>> from prune_core.channels.example import ExampleInput
>>> class Halves(nn.Module):   # iterating a chunk: symbolic tracing refuses it, the forward is recorded
...     def __init__(self):
...         super().__init__()
...         self.conv = nn.Conv1d(1, 4, 3)
...     def forward(self, x):
...         return sum(part for part in self.conv(x).chunk(2, 1))
>>> net, x = Halves(), torch.zeros(1, 1, 16)
>>> root, graph, values = traced_forward(net, (), ExampleInput.of(x))
>>> len(values), ChannelPropagation.over(root, graph, net, (x,), "heads", values).shape_only, values
(6, False, {})
"""

from __future__ import annotations

import numpy as np
import torch
from torch import fx, nn
from torch.fx.immutable_collections import immutable_dict, immutable_list
from torch.fx.node import map_arg

from prune_core.channels import ops
from prune_core.channels.labels import SlotTable, label_arrays
from prune_core.channels.recorder import tensors_in
from prune_core.channels.rule_call import OpCall
from prune_core.channels.shape_only import is_expanded, materialized, shape_only_output
from prune_core.channels.sites import ParamRef, Site, tied_names

# Functions that take a layer's weight as their second argument.
_WEIGHTED = {
    torch.conv1d,
    torch.conv2d,
    torch.conv3d,
    nn.functional.conv1d,
    nn.functional.conv2d,
    nn.functional.conv3d,
    nn.functional.linear,
}


NETWORK_OUTPUT = "reaches the network output"  # the reason of every channel of the network's outputs


class ExampleInputMismatch(ValueError):
    """The example input does not run through the model."""


class ChannelPropagation(fx.Interpreter):
    """Executes ``gm`` and records channel labels, slots and sites (see module docstring)."""

    def __init__(
        self,
        root: nn.Module,
        graph: fx.Graph | None = None,
        model: nn.Module | None = None,
        attention_units: str = "heads",
        shape_only: bool = True,
        recorded: dict[fx.Node, object] | None = None,
    ) -> None:
        """Run ``graph`` (by default ``root``'s own, a GraphModule's) with ``root`` holding what its nodes name;
        ``model`` is the analysed network, whose parameters and modules the sites name (by default ``root``).
        ``recorded``: the values of a recorded forward (``recorder``), given as the nodes' results instead of
        running them again (each is taken out of the dict as it is used)."""
        super().__init__(root, garbage_collect_values=True, graph=graph)
        self.shape_only = shape_only  # convolutions, linear layers, BatchNorms: zeros of their output's shape
        self.recorded = recorded
        self.attention_units = attention_units  # what a fused-qkv attention's units are: "heads" or "head_dims"
        model = root if model is None else model  # a GraphModule holds only the leaves it calls
        self.slots = SlotTable()
        self.labels: dict[fx.Node, object] = {}
        self.sites: dict[tuple[str, int], Site] = {}
        self.producer_slots: dict[str, np.ndarray] = {}
        self.grouped_convs: dict[str, int] = {}
        self.norm_groups: dict[str, int] = {}
        self.renormalizing: set[str] = set()
        self.products: set[str] = set()  # producers whose removed filters the surgery check zeroes too
        self.unsupported: dict[str, None] = {}  # operations not understood, in the order met
        self._node: fx.Node | None = None  # the node being run
        self._zeros: set[fx.Node] = set()  # nodes whose value is shape-only zeros (``shape_only``)
        self.modules = self.submodules if model is root else dict(model.named_modules())
        self.parameter_shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
        self.tied = tied_names(model)  # the other names of a tensor held under several (tied weights)

    @classmethod
    def over(
        cls,
        root: nn.Module,
        graph: fx.Graph,
        model: nn.Module,
        values: tuple,
        attention_units: str,
        recorded: dict[fx.Node, object] | None = None,
    ) -> ChannelPropagation:
        """The propagation of the example's positional arguments ``values`` through ``graph`` (``traced_forward``'s
        ``root`` and graph), with convolutions, linear layers and BatchNorms shape-only, or, if that fails (a shape
        that depends on their values), all for real. A recorded forward's ``recorded`` values are replayed instead
        (they are the real ones, on the path the recording took)."""
        if recorded is not None:
            prop = cls(root, graph, model, attention_units, shape_only=False, recorded=recorded)
            prop.run(*values)
            return prop
        try:
            prop = cls(root, graph, model, attention_units)
            prop.run(*values)
        except Exception:  # the real pass raises the example's own error, if there is one
            prop = cls(root, graph, model, attention_units, shape_only=False)
            prop.run(*values)
        return prop

    # -- fx.Interpreter ----------------------------------------------------------------
    def run_node(self, n: fx.Node):
        # fx's own run_node also records the node as the current one for tracebacks of code that traces or
        # exports while it runs; nothing here does, and that context costs as much as a small rule
        self._node = n
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        try:
            result = self._execute(n, args, kwargs)
        except Exception as exc:
            what = ops.describe_target(n.target)
            if n.op == "call_module":
                what = f"module `{n.target}` ({type(self.modules[n.target]).__name__})"
            shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
            raise ExampleInputMismatch(
                f"the example input does not fit the model: {what} failed on inputs of shape {shapes}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        lab_args = map_arg(n.args, lambda a: self.labels.get(a))
        lab_kwargs = map_arg(n.kwargs, lambda a: self.labels.get(a))
        self.labels[n] = self._propagate(n, args, kwargs, lab_args, lab_kwargs, result)
        return result

    def _execute(self, n: fx.Node, args: tuple, kwargs: dict):
        """``n`` run on ``args``; where it refuses an argument that is expanded zeros (an in-place update of a
        shape-only output), run again on copies of its own: the pass stays shape-only. Likewise where it refuses
        to change a list or dict argument: fx hands them over immutable, where the model's own code passes
        mutable ones (a wrapped function that fills in a list it is given). A recorded value is given as it is.

        >>> class InPlace(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.conv = nn.Conv1d(1, 2, 3)
        ...     def forward(self, x):
        ...         y = self.conv(x)
        ...         return y.add_(1) * torch.relu_(y)
        >>> net = InPlace()
        >>> graph = torch.fx.symbolic_trace(net).graph
        >>> ChannelPropagation.over(net, graph, net, (torch.ones(1, 1, 8),), "heads").shape_only
        True
        >>> def clipped(sizes, limit):   # fills in the list it is given, as torchvision's 3-D Swin does
        ...     sizes[0] = min(sizes[0], limit)
        ...     return sizes
        >>> class Windowed(nn.Module):
        ...     def forward(self, x):
        ...         return x.view(clipped([4, 2], x.shape[0]))
        >>> net = Windowed()
        >>> graph = torch.fx.Tracer(autowrap_functions=(clipped,)).trace(net)   # a call_function node, as fx.wrap's
        >>> ChannelPropagation.over(net, graph, net, (torch.ones(2, 2),), "heads").shape_only
        True
        """
        if self.recorded is not None and n in self.recorded:
            return self.recorded.pop(n)
        try:
            return getattr(self, n.op)(n.target, args, kwargs)
        except Exception:
            if not any(map(is_expanded, args)) and not _holds_immutable((args, kwargs)):
                raise
        return getattr(self, n.op)(n.target, materialized(_mutable(args)), _mutable(kwargs))

    def call_module(self, target, args, kwargs):
        module = self.submodules.get(target)
        if module is None:  # a path the module listing gives under another name (a shared module)
            module = self.fetch_attr(target)
        if not self.shape_only:
            return module(*args, **kwargs)
        source = self._node.args[0] if self._node is not None and len(self._node.args) == 1 else None
        own_input = isinstance(source, fx.Node) and source in self._zeros and len(source.users) == 1
        shaped = shape_only_output(module, args, kwargs, own_input)
        if shaped is None:
            return module(*args, **kwargs)
        self._zeros.add(self._node)
        return shaped

    # -- bookkeeping -------------------------------------------------------------------
    def fresh(self, value, reason: str):
        """Labels for ``value`` (a tensor or a tuple of them) that carry no channels: one blocked slot."""
        if isinstance(value, torch.Tensor):
            return np.full([1] * value.ndim, self.slots.new_blocked(reason), dtype=np.int64)
        if isinstance(value, (tuple, list)):
            return tuple(self.fresh(v, reason) for v in value)
        return None

    def block(self, labels, reason: str) -> None:
        """Keep every channel in ``labels`` (any nested structure), for ``reason``."""
        for array in label_arrays(labels):
            self.slots.block(array, reason)

    def site(self, name: str, dim: int, vector: np.ndarray, role: str, kind: str | None = None) -> None:
        """Entries of ``name`` (a parameter, buffer or, with ``kind="attribute"``, an integer attribute) along
        ``dim`` follow the slots in ``vector``; a second use unifies them (see ``sites.Site`` for ``role``)."""
        if kind is None:
            kind = "parameter" if name in self.parameter_shapes else "buffer"
        for each in (name, *self.tied.get(name, ())):  # a tied tensor's names lose the same entries
            existing = self.sites.get((each, dim))
            if existing is None:
                continue
            if existing.vector.shape == vector.shape:
                self.slots.unify_arrays(existing.vector, vector)
            else:
                reason = f"`{name}` is used with {existing.vector.size} and {vector.size} channels"
                self.slots.block(existing.vector, reason)
                self.slots.block(vector, reason)
        if (name, dim) not in self.sites:
            self.sites[(name, dim)] = Site(np.asarray(vector, dtype=np.int64).copy(), kind, role)

    def module_sites(self, fqn: str, names: tuple[str, ...], vector: np.ndarray, role: str = "follower") -> None:
        """``site`` for each of module ``fqn``'s tensors ``names`` that exists, along dim 0."""
        module = self.modules[fqn]
        for name in names:
            if getattr(module, name, None) is not None:
                self.site(f"{fqn}.{name}", 0, vector, role)

    def producer(self, fqn: str, count: int) -> np.ndarray:
        """The slots of prunable layer ``fqn``'s ``count`` output channels (new ones on first use)."""
        slots = self.producer_slots.get(fqn)
        if slots is None:
            slots = self.producer_slots[fqn] = self.slots.new_slots(count)
        return slots

    def _unsupported(self, n: fx.Node, lab_args, lab_kwargs, result, what: str):
        self.unsupported[what] = None
        self.block((lab_args, lab_kwargs), f"used by unsupported operation `{what}` (node `{n.name}`)")
        return self.fresh(result, f"output of unsupported operation `{what}` (node `{n.name}`)")

    # -- dispatch ----------------------------------------------------------------------
    def _propagate(self, n, args, kwargs, lab_args, lab_kwargs, result):
        if n.op == "placeholder":
            return self.fresh(result, f"network input `{n.target}`")
        if n.op == "get_attr" and n.meta.get("constant"):  # a recorded tensor of unknown origin
            return self.fresh(result, f"tensor constant `{n.target}` of the recorded forward")
        if n.op == "get_attr":
            return ParamRef(n.target, tuple(result.shape)) if isinstance(result, torch.Tensor) else None
        if n.op == "output":
            self.block(lab_args, NETWORK_OUTPUT)
            return None
        if not tensors_in(result):  # sizes, flags; a dataclass or object holding tensors is not one of them
            return None
        if n.op == "call_module":
            module = self.modules[n.target]
            family = ops.module_family(module)
            what = f"{n.target} ({type(module).__name__})"
        elif n.op == "call_function":
            family, what = ops.function_family(n.target), ops.describe_target(n.target)
        else:
            family, what = ops.method_family(n.target), f"Tensor.{n.target}"
        call = OpCall(n, args, kwargs, lab_args, lab_kwargs, result)
        labels = family.rule(self, call) if family is not None else None
        if labels is None:
            if n.op == "call_function" and n.target in _WEIGHTED:
                weight = lab_args[1] if len(lab_args) > 1 else lab_kwargs.get("weight")
                if not isinstance(weight, ParamRef):  # e.g. standardised in forward (weight standardisation)
                    what += (
                        " with a weight computed in forward, not a parameter (weight standardisation or the "
                        "like: removing a channel would change it, so its channels are kept)"
                    )
            return self._unsupported(n, lab_args, lab_kwargs, result, what)
        return labels


def _holds_immutable(value: object) -> bool:
    """Whether ``value`` (arguments, nested in tuples, lists and dicts) holds a list or dict fx made immutable."""
    if isinstance(value, (immutable_list, immutable_dict)):
        return True
    if isinstance(value, (tuple, list)):
        return any(map(_holds_immutable, value))
    return isinstance(value, dict) and any(map(_holds_immutable, value.values()))


def _mutable(value):
    """``value`` with every list and dict fx made immutable copied into a plain one (tuples rebuilt around them)."""
    if isinstance(value, list):
        return [_mutable(item) for item in value]
    if type(value) is tuple:
        return tuple(_mutable(item) for item in value)
    if isinstance(value, dict):
        return {key: _mutable(item) for key, item in value.items()}
    return value
