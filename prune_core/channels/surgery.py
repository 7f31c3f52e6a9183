"""Physically remove channels: smaller tensors, updated layer attributes, no masks.

``remove_units(model, graph, unit_ids)`` replaces every parameter and buffer touched by the
units with a smaller copy (``index_select`` of the kept entries along each pruned dim) and
updates the layers' channel attributes (``in_channels``, ``out_channels``, ``groups``,
``num_features``, ``in_features``, ``embed_dim``, ...: each family's ``attributes``, and what its
``after_surgery`` derives). The model keeps its classes and stays
trainable and scriptable, except that a pruned ``nn.MultiheadAttention`` becomes a
``PrunedMultiheadAttention`` (a subclass whose forward allows its new sizes: ``attention``); any
optimizer holding the old parameters must be rebuilt.

Every surgery is checked (``verify``, on by default): on the graph's example input, the
pruned model must equal the original with the removed channels zeroed at their consumers.
If it does not, the model is put back exactly as it was and ``SurgeryMismatch`` names the
units and layers involved.

>>> import torch, torch.nn as nn
>>> from prune_core.channels.graph import ChannelGraph
>>> net = nn.Sequential(nn.Conv1d(1, 8, 3), nn.ReLU(), nn.Conv1d(8, 4, 3))
>>> g = ChannelGraph.build(net, torch.zeros(1, 1, 16))
>>> remove_units(net, g, [0, 1, 2])
>>> net[0].out_channels, net[2].in_channels
(5, 5)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from prune_core.channels.graph import ChannelGraph
from prune_core.channels.ops import channel_attribute_names, layer_family, module_family
from prune_core.channels.sites import owner, replace_tensor, tied_names
from prune_core.channels.verify import SurgeryMismatch, check_equivalent, reference_outputs


def remove_units(model: nn.Module, graph: ChannelGraph, unit_ids: Sequence[int], verify: bool = True) -> None:
    """Remove the channels of ``unit_ids`` (from ``graph``, built on this model) in place.

    ``verify=False`` skips the equivalence check (see the module docstring).
    """
    unit_ids = list(unit_ids)
    graph.check_removal(unit_ids)
    plan = graph.removal_plan(unit_ids)
    modules = dict(model.named_modules())
    tied = tied_names(model)  # a tied tensor's other names change with it
    if not verify:
        _shrink(modules, graph, plan, tied)
        return
    reference = reference_outputs(model, graph, unit_ids)
    changing = {owner(each) for key in plan for each in (key[0], *tied.get(key[0], ()))}
    saved = {name: _state(modules[name]) for name in _affected(modules, changing)}
    try:
        _shrink(modules, graph, plan, tied)
        check_equivalent(model, graph, unit_ids, reference)
    except BaseException as exc:
        for name, state in saved.items():
            _restore(modules[name], state)
        if isinstance(exc, SurgeryMismatch):
            raise SurgeryMismatch(f"{exc} The network was left as it was.") from exc.__cause__
        raise


def _state(module: nn.Module) -> tuple[type, dict, dict, dict]:
    return type(module), dict(module.__dict__), dict(module._parameters), dict(module._buffers)


def _restore(module: nn.Module, state: tuple[type, dict, dict, dict]) -> None:
    cls, attributes, parameters, buffers = state
    module.__class__ = cls
    module.__dict__.update(attributes)
    for current, saved in ((module._parameters, parameters), (module._buffers, buffers)):
        current.clear()
        current.update(saved)


def _shrink(
    modules: dict[str, nn.Module],
    graph: ChannelGraph,
    plan: dict[tuple[str, int], np.ndarray],
    tied: dict[str, tuple[str, ...]],
) -> None:
    by_tensor: dict[str, dict[int, np.ndarray]] = {}
    attributes: dict[str, int] = {}
    for (name, dim), idx in plan.items():
        if graph.sites[(name, dim)].kind == "attribute":
            attributes[name] = graph.size((name, dim)) - idx.size
        else:
            by_tensor.setdefault(name, {})[dim] = idx
    for name in [name for name in by_tensor if name in tied]:  # a tied tensor loses the entries of every name
        if name not in by_tensor:  # merged into another name of its tensor already
            continue
        for other in tied[name]:
            for dim, idx in by_tensor.pop(other, {}).items():
                if dim in by_tensor[name] and not np.array_equal(by_tensor[name][dim], idx):
                    raise ValueError(
                        f"`{name}` and `{other}` are one tied tensor, but the removal takes other entries of dim {dim} "
                        "from each; this is a fault of the channel analysis: please report it"
                    )
                by_tensor[name][dim] = idx
    touched = {owner(each) for name in [*by_tensor, *attributes] for each in (name, *tied.get(name, ()))}
    for name, dims in by_tensor.items():
        new = getattr(modules[owner(name)], name.rpartition(".")[2]).detach()
        for dim, idx in dims.items():
            keep = np.ones(new.shape[dim], dtype=bool)
            keep[idx] = False
            new = new.index_select(dim, torch.as_tensor(np.flatnonzero(keep), device=new.device))
        replace_tensor(modules, name, new, tied.get(name, ()))  # index_select copies: nothing shared with the old
    for name, count in attributes.items():
        module_name, _, attr = name.rpartition(".")
        setattr(modules[module_name], attr, (count,) if attr == "normalized_shape" else count)
    for module_name in _affected(modules, touched):
        _sync_attributes(module_name, modules[module_name], graph)


def _affected(modules: dict[str, nn.Module], touched: set[str]) -> list[str]:
    """The modules a surgery changes: those whose tensors or attributes it replaced, then every module above
    them that the analysis took whole and whose family derives something after a surgery (an attention whose
    ``qkv`` rows went); a module it traced through is left to what changed inside it."""
    above = {name.rsplit(".", i)[0] for name in touched for i in range(1, name.count(".") + 1)} - touched
    deriving = [name for name in sorted(above) if getattr(module_family(modules[name]), "after_surgery", None)]
    return sorted(touched) + deriving


def _sync_attributes(name: str, module: nn.Module, graph: ChannelGraph) -> None:
    """What the module's family derives from its new weight shapes (``Family.after_surgery``), and the group
    count of a module whose norm groups were pruned (a GroupNorm, or a module calling ``F.group_norm`` with
    its own tensors)."""
    family = layer_family(module)
    if family is not None and family.after_surgery is not None:
        family.after_surgery(name, module, graph)
    if name in graph.norm_groups:
        module.num_groups = module.num_channels // graph.norm_groups[name]


def channel_attributes(module: nn.Module) -> dict[str, object]:
    """The channel-count attributes a module has, of every family, and the float ones a surgery may set (an
    attention's ``scale``): what ``serialize`` records."""
    found: dict[str, object] = {}
    for attr in channel_attribute_names():
        value = getattr(module, attr, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found[attr] = value
        elif isinstance(value, tuple) and all(isinstance(v, int) for v in value):
            found[attr] = list(value)
    return found
