"""Which family (``family.Family``) each operation of a traced network belongs to.

Every node of a traced network is a module call, a function call or a Tensor method call;
``module_family``, ``function_family`` and ``method_family`` give its family (the built-in ones are
in ``families``), or None. A node without a family is *unsupported*: channels that reach it are
never pruned, and the analysis report names the operation.

``register_module_rule(module_type, rule)`` teaches the analysis a module of one's own, like
Torch-Pruning's customized pruners: ``rule`` is a built-in family's name (the module behaves like
that family), a ``Family`` of one's own (``rules_layers.channelwise`` builds the usual one), or a
bare rule function. Such modules are kept as leaves: the tracer does not look inside them.

>>> import torch.nn as nn
>>> [getattr(module_family(m), "name", None) for m in (nn.Conv2d(3, 8, 3), nn.ReLU(), nn.LSTM(4, 4))]
['conv', 'elementwise', None]

A module whose weight is computed from others (``torch.nn.utils.parametrize``: weight norm, say) is no leaf of
its family: its forward is traced, and a weight computed there keeps its channels (removing one would change
the others' normalisation).

>>> module_family(nn.utils.parametrizations.weight_norm(nn.Conv1d(4, 4, 3))) is None
True
>>> class Swish(nn.Module):
...     def forward(self, x):
...         return x * x.sigmoid()
>>> register_module_rule(Swish, "elementwise")
>>> module_family(Swish()).name
'elementwise'
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from prune_core.channels import families
from prune_core.channels.attention import PrunedMultiheadAttention
from prune_core.channels.family import Family

_MODULE_FAMILIES: dict[type[nn.Module], Family] = {
    nn.Conv1d: families.CONV,
    nn.Conv2d: families.CONV,
    nn.Conv3d: families.CONV,
    nn.ConvTranspose1d: families.CONV_TRANSPOSE,
    nn.ConvTranspose2d: families.CONV_TRANSPOSE,
    nn.ConvTranspose3d: families.CONV_TRANSPOSE,
    nn.Linear: families.LINEAR,
    nn.Embedding: families.EMBEDDING,
    nn.MultiheadAttention: families.MULTIHEAD_ATTENTION,
    PrunedMultiheadAttention: families.MULTIHEAD_ATTENTION,
    nn.BatchNorm1d: families.BATCHNORM,
    nn.BatchNorm2d: families.BATCHNORM,
    nn.BatchNorm3d: families.BATCHNORM,
    nn.InstanceNorm1d: families.BATCHNORM,
    nn.InstanceNorm2d: families.BATCHNORM,
    nn.InstanceNorm3d: families.BATCHNORM,
    nn.GroupNorm: families.GROUPNORM,
    nn.LayerNorm: families.LAYERNORM,
    nn.PReLU: families.PRELU,
    nn.Flatten: families.RESHAPE,
    nn.Unflatten: families.RESHAPE,
    nn.Softmax: families.SOFTMAX,
    nn.LogSoftmax: families.SOFTMAX,
    nn.ChannelShuffle: families.CHANNEL_SHUFFLE,
    nn.MaxPool1d: families.POOL,
    nn.MaxPool2d: families.POOL,
    nn.MaxPool3d: families.POOL,
    nn.AvgPool1d: families.POOL,
    nn.AvgPool2d: families.POOL,
    nn.AvgPool3d: families.POOL,
    nn.AdaptiveAvgPool1d: families.POOL,
    nn.AdaptiveAvgPool2d: families.POOL,
    nn.AdaptiveAvgPool3d: families.POOL,
    nn.AdaptiveMaxPool1d: families.POOL,
    nn.AdaptiveMaxPool2d: families.POOL,
    nn.AdaptiveMaxPool3d: families.POOL,
    nn.LPPool1d: families.POOL,
    nn.LPPool2d: families.POOL,
    nn.Upsample: families.POOL,
}
_ELEMENTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Hardtanh,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
)
_MODULE_FAMILIES.update({cls: families.ELEMENTWISE for cls in _ELEMENTWISE_MODULES})
# Padding modules: F.pad with their ``padding``, every one of them (Zero, Constant, Reflection, Replication, Circular)
_PAD_MODULES = [
    getattr(nn, f"{kind}Pad{d}d")
    for kind in ("Zero", "Constant", "Reflection", "Replication", "Circular")
    for d in (1, 2, 3)
]
_MODULE_FAMILIES.update({cls: families.PAD_MODULE for cls in _PAD_MODULES})
# Keyed by the forward function, so subclasses that keep the base forward are recognised and
# subclasses that override it (torchvision's LayerNorm2d, say) are traced through instead.
_FAMILY_BY_FORWARD = {cls.forward: family for cls, family in _MODULE_FAMILIES.items()}

# Modules of other libraries, matched by qualified name so the library is not a dependency: channel-wise
# by construction, or multi-head self-attention with one fused ``qkv`` linear and an output ``proj``
# (timm's, in its ViT, DeiT, ... families, and Swin's window attention), kept as a leaf whose heads are units.
_FAMILY_BY_NAME = {
    "torchvision.ops.stochastic_depth.StochasticDepth": families.ELEMENTWISE,
    "timm.layers.attention.Attention": families.FUSED_QKV_ATTENTION,
    "timm.models.swin_transformer.WindowAttention": families.FUSED_QKV_ATTENTION,
    "transformers.pytorch_utils.Conv1D": families.TRANSPOSED_LINEAR,
}


# Modules taught by users: the class (subclasses included) -> its family.
_USER_FAMILIES: dict[type[nn.Module], Family] = {}


def register_module_rule(
    module_type: type[nn.Module], rule: str | Family | Callable[..., Any], *, replace: bool = False
) -> None:
    """Analyse ``module_type`` (and its subclasses) as a leaf of family ``rule``: a built-in family's name
    (``families.BUILT_IN``), a ``Family``, or a rule function ``rule(prop, call)`` (a family with only that
    rule). A type registered already needs ``replace=True``."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type must be a subclass of torch.nn.Module, got {module_type!r}")
    if isinstance(rule, str):
        if rule not in families.BUILT_IN:
            raise ValueError(
                f"rule {rule!r} is not a family; use one of {sorted(families.BUILT_IN)}, a Family or a rule function"
            )
        family = families.BUILT_IN[rule]
    elif isinstance(rule, Family):
        family = rule
    elif callable(rule):
        family = Family(getattr(rule, "__qualname__", repr(rule)), rule)
    else:
        raise TypeError(f"rule must be a family name, a Family or a function rule(prop, call), got {rule!r}")
    if module_type in _USER_FAMILIES and not replace:
        raise ValueError(f"{module_type.__qualname__} has a rule already; pass replace=True to replace it")
    _USER_FAMILIES[module_type] = family


