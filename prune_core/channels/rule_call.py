"""What a channel rule is given: the running propagation, seen through ``Propagation``, and the ``OpCall``.

A rule is a function ``rule(prop, call)`` (see ``rules``). ``Propagation`` lists what a rule may
read and record on ``prop``: the slot table, the labels met so far, the model's modules, the
sites of parameters, buffers and attributes that follow channels, and the producer layers' slots.
``propagate.ChannelPropagation`` is the one implementation; naming the protocol here, not that
class, lets the rules and the propagation each import this module and never each other.

>>> import torch, torch.nn as nn
>>> from prune_core.channels.propagate import ChannelPropagation
>>> from prune_core.channels.tracing import trace_model
>>> prop: Propagation = ChannelPropagation(trace_model(nn.Sequential(nn.Conv1d(1, 4, 3))))
>>> _ = prop.run(torch.zeros(1, 1, 8))
>>> prop.producer("0", 4).tolist()      # the conv's 4 filters (slot 0 is the input's, blocked)
[1, 2, 3, 4]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np
from torch import fx, nn

from prune_core.channels.labels import SlotTable, along


class OpCall(NamedTuple):
    """One executed operation: the fx ``node``, its real ``args``/``kwargs``, their ``labels``/``label_kwargs``
    (label arrays, ``ParamRef`` or None, in the same structure) and the real ``result``."""

    node: fx.Node
    args: tuple
    kwargs: dict
    labels: tuple
    label_kwargs: dict
    result: Any


class Propagation(Protocol):
    """The running propagation as a rule sees it (see the module docstring)."""

    slots: SlotTable
    labels: dict[fx.Node, object]
    modules: dict[str, nn.Module]
    grouped_convs: dict[str, int]
    norm_groups: dict[str, int]
    renormalizing: set[str]
    products: set[str]
    attention_units: str

    def run(self, *args: Any) -> Any:
        """Execute the traced graph on ``args``, recording labels."""

    def fresh(self, value: Any, reason: str) -> Any:
        """Labels for ``value`` that carry no channels: one slot blocked for ``reason``."""

    def block(self, labels: Any, reason: str) -> None:
        """Keep every channel in ``labels``, for ``reason``."""

    def site(self, name: str, dim: int, vector: np.ndarray, role: str, kind: str | None = None) -> None:
        """Entries of ``name`` along ``dim`` follow the slots in ``vector``."""

    def module_sites(self, fqn: str, names: tuple[str, ...], vector: np.ndarray, role: str = "follower") -> None:
        """``site`` for each of module ``fqn``'s tensors ``names`` that exists, along dim 0."""

    def producer(self, fqn: str, count: int) -> np.ndarray:
        """The slots of prunable layer ``fqn``'s ``count`` output channels."""


Rule = Callable[[Propagation, OpCall], Any]


def argument(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    """A call's argument ``name``, given at position ``index`` or by keyword (``default`` if neither)."""
    return args[index] if len(args) > index else kwargs.get(name, default)


def dims_of(dims: int | list[int] | tuple[int, ...], ndim: int) -> list[int]:
    """A dim or dims of an ``ndim``-dimensional tensor, non-negative and sorted.

    >>> dims_of(-1, 3), dims_of((2, 0), 3)
    ([2], [0, 2])
    """
    dims = [dims] if isinstance(dims, int) else list(dims)
    return sorted(d % ndim for d in dims)


def channel_vector(prop: Propagation, lab: object, dim: int, size: int, fqn: str) -> np.ndarray:
    """The slots of the ``size`` channels along ``dim`` of an input to layer ``fqn`` with labels ``lab``: blocked
    ones (and ``lab`` blocked) where the labels vary along another dim too or are not an array."""
    vector = along(lab, dim, size) if isinstance(lab, np.ndarray) else None
    if vector is None:
        if isinstance(lab, np.ndarray):
            prop.slots.block(lab, f"channel layout not understood at the input of `{fqn}`")
        vector = np.full(size, prop.slots.new_blocked(f"input of `{fqn}` has no channel information"))
    return vector
