"""The channel rules of multi-head attention, kept as one leaf whose heads are units.

Three layouts are understood, each a leaf module:

- a fused ``qkv`` linear and an output ``proj`` (timm's ``Attention`` in ViT, DeiT, ... and Swin's
  ``WindowAttention``): ``fused_qkv_attention``;
- separate ``query``, ``key`` and ``value`` linears whose heads' outputs, concatenated, are the
  module's output, the output projection being the next layer (Hugging Face's self-attention in
  BERT, RoBERTa, ViT, DeiT, ...): ``separate_qkv_attention``;
- ``nn.MultiheadAttention`` (torchvision's ViT, ``nn.TransformerEncoderLayer`` and
  ``nn.TransformerDecoderLayer``): ``multihead_attention``. A pruned one becomes a
  ``PrunedMultiheadAttention`` (``attention``), which computes the same with its new sizes.

Every way a head is a unit: its q, k and v rows of the input projection (laid out as ``(3,
num_heads, head_dim)`` where fused) and their bias, and its ``head_dim`` input columns of the output
projection. ``num_heads`` follows; ``head_dim`` and the attention's scale stay as they were, so a
pruned attention computes what the original computes with those heads' outputs zeroed. One head is
kept in every attention (every layer keeps a channel). The output projection's outputs are new
channels, as a linear layer's are.

A fused-qkv attention can give its head dims as units instead (``ChannelGraph.build(...,
attention_units="head_dims")``): dim ``j`` of every head's q, k and v goes, so the heads stay and
shrink alike; so can ``nn.MultiheadAttention`` and the separate layout.

>>> import torch, torch.nn as nn
>>> from prune_core.channels.graph import ChannelGraph
>>> layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True)
>>> graph = ChannelGraph.build(nn.Sequential(layer), torch.randn(2, 5, 16))
>>> heads = [u for u in graph.units if u.producers == ("0.self_attn",)]
>>> len(heads), heads[0].counts[("0.self_attn.in_proj_weight", 0)]   # 4 heads of 4 q, k and v rows each
(4, 12)
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from torch import nn

from prune_core.channels.attention import attends_alike
from prune_core.channels.labels import shaped
from prune_core.channels.rule_call import OpCall, Propagation, argument, channel_vector


def fused_qkv_attention(prop: Propagation, call: OpCall):
    """Multi-head self-attention with a fused ``qkv`` linear and an output ``proj`` (timm's ``Attention``, and
    Swin's ``WindowAttention`` with its per-head relative position bias table, whose head's column goes with
    the head). ``attn_dim`` follows where the module has it. The heads are kept (with the reason) where the
    module gates or normalises the heads' outputs together. With ``attention_units="head_dims"`` the units
    are head dims instead (``_head_dims``)."""
    n, args, lab_args, result = call.node, call.args, call.labels, call.result
    m, fqn, x = prop.modules[n.target], n.target, args[0]
    qkv, proj, heads = m.qkv, m.proj, m.num_heads
    head_dim = getattr(m, "head_dim", None) or qkv.out_features // (3 * heads)
    if qkv.out_features != 3 * heads * head_dim or proj.in_features != heads * head_dim:
        return None
    gated = getattr(m, "gate", None) is not None
    vector = channel_vector(prop, lab_args[0], x.ndim - 1, qkv.in_features, f"{fqn}.qkv")
    prop.site(f"{fqn}.qkv.weight", 1, vector, "input")
    if gated:  # the gate reads the input too
        prop.site(f"{fqn}.gate.weight", 1, vector, "input")
    together = gated or not isinstance(getattr(m, "norm", None), (type(None), nn.Identity))
    if prop.attention_units == "head_dims":
        _head_dims(prop, fqn, m, heads, head_dim, together)
    else:
        per_head = prop.producer(f"{fqn}.qkv", heads)
        if together:
            prop.slots.block(per_head, f"`{fqn}` gates or normalises its heads' outputs together: its heads are kept")
        rows = np.tile(np.repeat(per_head, head_dim), 3)
        prop.module_sites(f"{fqn}.qkv", ("weight", "bias"), rows, "filter")
        prop.site(f"{fqn}.proj.weight", 1, np.repeat(per_head, head_dim), "input")
        prop.site(f"{fqn}.num_heads", 0, per_head, "follower", kind="attribute")
        if hasattr(m, "attn_dim"):
            prop.site(f"{fqn}.attn_dim", 0, np.repeat(per_head, head_dim), "follower", kind="attribute")
        table = getattr(m, "relative_position_bias_table", None)
        if isinstance(table, nn.Parameter) and table.ndim == 2 and table.shape[1] == heads:
            prop.site(f"{fqn}.relative_position_bias_table", 1, per_head, "follower")
    out = prop.producer(f"{fqn}.proj", proj.out_features)
    prop.module_sites(f"{fqn}.proj", ("weight", "bias"), out, "filter")
    return shaped(out, result.ndim, result.ndim - 1)


def _head_dims(prop: Propagation, fqn: str, m: nn.Module, heads: int, head_dim: int, together: bool) -> None:
    """A fused-qkv attention's head dims as units: dim ``j`` of every head's query, key and value (their
    ``qkv`` rows and bias) and the matching input column of ``proj`` in every head, so every head keeps the
    same ``head_dim`` and ``num_heads`` stays. Dropping a query and key dim changes the products, not a
    layer's input: the surgery check zeroes those rows too (``prop.products``). The scale (``scale``) is the
    original network's and is kept (``families``: the surgery folds it into the query rows). Kept, with the
    reason, where the module normalises queries and keys over the head dims (``q_norm``/``k_norm``), gates or
    normalises the heads' outputs together, or has no ``scale`` to keep."""
    per_dim = prop.producer(f"{fqn}.qkv", head_dim)
    normalised = [
        name for name in ("q_norm", "k_norm") if not isinstance(getattr(m, name, None), (type(None), nn.Identity))
    ]
    if normalised:
        prop.slots.block(per_dim, f"`{fqn}` normalises its queries and keys over the head dims: its head dims are kept")
    if together:
        prop.slots.block(per_dim, f"`{fqn}` gates or normalises its heads' outputs together: its head dims are kept")
    if not isinstance(getattr(m, "scale", None), float):
        prop.slots.block(per_dim, f"`{fqn}` has no float `scale` to keep: its head dims are kept")
    prop.module_sites(f"{fqn}.qkv", ("weight", "bias"), np.tile(per_dim, 3 * heads), "filter")
    prop.site(f"{fqn}.proj.weight", 1, np.tile(per_dim, heads), "input")
    if isinstance(getattr(m, "head_dim", None), int):
        prop.site(f"{fqn}.head_dim", 0, per_dim, "follower", kind="attribute")
    if hasattr(m, "attn_dim"):
        prop.site(f"{fqn}.attn_dim", 0, np.tile(per_dim, heads), "follower", kind="attribute")
    prop.products.add(f"{fqn}.qkv")


