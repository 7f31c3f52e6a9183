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
    """A parameter or buffer used directly by functional code (an fx ``get_attr``). ``shape`` is the tensor's
    own; ``transposed``: a 2-D one read as its transpose (``weight.T``, ``weight.t()``), which only a rule that
    knows what the transpose means uses (a linear layer's ``x @ weight.T``); the others give up on it."""

    name: str
    shape: tuple[int, ...]
    transposed: bool = False


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


def replace_tensor(modules: dict[str, nn.Module], name: str, value: torch.Tensor, tied: tuple[str, ...] = ()) -> None:
    """Make ``value`` the parameter or buffer ``name`` (a dotted path into ``modules``), keeping its kind
    and ``requires_grad`` flag; ``tied``: the other names of the same tensor (``tied_names``), which get the
    very same new one, so that weights tied before stay tied."""
    module_name, _, attr = name.rpartition(".")
    old = getattr(modules[module_name], attr)
    new = nn.Parameter(value, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else value
    for each in (name, *tied):
        module_name, _, attr = each.rpartition(".")
        if isinstance(new, nn.Parameter):
            setattr(modules[module_name], attr, new)
        else:
            modules[module_name]._buffers[attr] = new


def tied_names(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """For each parameter or buffer that one tensor holds under several names (tied weights: a language model's
    output layer and its token embedding), its other names.

    >>> net = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    >>> net[1].weight = net[0].weight
    >>> tied_names(net)
    {'0.weight': ('1.weight',), '1.weight': ('0.weight',)}
    """
    by_tensor: dict[int, list[str]] = {}
    for name, tensor in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        by_tensor.setdefault(id(tensor), []).append(name)
    shared = [names for names in by_tensor.values() if len(names) > 1]
    return {name: tuple(n for n in names if n != name) for names in shared for name in names}
