"""``nn.MultiheadAttention`` with fewer heads or a narrower embedding: the form a pruned one takes.

``nn.MultiheadAttention`` ties three sizes together: its input width, its output width and its
attention width (``num_heads * head_dim``) are all ``embed_dim``, and its forward
(``F.multi_head_attention_forward``) checks that they are. Removing a head narrows the attention
but not the input; removing a channel of the residual stream narrows the input but not the
attention. So the surgery turns a pruned one into a ``PrunedMultiheadAttention``: the same module
(a subclass: same parameters, same state_dict keys, ``isinstance`` still holds), with a forward
that reads the sizes from the weights: q, k and v are ``num_heads * head_dim`` rows each of
``in_proj_weight``, and ``head_dim`` and the scale ``head_dim ** -0.5`` stay the original
network's. It takes the same arguments and masks and returns the same values (attention
weights averaged over the heads that remain).

It also marks itself as not packed (``_qkv_same_embed_dim = False``): torch's fused
transformer kernels (the inference fast path of ``nn.TransformerEncoderLayer``) assume
``embed_dim == num_heads * head_dim`` and are then not used.

>>> import torch, torch.nn as nn
>>> attention = nn.MultiheadAttention(8, 2, batch_first=True).eval()
>>> x = torch.randn(3, 5, 8)
>>> expected, _ = attention(x, x, x, need_weights=False)
>>> to_pruned_form(attention)
>>> got, weights = attention(x, x, x)
>>> torch.allclose(got, expected, atol=1e-6), tuple(weights.shape)
(True, (3, 5, 5))
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import MethodType

import torch
import torch.nn.functional as F
from torch import nn


def attend(
    module: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    need_weights: bool = True,
    attn_mask: torch.Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``module``'s multi-head attention with sizes read from its weights; calls ``out_proj`` as a module."""
    if is_causal and attn_mask is None:
        raise RuntimeError("Need attn_mask if specifying the is_causal hint.")  # as nn.MultiheadAttention says
    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
        key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
    elif not module.batch_first:
        query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
    biases = (None, None, None) if module.in_proj_bias is None else module.in_proj_bias.chunk(3)
    q, k, v = (
        F.linear(x, weight, bias).unflatten(-1, (module.num_heads, module.head_dim)).transpose(1, 2)
        for x, weight, bias in zip((query, key, value), module.in_proj_weight.chunk(3), biases)
    )  # (batch, heads, length, head_dim)
    mask = _additive_mask(module, attn_mask, key_padding_mask, q, k)
    dropout = module.dropout if module.training else 0.0
    weights = None
    if need_weights:
        scores = q @ k.transpose(-2, -1) * module.head_dim**-0.5
        weights = (scores if mask is None else scores + mask).softmax(-1)
        heads = F.dropout(weights, dropout) @ v
    else:
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    out = module.out_proj(heads.transpose(1, 2).flatten(2))
    if weights is not None and average_attn_weights:
        weights = weights.mean(1)
    if unbatched:
        return out.squeeze(0), None if weights is None else weights.squeeze(0)
    return (out if module.batch_first else out.transpose(0, 1)), weights


class PrunedMultiheadAttention(nn.MultiheadAttention):
    """An ``nn.MultiheadAttention`` whose width and attention width may differ (see the module docstring);
    its forward is ``attend``, which takes ``nn.MultiheadAttention``'s arguments."""

    forward = attend  # type: ignore[assignment]


def _additive_mask(
    module: nn.MultiheadAttention,
    attn_mask: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None,
    q: torch.Tensor,
    k: torch.Tensor,
) -> torch.Tensor | None:
    """The masks as one float mask added to the scores, broadcasting to (batch, heads, length, source length)."""

    def additive(mask: torch.Tensor) -> torch.Tensor:
        if mask.dtype == torch.bool:  # True: not allowed to attend
            return torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(mask, float("-inf"))
        return mask.to(q.dtype)

    batch, heads, length, source = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    mask = None
    if attn_mask is not None:  # (length, source), or per head: (batch * heads, length, source)
        mask = additive(attn_mask)
        mask = mask.view(batch, heads, length, source) if mask.dim() == 3 else mask
    if key_padding_mask is not None:  # (batch, source)
        padding = additive(key_padding_mask).view(batch, 1, 1, source)
        mask = padding if mask is None else mask + padding
    return mask


def to_pruned_form(module: nn.MultiheadAttention) -> None:
    """Turn ``module`` into a ``PrunedMultiheadAttention`` in place, its sizes read from its weights."""
    module.__class__ = PrunedMultiheadAttention
    module.embed_dim = module.kdim = module.vdim = module.in_proj_weight.shape[1]
    module._qkv_same_embed_dim = False  # keeps torch's fused kernels away (see the module docstring)


def attends_alike(module: nn.Module) -> bool:
    """Whether ``attend`` computes what ``module``'s forward does: an ``nn.MultiheadAttention`` (or its pruned
    form) with one input projection, without ``add_bias_kv`` or ``add_zero_attn``."""
    return (
        type(module) in (nn.MultiheadAttention, PrunedMultiheadAttention)
        and module.in_proj_weight is not None
        and module.bias_k is None
        and not module.add_zero_attn
    )


@contextmanager
def out_proj_called(model: nn.Module) -> Iterator[None]:
    """Inside, every ``nn.MultiheadAttention`` of ``model`` that ``attends_alike`` runs ``attend`` (the same
    computation), which calls its ``out_proj`` as a module, so hooks on ``out_proj`` see the heads' outputs;
    put back after."""
    native = [
        m for m in model.modules() if type(m) is nn.MultiheadAttention and attends_alike(m) and "forward" not in vars(m)
    ]
    for module in native:
        module.forward = MethodType(attend, module)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for module in native:
            del module.forward