def multihead_attention(prop: Propagation, call: OpCall):
    """``nn.MultiheadAttention`` and its pruned form. The query, key and value share ``in_proj_weight``'s input
    columns, so their channels are one (the width of a cross-attention's memory is tied to the query's). Heads
    given a per-head (3-D) ``attn_mask`` are kept. With ``attention_units="head_dims"`` a unit is dim j of every
    head's q, k and v and ``head_dim`` follows (``families`` keeps the scale). Not understood (the operation is
    then unsupported and every channel reaching it kept): separate key and value widths (``kdim``/``vdim``),
    ``add_bias_kv``, ``add_zero_attn`` and subclasses."""
    n, args, kwargs, lab_args, lab_kwargs, result = call
    m, fqn = prop.modules[n.target], n.target
    if not attends_alike(m):
        return None
    heads, head_dim, width = m.num_heads, m.head_dim, m.in_proj_weight.shape[1]
    if m.in_proj_weight.shape[0] != 3 * heads * head_dim or m.out_proj.in_features != heads * head_dim:
        return None
    vector = None
    for index, name in enumerate(("query", "key", "value")):
        x, lab = argument(args, kwargs, index, name), argument(lab_args, lab_kwargs, index, name)
        if not isinstance(x, torch.Tensor):
            return None
        channels = channel_vector(prop, lab, x.ndim - 1, width, fqn)
        if vector is None:
            vector = channels
        else:
            prop.slots.unify_arrays(vector, channels)
    prop.site(f"{fqn}.in_proj_weight", 1, vector, "input")
    if prop.attention_units == "head_dims":  # dim j of every head: the heads stay
        per_dim = prop.producer(fqn, head_dim)
        prop.module_sites(fqn, ("in_proj_weight", "in_proj_bias"), np.tile(per_dim, 3 * heads), "filter")
        prop.site(f"{fqn}.out_proj.weight", 1, np.tile(per_dim, heads), "input")
        prop.site(f"{fqn}.head_dim", 0, per_dim, "follower", kind="attribute")
        prop.products.add(fqn)
    else:
        per_head = prop.producer(fqn, heads)
        mask = argument(args, kwargs, 5, "attn_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 3:
            prop.slots.block(per_head, f"`{fqn}` is given a per-head attention mask: its heads are kept")
        rows = np.tile(np.repeat(per_head, head_dim), 3)
        prop.module_sites(fqn, ("in_proj_weight", "in_proj_bias"), rows, "filter")
        prop.site(f"{fqn}.out_proj.weight", 1, np.repeat(per_head, head_dim), "input")
        prop.site(f"{fqn}.num_heads", 0, per_head, "follower", kind="attribute")
    out = prop.producer(f"{fqn}.out_proj", m.out_proj.out_features)
    prop.module_sites(f"{fqn}.out_proj", ("weight", "bias"), out, "filter")
    output, weights = result
    labels = shaped(out, output.ndim, output.ndim - 1)
    return labels, None if weights is None else prop.fresh(weights, f"the attention weights of `{fqn}`")


# Arguments of a separate-q/k/v attention that leave its heads as they are when given (None or False otherwise).
_HEADLESS_ARGUMENTS = {"hidden_states", "attention_mask", "output_attentions", "cache_position"}


def _given(value: object) -> bool:
    """Whether an argument was given: not None, False or an empty ``**kwargs``."""
    return value is not None and value is not False and not (isinstance(value, dict) and not value)


def separate_qkv_attention(prop: Propagation, call: OpCall):
    """Self-attention with separate ``query``, ``key`` and ``value`` linears (Hugging Face's layout, whose own
    ``prune_heads`` this follows): a head takes its ``attention_head_size`` rows of each and their bias, and is
    the module's output channels of that head, which the next layer (the output projection) consumes, as its
    input columns. ``num_attention_heads`` and ``all_head_size`` follow; ``attention_head_size`` and the scale
    stay. With ``attention_units="head_dims"`` a unit is dim j of every head instead, and
    ``attention_head_size`` follows (``families`` keeps the scale). Not understood (the operation is then
    unsupported and its channels kept): a head mask, a per-head attention mask, cross-attention or a cache (other
    states or stored keys), relative position embeddings."""
    n, args, kwargs, lab_args, lab_kwargs, result = call
    m, fqn = prop.modules[n.target], n.target
    heads, size = m.num_attention_heads, m.attention_head_size
    layers = (m.query, m.key, m.value)
    if m.all_head_size != heads * size or any(layer.out_features != heads * size for layer in layers):
        return None
    if getattr(m, "position_embedding_type", "absolute") != "absolute":
        return None
    try:
        given = inspect.signature(m.forward).bind(*args, **kwargs).arguments
    except TypeError:
        return None
    mask = given.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 4 and mask.shape[1] != 1:  # a mask per head
        return None
    if any(_given(value) for name, value in given.items() if name not in _HEADLESS_ARGUMENTS):
        return None
    x = given.get("hidden_states")
    if not isinstance(x, torch.Tensor):
        return None
    vector = channel_vector(
        prop, lab_args[0] if args else lab_kwargs.get("hidden_states"), x.ndim - 1, m.query.in_features, fqn
    )
    if prop.attention_units == "head_dims":  # dim j of every head: the heads stay
        per_dim = prop.producer(f"{fqn}.query", size)
        rows = np.tile(per_dim, heads)
        prop.site(f"{fqn}.attention_head_size", 0, per_dim, "follower", kind="attribute")
        prop.products.update({f"{fqn}.query", f"{fqn}.key"})
    else:
        per_head = prop.producer(f"{fqn}.query", heads)
        rows = np.repeat(per_head, size)
        prop.site(f"{fqn}.num_attention_heads", 0, per_head, "follower", kind="attribute")
    for name in ("query", "key", "value"):
        prop.site(f"{fqn}.{name}.weight", 1, vector, "input")
        prop.module_sites(f"{fqn}.{name}", ("weight", "bias"), rows, "filter")
    prop.site(f"{fqn}.all_head_size", 0, rows, "follower", kind="attribute")
    output = result[0] if isinstance(result, (tuple, list)) else result
    labels = shaped(rows, output.ndim, output.ndim - 1)
    if not isinstance(result, (tuple, list)):
        return labels
    return (labels, *(prop.fresh(r, f"the attention weights of `{fqn}`") for r in result[1:]))