def unregister_module_rule(module_type: type[nn.Module]) -> None:
    """Forget the rule registered for ``module_type`` (its forward is traced through again)."""
    _USER_FAMILIES.pop(module_type, None)


def module_family(module: nn.Module) -> Family | None:
    """The family of a leaf module (a user's for a type registered with one), or None when the analysis does
    not understand it."""
    for cls in type(module).__mro__:
        if cls in _USER_FAMILIES:
            return _USER_FAMILIES[cls]
    if parametrize.is_parametrized(module):  # its weight is computed (weight norm): traced through, as functions
        return None
    family = _FAMILY_BY_FORWARD.get(type(module).forward)
    family = family or _FAMILY_BY_NAME.get(f"{type(module).__module__}.{type(module).__qualname__}")
    return family or (families.SEPARATE_QKV_ATTENTION if _separate_qkv_attention(module) else None)


def layer_family(module: nn.Module) -> Family | None:
    """The family of a layer by its class alone (a ``Conv2d`` subclass with a forward of its own included), for
    what its weights hold: its filters, its inputs, its channel counts after a surgery. ``module_family`` says
    whether its forward is understood."""
    for cls in type(module).__mro__:
        family = _USER_FAMILIES.get(cls) or _MODULE_FAMILIES.get(cls)
        if family is not None:
            return family
    return module_family(module)


def channel_attribute_names() -> tuple[str, ...]:
    """Every family's channel-count attributes, built-in and registered, once each (what checkpoints record)."""
    names = [a for family in (*families.BUILT_IN.values(), *_USER_FAMILIES.values()) for a in family.attributes]
    return tuple(dict.fromkeys(names))


def _separate_qkv_attention(module: nn.Module) -> bool:
    """Hugging Face's self-attention layout (BERT, RoBERTa, ViT, DeiT, ...): ``query``, ``key`` and ``value``
    linears, the head counts that Hugging Face's own ``prune_heads`` updates, and no other layer or tensor of its
    own: a module that also holds its output projection and norm (ALBERT's) returns the residual stream, not the
    heads, and one with a per-head table of its own (Swin's relative position bias) would need it cut too.

    >>> class Heads(nn.Module):
    ...     def __init__(self, *extra):
    ...         super().__init__()
    ...         self.query, self.key, self.value = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
    ...         self.dropout = nn.Dropout()
    ...         self.num_attention_heads, self.attention_head_size, self.all_head_size = 2, 4, 8
    ...         for i, layer in enumerate(extra):
    ...             self.add_module(f"extra{i}", layer)
    >>> _separate_qkv_attention(Heads()), _separate_qkv_attention(Heads(nn.Linear(8, 8), nn.LayerNorm(8)))
    (True, False)
    """
    layers = ("query", "key", "value")
    return (
        all(isinstance(getattr(module, name, None), nn.Linear) for name in layers)
        and all(
            isinstance(getattr(module, name, None), int)
            for name in ("num_attention_heads", "attention_head_size", "all_head_size")
        )
        and all(name in layers or isinstance(child, nn.Dropout) for name, child in module.named_children())
        and next(module.parameters(recurse=False), None) is None
    )


