"""The built-in families (``family.Family``): one object per family of operations, each with its rule
(``rules_elementwise``, ``rules_shape``, ``rules_layers``, ``rules_attention``), its channel-count attributes,
what the surgery derives after it, and its filter and input dims. ``ops`` says which modules, functions and
methods belong to each; ``BUILT_IN`` names them, as ``register_module_rule`` accepts them.

>>> CONV.attributes, CONV_TRANSPOSE.filters, LINEAR.channel_dim_of_input(None, 3)
(('in_channels', 'out_channels', 'groups'), ('weight', 1), 2)
>>> sorted(BUILT_IN)[:4]
['batchnorm', 'channel_norm_function', 'channel_shuffle', 'concat']
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prune_core.channels import rules_attention, rules_elementwise, rules_layers, rules_shape
from prune_core.channels.attention import to_pruned_form
from prune_core.channels.family import Family


def _last_dim(module: nn.Module, ndim: int) -> int:
    return ndim - 1


def _before_spatial_dims(module: nn.Module, ndim: int) -> int:
    kernel_size: tuple[int, ...] = module.kernel_size  # type: ignore[assignment]  # a convolution's
    return ndim - len(kernel_size) - 1


def _conv_sizes(name: str, module: nn.Module, graph: Any) -> None:
    """A convolution's channel counts and groups, from its new weight (filters per group stay)."""
    weight, transposed = module.weight, module.transposed
    if name in graph.grouped_convs:
        module.groups = weight.shape[1 if transposed else 0] // graph.grouped_convs[name]
    if transposed:
        module.in_channels, module.out_channels = weight.shape[0], weight.shape[1] * module.groups
    else:
        module.out_channels, module.in_channels = weight.shape[0], weight.shape[1] * module.groups


def _linear_sizes(name: str, module: nn.Module, graph: Any) -> None:
    module.out_features, module.in_features = module.weight.shape


def _transposed_linear_sizes(name: str, module: nn.Module, graph: Any) -> None:
    module.nx, module.nf = module.weight.shape


def _embedding_sizes(name: str, module: nn.Module, graph: Any) -> None:
    module.embedding_dim = module.weight.shape[1]


