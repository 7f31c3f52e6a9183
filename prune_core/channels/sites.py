"""Sites: the entries of parameters, buffers and module attributes that follow channels.

The channel analysis records, for every (name, dim) pair whose entries belong to channel
slots, a ``Site``: a conv's filters (dim 0 of its weight), the matching input channels of the
layers that consume them (dim 1), norm parameters and running statistics, ``num_features``
and the like. A tensor that functional code reads directly (an fx ``get_attr``) is a
``ParamRef`` until a rule decides which of its dims follow channels. ``owner`` names the
module a site belongs to, and ``replace_tensor`` swaps a parameter or buffer for a resized one.

>>> owner("layer1.0.conv1.weight")
'layer1.0.conv1'
>>> Site(np.array([3, 4]), "parameter", "filter").role
'filter'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class ParamRef:
    """A parameter or buffer used directly by functional code (an fx ``get_attr``)."""

    name: str
    shape: tuple[int, ...]


@dataclass
class Site:
    """Entries of a parameter, buffer or module attribute that belong to channel slots.

    ``kind`` is "parameter", "buffer" or "attribute"; ``role`` is "filter" (a prunable
    layer's own output channels), "input" (a consuming layer's input channels) or "follower"
    (everything else that follows the channels: norm parameters, grouped-conv rows, counts).
    """

    vector: np.ndarray
    kind: str
    role: str


def owner(name: str) -> str:
    """The module path owning a parameter/buffer/attribute name ('layer1.conv.weight' -> 'layer1.conv')."""
    return name.rpartition(".")[0]


def replace_tensor(modules: dict[str, nn.Module], name: str, value: torch.Tensor) -> None:
    """Make ``value`` the parameter or buffer ``name`` (a dotted path into ``modules``), keeping its kind
    and ``requires_grad`` flag."""
    module_name, _, attr = name.rpartition(".")
    module = modules[module_name]
    old = getattr(module, attr)
    if isinstance(old, nn.Parameter):
        setattr(module, attr, nn.Parameter(value, requires_grad=old.requires_grad))
    else:
        module._buffers[attr] = value
