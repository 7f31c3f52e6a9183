"""Record a model's forward as it really runs into a torch.fx graph (the fallback of ``tracing``).

``record_forward(model, example, is_leaf)`` runs ``model`` once on ``example`` under a
``TorchFunctionMode`` and writes down every torch function and Tensor method that touches a
tensor, as the node fx's symbolic tracer would have made for it (``call_function``,
``call_method``, ``get_attr`` for parameters and buffers used directly). Modules for which
``is_leaf(module, name)`` holds (the ones whose channel behaviour is known) are recorded as
one ``call_module`` node through forward hooks, and what runs inside them is not recorded.
Tensors are known by identity: each value the model computes is matched to the node that
produced it, so any Python between two operations (loops over a ``chunk``, ``len`` and
``int`` on sizes, ``None`` checks, early returns, dataclass outputs) simply runs.

What the recording cannot see, it specialises: sizes and other Python values are constants
of the example (a branch on them takes the example's path; the surgery check catches one
that turns after pruning), and a reshape whose channel size is such a constant keeps those
channels (``rules.reshape``). A tensor that reaches an operation without having come from a
recorded one (made in NumPy, say) is a constant of the graph whose channels are kept.

>>> import torch, torch.nn as nn
>>> class Halves(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.conv = nn.Conv1d(1, 4, 3)
...     def forward(self, x):
...         return [part.relu() for part in self.conv(x).chunk(2, 1)]   # fx cannot iterate this
>>> gm, values = record_forward(Halves(), ExampleInput.of(torch.zeros(1, 1, 8)), lambda m, name: name == "conv")
>>> [n.op for n in gm.graph.nodes]
['placeholder', 'call_module', 'call_method', 'call_function', 'call_function', 'call_method', 'call_method', 'output']
>>> [tuple(values[n].shape) for n in gm.graph.nodes if n.target == "relu"]   # what each gave, as it ran
[(1, 2, 6), (1, 2, 6)]
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable

import torch
from torch import fx, nn
from torch.fx._lazy_graph_module import _LazyGraphModule  # compiles its Python code on first call only
from torch.overrides import TorchFunctionMode

from prune_core.channels.example import ExampleInput

# Tensor methods fx writes as a ``call_function`` on ``operator``.
_OPERATORS = {"__getitem__": operator.getitem, "__setitem__": operator.setitem}


def tensors_in(value) -> list[torch.Tensor]:
    """Every tensor inside ``value``, in order: tuples, lists, dicts, dataclasses, objects with attributes."""
    found: list[torch.Tensor] = []
    _collect(value, found, set())
    return found


def _collect(value, found: list[torch.Tensor], seen: set[int]) -> None:
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        found.append(value)
    elif isinstance(value, (tuple, list, set, frozenset)):
        for item in value:
            _collect(item, found, seen)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, found, seen)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _collect(getattr(value, f.name, None), found, seen)
    elif hasattr(value, "__dict__") and not isinstance(value, (nn.Module, type)):
        for item in vars(value).values():
            _collect(item, found, seen)


def _in_place(name: str) -> bool:
    """Whether a function or method of this name updates a tensor in place (``add_``, ``x[i] = v``)."""
    return name in ("setitem", "__setitem__") or (name.endswith("_") and not name.startswith("__"))


class _Recorder(TorchFunctionMode):
    """The mode and the module hooks that write the graph (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.graph = fx.Graph()
        self.root: dict[str, object] = {}  # get_attr and call_module targets -> what they name
        self.nodes: dict[int, tuple[torch.Tensor, fx.Node]] = {}  # holding the tensor keeps its id unique
        self.leaf_depth = 0
        self.names = {id(t): name for name, t in [*model.named_parameters(), *model.named_buffers()]}
        self.model = model
        self.constants = 0
        self.values: dict[fx.Node, object] = {}  # what each operation gave, as it ran

    # -- tensors and nodes ---------------------------------------------------------------
    def bind(self, tensor: torch.Tensor, node: fx.Node) -> None:
        self.nodes[id(tensor)] = (tensor, node)

    def node_of(self, tensor: torch.Tensor) -> fx.Node:
        known = self.nodes.get(id(tensor))
        if known is not None:
            return known[1]
        name = self.names.get(id(tensor))
        constant = name is None
        if constant:
            name = f"_recorded_constant{self.constants}"
            self.constants += 1
        self.root[name] = tensor
        node = self.graph.get_attr(name)
        node.meta["constant"] = constant
        self.bind(tensor, node)
        return node

    def as_arg(self, value):
        """``value`` with every tensor replaced by its node (containers rebuilt, everything else as is)."""
        if isinstance(value, torch.Tensor):
            return self.node_of(value)
        if isinstance(value, (tuple, list)) and not hasattr(value, "_fields"):
            return type(value)(self.as_arg(v) for v in value)
        if isinstance(value, dict):
            return {k: self.as_arg(v) for k, v in value.items()}
        return value

    def bind_result(self, result, node: fx.Node) -> None:
        """Match the tensors of ``result`` to ``node`` (a tensor) or to its items (nested tuples and lists), and
        keep ``result`` as ``node``'s value."""
        self.values[node] = result
        if isinstance(result, torch.Tensor):
            self.bind(result, node)
        elif isinstance(result, (tuple, list)):
            for i, item in enumerate(result):
                if isinstance(item, (torch.Tensor, tuple, list)):
                    self.bind_result(item, self.graph.call_function(operator.getitem, (node, i)))

    # -- what is recorded ------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.leaf_depth:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if func is torch.Tensor.__iter__:  # iterating a tensor: its rows, as unbind(0)
            rows = args[0].unbind(0)
            self.bind_result(rows, self.graph.call_method("unbind", (self.node_of(args[0]), 0)))
            return iter(rows)
        result = func(*args, **kwargs)
        found = tensors_in(result)
        if not found and not _in_place(name):
            return result  # a size, a flag, a dtype: a constant of the example from here on
        node_args, node_kwargs = self.as_arg(tuple(args)), self.as_arg(kwargs)
        if name == "__get__" and hasattr(func, "__self__"):  # a tensor property: x.T, x.mT, x.data
            node = self.graph.call_function(getattr, (node_args[0], func.__self__.__name__))
        elif name in _OPERATORS and func is getattr(torch.Tensor, name, None):
            node = self.graph.call_function(_OPERATORS[name], node_args, node_kwargs)
        elif name and func is getattr(torch.Tensor, name, None):
            node = self.graph.call_method(name, node_args, node_kwargs)
        else:
            node = self.graph.call_function(func, node_args, node_kwargs)
        self.bind_result(result, node)
        return result

    def leaf_hooks(self, is_leaf: Callable[[nn.Module, str], bool]) -> list:
        handles = []
        for name, module in self.model.named_modules():
            if name and is_leaf(module, name):
                handles.append(module.register_forward_pre_hook(self._enter, with_kwargs=True))
                handles.append(module.register_forward_hook(self._leave(name), with_kwargs=True))
        return handles

    def _enter(self, module, args, kwargs):
        self.leaf_depth += 1

    def _leave(self, name: str):
        def hook(module, args, kwargs, output):
            self.leaf_depth -= 1
            if self.leaf_depth == 0:
                self.root[name] = module
                node = self.graph.call_module(name, self.as_arg(tuple(args)), self.as_arg(kwargs))
                self.bind_result(output, node)

        return hook


def _target_name(node: fx.Node) -> str:
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")


def _drop_unused(graph: fx.Graph) -> None:
    """Remove what feeds neither the output nor an in-place update: values that only steered Python
    (``if x.sum() > 0:``) carry no channels onward."""
    for node in reversed(list(graph.nodes)):
        if node.op not in ("placeholder", "output") and not node.users and not _in_place(_target_name(node)):
            graph.erase_node(node)


def record_forward(
    model: nn.Module, example: ExampleInput, is_leaf: Callable[[nn.Module, str], bool]
) -> tuple[fx.GraphModule, dict[fx.Node, object]]:
    """The forward of ``model`` on ``example`` as a GraphModule (see the module docstring), and the value each
    of its nodes that ran an operation gave (``propagate`` replays them instead of running the forward again).

    The model runs as it is (its mode, without gradients); the caller preserves its state.
    Whatever the forward raises propagates unchanged.
    """
    recorder = _Recorder(model)
    placeholders = []
    for i, value in enumerate(example.args):
        placeholders.append((value, recorder.graph.placeholder(f"input_{i}")))
    for key, value in example.kwargs.items():
        placeholders.append((value, recorder.graph.placeholder(key)))
    for value, node in placeholders:
        recorder.bind_result(value, node)
    handles = recorder.leaf_hooks(is_leaf)
    try:
        with torch.no_grad(), recorder:
            output = example.call(model)
    finally:
        for handle in handles:
            handle.remove()
    recorder.graph.output(tuple(recorder.node_of(t) for t in tensors_in(output)))
    _drop_unused(recorder.graph)
    kept = set(recorder.graph.nodes)
    values = {node: value for node, value in recorder.values.items() if node in kept and node.op != "placeholder"}
    return _LazyGraphModule(recorder.root, recorder.graph), values