ELEMENTWISE_FUNCTIONS = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.neg,
    operator.pow,
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.maximum,
    torch.minimum,
    torch.where,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    torch.clamp,
    torch.abs,
    torch.exp,
    torch.neg,
    torch.pow,
    torch.square,
    torch.sqrt,
    torch.rsqrt,
    torch.erf,
    F.relu,
    F.relu6,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.sigmoid,
    F.tanh,
    F.leaky_relu,
    F.elu,
    F.selu,
    F.celu,
    F.softplus,
    F.hardtanh,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.alpha_dropout,
}
ELEMENTWISE_FUNCTION_NAMES = {"torchvision.ops.stochastic_depth.stochastic_depth"}
ELEMENTWISE_METHODS = {
    "add",
    "add_",
    "sub",
    "sub_",
    "mul",
    "mul_",
    "div",
    "div_",
    "neg",
    "abs",
    "exp",
    "pow",
    "square",
    "sqrt",
    "rsqrt",
    "erf",
    "relu",
    "relu_",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "tanh_",
    "clamp",
    "clamp_",
    "clamp_min",
    "clamp_max",
    "contiguous",
    "clone",
    "detach",
    "float",
    "double",
    "half",
    "to",
    "type_as",
    "expand",
    "expand_as",
    "bernoulli",
    "bernoulli_",
}
RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.unflatten}
RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "unflatten", "view_as", "reshape_as"}
PERMUTE_FUNCTIONS = {torch.permute, torch.transpose, torch.swapaxes, torch.movedim, torch.t, getattr}  # x.T, x.mT
PERMUTE_METHODS = {"permute", "transpose", "swapaxes", "movedim", "t"}
MATMUL_FUNCTIONS = {operator.matmul, torch.matmul}
MATMUL_METHODS = {"matmul", "__matmul__"}
POOL_FUNCTIONS = {
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
    F.lp_pool1d,
    F.lp_pool2d,
    F.interpolate,
}
REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin}
REDUCE_METHODS = {"mean", "sum", "amax", "amin"}
CONCAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
SPLIT_FUNCTIONS = {torch.chunk, torch.split}
SPLIT_METHODS = {"chunk", "split"}
SOFTMAX_FUNCTIONS = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}
SOFTMAX_METHODS = {"softmax", "log_softmax"}


def _by_family(tables: dict[Family, set]) -> dict:
    return {member: family for family, members in tables.items() for member in members}


_FUNCTION_FAMILIES = _by_family(
    {
        families.ELEMENTWISE: ELEMENTWISE_FUNCTIONS,
        families.RESHAPE: RESHAPE_FUNCTIONS,
        families.PERMUTE: PERMUTE_FUNCTIONS,
        families.POOL: POOL_FUNCTIONS,
        families.REDUCE: REDUCE_FUNCTIONS,
        families.CONCAT: CONCAT_FUNCTIONS,
        families.SPLIT: SPLIT_FUNCTIONS,
        families.SOFTMAX: SOFTMAX_FUNCTIONS,
        families.GETITEM: {operator.getitem},
        families.PAD: {F.pad},
        families.ROLL: {torch.roll},
        families.CHANNEL_NORM_FUNCTION: {F.batch_norm, F.instance_norm},
        families.GROUP_NORM_FUNCTION: {F.group_norm},
        families.LAYER_NORM_FUNCTION: {F.layer_norm},
        families.CONV_FUNCTION: {torch.conv1d, torch.conv2d, torch.conv3d},  # F.conv2d is torch.conv2d
        families.LINEAR_FUNCTION: {F.linear},
        families.MATMUL_LINEAR: MATMUL_FUNCTIONS,
    }
)
_METHOD_FAMILIES = _by_family(
    {
        families.ELEMENTWISE: ELEMENTWISE_METHODS,
        families.RESHAPE: RESHAPE_METHODS,
        families.PERMUTE: PERMUTE_METHODS,
        families.REDUCE: REDUCE_METHODS,
        families.SPLIT: SPLIT_METHODS,
        families.SOFTMAX: SOFTMAX_METHODS,
        families.ROLL: {"roll"},
        families.NEW_TENSOR: {"new_empty", "new_zeros", "new_ones", "new_full", "new_tensor"},
        families.MATMUL_LINEAR: MATMUL_METHODS,
    }
)


def function_family(target) -> Family | None:
    """The family of a ``call_function`` target, or None when unsupported."""
    try:
        family = _FUNCTION_FAMILIES.get(target)
    except TypeError:  # an unhashable target
        family = None
    if (
        family is None
        and f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', '')}" in ELEMENTWISE_FUNCTION_NAMES
    ):
        family = families.ELEMENTWISE
    return family


def method_family(name: str) -> Family | None:
    """The family of a ``call_method`` target (a Tensor method name), or None when unsupported."""
    return _METHOD_FAMILIES.get(name)


def describe_target(target) -> str:
    """A readable name for an fx node target (function, method name or module path)."""
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", "") or ""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)
    if "_VariableFunctionsClass" in name:  # torch's C functions (torch.sort, torch.cat, ...)
        return f"torch.{target.__name__}"
    return f"{module}.{name}" if module and module != "builtins" else name