def _keep_attention_scale(name: str, module: nn.Module, graph: Any) -> None:
    """A fused-qkv attention whose head dims went: the fused kernel's scale is ``head_dim ** -0.5`` of the new
    head dim, and the module's own ``scale`` that of the original. Folding their ratio into the query rows
    and setting ``scale`` to the new one makes both paths compute the original network's scores."""
    qkv, scale, heads = module.qkv, getattr(module, "scale", None), module.num_heads
    rows = (f"{name}.qkv.weight", 0)
    if f"{name}.qkv" not in graph.products or rows not in graph.site_units or not isinstance(scale, float):
        return  # its heads are the units (or it was left whole): the head dim stays
    width = qkv.weight.shape[0] // 3  # the query rows
    if graph.size(rows) == 3 * width:
        return  # this surgery took none of its head dims
    wanted = (width // heads) ** -0.5
    _scale_rows(qkv.weight, qkv.bias, width, scale / wanted)
    module.scale = wanted


def _scale_rows(weight: torch.Tensor, bias: torch.Tensor | None, rows: int, factor: float) -> None:
    """Multiply the first ``rows`` rows (the query rows) of a projection and its bias by ``factor``."""
    with torch.no_grad():
        weight[:rows] *= factor
        if bias is not None:
            bias[:rows] *= factor


def _fold_scale(weight: torch.Tensor, bias: torch.Tensor | None, rows: int, old: int, new: int) -> None:
    """Multiply the first ``rows`` query rows by the ratio of the ``old`` head dim's scale to the ``new`` one's:
    where a forward takes ``head_dim ** -0.5`` of the head dim it has, it then computes the original scores."""
    _scale_rows(weight, bias, rows, (new / old) ** 0.5)


def _old_head_dim(graph: Any, name: str, current: int) -> int:
    """A head dim before this surgery: its attribute site's size in the graph, where head dims are units."""
    site = graph.sites.get((name, 0))
    return site.vector.size if site is not None else current


def _separate_attention_scale(name: str, module: nn.Module, graph: Any) -> None:
    """Hugging Face's separate q/k/v attention whose head dims went: a module that holds its ``scaling`` keeps
    it (ViT); one that takes ``attention_head_size`` of its new size (BERT) gets the ratio folded into ``query``."""
    new = module.attention_head_size
    old = _old_head_dim(graph, f"{name}.attention_head_size", new)
    if old != new and not isinstance(getattr(module, "scaling", None), float):
        _fold_scale(module.query.weight, module.query.bias, module.query.weight.shape[0], old, new)


def _pruned_attention(name: str, module: nn.Module, graph: Any) -> None:
    """A pruned ``nn.MultiheadAttention`` takes its pruned form, whose scale is ``head_dim ** -0.5`` of its
    ``head_dim``; where the head dims went, the ratio of the old scale to the new is folded into the query
    rows, so it computes the original network's scores."""
    to_pruned_form(module)  # type: ignore[arg-type]  # the multihead_attention family's modules
    new = module.head_dim
    old = _old_head_dim(graph, f"{name}.head_dim", new)
    if old != new:
        _fold_scale(module.in_proj_weight, module.in_proj_bias, module.num_heads * new, old, new)


ELEMENTWISE = Family("elementwise", rules_elementwise.elementwise)
POOL = Family("pool", rules_elementwise.pool)
REDUCE = Family("reduce", rules_elementwise.reduce)
SOFTMAX = Family("softmax", rules_elementwise.softmax)
NEW_TENSOR = Family("new_tensor", rules_elementwise.new_tensor)
RESHAPE = Family("reshape", rules_shape.reshape)
PERMUTE = Family("permute", rules_shape.permute)
CONCAT = Family("concat", rules_shape.concat)
SPLIT = Family("split", rules_shape.split)
GETITEM = Family("getitem", rules_shape.getitem)
PAD = Family("pad", rules_shape.pad)
PAD_MODULE = Family("pad_module", rules_shape.pad_module)
ROLL = Family("roll", rules_shape.roll)
CHANNEL_SHUFFLE = Family("channel_shuffle", rules_shape.channel_shuffle)
CONV = Family(
    "conv",
    rules_layers.conv,
    ("in_channels", "out_channels", "groups"),
    after_surgery=_conv_sizes,
    input_dim=_before_spatial_dims,
    filter_count="out_channels",
)
CONV_TRANSPOSE = Family(
    "conv_transpose",
    rules_layers.conv_transpose,
    ("in_channels", "out_channels", "groups"),
    after_surgery=_conv_sizes,
    filters=("weight", 1),
    input_dim=_before_spatial_dims,
    filter_count="out_channels",
)
LINEAR = Family(
    "linear",
    rules_layers.linear,
    ("in_features", "out_features"),
    after_surgery=_linear_sizes,
    input_dim=_last_dim,
    filter_count="out_features",
)
TRANSPOSED_LINEAR = Family(
    "transposed_linear",
    rules_layers.transposed_linear,
    ("nx", "nf"),
    after_surgery=_transposed_linear_sizes,
    filters=("weight", 1),
    input_dim=_last_dim,
    filter_count="nf",
)
EMBEDDING = Family(
    "embedding",
    rules_layers.embedding,
    ("embedding_dim",),
    after_surgery=_embedding_sizes,
    filters=("weight", 1),
    filter_count="embedding_dim",
)
BATCHNORM = Family("batchnorm", rules_layers.batchnorm, ("num_features",))
GROUPNORM = Family("groupnorm", rules_layers.groupnorm, ("num_channels", "num_groups"))
LAYERNORM = Family("layernorm", rules_layers.layernorm, ("normalized_shape",))
PRELU = Family("prelu", rules_layers.prelu, ("num_parameters",))
# functional norms: the attributes are those of the module whose parameters they read
CHANNEL_NORM_FUNCTION = Family("channel_norm_function", rules_layers.channel_norm_function, ("num_features",))
GROUP_NORM_FUNCTION = Family("group_norm_function", rules_layers.group_norm_function, ("num_channels", "num_groups"))
LAYER_NORM_FUNCTION = Family("layer_norm_function", rules_layers.layer_norm_function, ("normalized_shape",))
CONV_FUNCTION = Family("conv_function", rules_layers.conv_function)  # a conv module's own weight, functionally
LINEAR_FUNCTION = Family("linear_function", rules_layers.linear_function)  # a linear module's own weight, likewise
MATMUL_LINEAR = Family("matmul_linear", rules_layers.matmul_linear)  # x @ weight.T with a linear module's own
FUSED_QKV_ATTENTION = Family(
    "fused_qkv_attention",
    rules_attention.fused_qkv_attention,
    ("num_heads", "attn_dim", "head_dim", "scale"),
    after_surgery=_keep_attention_scale,
    attention_products="qkv",
)
SEPARATE_QKV_ATTENTION = Family(
    "separate_qkv_attention",
    rules_attention.separate_qkv_attention,
    ("num_attention_heads", "all_head_size", "attention_head_size"),
    after_surgery=_separate_attention_scale,
    attention_products="query",
)
MULTIHEAD_ATTENTION = Family(
    "multihead_attention",
    rules_attention.multihead_attention,
    ("embed_dim", "kdim", "vdim", "num_heads", "head_dim"),
    after_surgery=_pruned_attention,
    filters=("in_proj_weight", 0),
    input_dim=_last_dim,
    filter_count="num_heads",
    macs_over=("in_proj_weight", "out_proj.weight"),
)

BUILT_IN: dict[str, Family] = {
    family.name: family
    for family in (
        ELEMENTWISE,
        POOL,
        REDUCE,
        SOFTMAX,
        NEW_TENSOR,
        RESHAPE,
        PERMUTE,
        CONCAT,
        SPLIT,
        GETITEM,
        PAD,
        PAD_MODULE,
        ROLL,
        CHANNEL_SHUFFLE,
        CONV,
        CONV_TRANSPOSE,
        LINEAR,
        TRANSPOSED_LINEAR,
        EMBEDDING,
        BATCHNORM,
        GROUPNORM,
        LAYERNORM,
        PRELU,
        CHANNEL_NORM_FUNCTION,
        GROUP_NORM_FUNCTION,
        LAYER_NORM_FUNCTION,
        CONV_FUNCTION,
        LINEAR_FUNCTION,
        MATMUL_LINEAR,
        FUSED_QKV_ATTENTION,
        SEPARATE_QKV_ATTENTION,
        MULTIHEAD_ATTENTION,
    )
}
