"""What the channel analysis knows about each operation, by kind.

Every node of a traced network falls into one of the ``KINDS`` below, and ``rules.RULES``
holds what each kind does to channel labels. Anything not listed is *unsupported*: channels
that reach it are never pruned, and the analysis report names the operation.

``register_module_rule(module_type, rule)`` teaches the analysis a module of one's own, like
Torch-Pruning's customized pruners: ``rule`` is a kind name (the module behaves like that kind)
or a rule function (``rules.channelwise(...)`` builds the usual one). Such modules are kept as
leaves: the tracer does not look inside them.

>>> import torch.nn as nn
>>> module_kind(nn.Conv2d(3, 8, 3)), module_kind(nn.ReLU()), module_kind(nn.LSTM(4, 4))
('conv', 'elementwise', None)
>>> class Swish(nn.Module):
...     def forward(self, x):
...         return x * x.sigmoid()
>>> register_module_rule(Swish, "elementwise")
>>> module_kind(Swish())
'elementwise'
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prune_core.channels.attention import PrunedMultiheadAttention

_MODULE_KINDS: dict[type[nn.Module], str] = {
    nn.Conv1d: "conv",
    nn.Conv2d: "conv",
    nn.Conv3d: "conv",
    nn.ConvTranspose1d: "conv_transpose",
    nn.ConvTranspose2d: "conv_transpose",
    nn.ConvTranspose3d: "conv_transpose",
    nn.Linear: "linear",
    nn.Embedding: "embedding",
    nn.MultiheadAttention: "multihead_attention",
    PrunedMultiheadAttention: "multihead_attention",
    nn.BatchNorm1d: "batchnorm",
    nn.BatchNorm2d: "batchnorm",
    nn.BatchNorm3d: "batchnorm",
    nn.InstanceNorm1d: "batchnorm",
    nn.InstanceNorm2d: "batchnorm",
    nn.InstanceNorm3d: "batchnorm",
    nn.GroupNorm: "groupnorm",
    nn.LayerNorm: "layernorm",
    nn.PReLU: "prelu",
    nn.Flatten: "reshape",
    nn.Unflatten: "reshape",
    nn.Softmax: "softmax",
    nn.LogSoftmax: "softmax",
    nn.ChannelShuffle: "channel_shuffle",
    nn.MaxPool1d: "pool",
    nn.MaxPool2d: "pool",
    nn.MaxPool3d: "pool",
    nn.AvgPool1d: "pool",
    nn.AvgPool2d: "pool",
    nn.AvgPool3d: "pool",
    nn.AdaptiveAvgPool1d: "pool",
    nn.AdaptiveAvgPool2d: "pool",
    nn.AdaptiveAvgPool3d: "pool",
    nn.AdaptiveMaxPool1d: "pool",
    nn.AdaptiveMaxPool2d: "pool",
    nn.AdaptiveMaxPool3d: "pool",
    nn.LPPool1d: "pool",
    nn.LPPool2d: "pool",
    nn.Upsample: "pool",
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
_MODULE_KINDS.update({cls: "elementwise" for cls in _ELEMENTWISE_MODULES})
# Keyed by the forward function, so subclasses that keep the base forward are recognised and
# subclasses that override it (torchvision's LayerNorm2d, say) are traced through instead.
_KIND_BY_FORWARD = {cls.forward: kind for cls, kind in _MODULE_KINDS.items()}

# Modules of other libraries, matched by qualified name so the library is not a dependency: channel-wise
# by construction, or multi-head self-attention with one fused ``qkv`` linear and an output ``proj``
# (timm's, in its ViT, DeiT, ... families, and Swin's window attention), kept as a leaf whose heads are units.
_KIND_BY_NAME = {
    "torchvision.ops.stochastic_depth.StochasticDepth": "elementwise",
    "timm.layers.attention.Attention": "fused_qkv_attention",
    "timm.models.swin_transformer.WindowAttention": "fused_qkv_attention",
}


# Modules taught by users: the class (subclasses included) -> a kind name or a rule function.
_USER_RULES: dict[type[nn.Module], str | Callable[..., Any]] = {}


def register_module_rule(
    module_type: type[nn.Module], rule: str | Callable[..., Any], *, replace: bool = False
) -> None:
    """Analyse ``module_type`` (and its subclasses) as a leaf with ``rule``: a name from ``KINDS`` or a rule
    function ``rule(prop, call)`` (see ``rules``). A type registered already needs ``replace=True``."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type must be a subclass of torch.nn.Module, got {module_type!r}")
    if isinstance(rule, str) and rule not in KINDS:
        raise ValueError(f"rule {rule!r} is not a kind; use one of {KINDS} or a rule function")
    if not isinstance(rule, str) and not callable(rule):
        raise TypeError(f"rule must be a kind name or a function rule(prop, call), got {rule!r}")
    if module_type in _USER_RULES and not replace:
        raise ValueError(f"{module_type.__qualname__} has a rule already; pass replace=True to replace it")
    _USER_RULES[module_type] = rule


def unregister_module_rule(module_type: type[nn.Module]) -> None:
    """Forget the rule registered for ``module_type`` (its forward is traced through again)."""
    _USER_RULES.pop(module_type, None)


def module_kind(module: nn.Module) -> str | Callable[..., Any] | None:
    """The kind of a leaf module (a user's rule function for a type registered with one), or None when
    the analysis does not understand it."""
    for cls in type(module).__mro__:
        if cls in _USER_RULES:
            return _USER_RULES[cls]
    kind = _KIND_BY_FORWARD.get(type(module).forward)
    kind = kind or _KIND_BY_NAME.get(f"{type(module).__module__}.{type(module).__qualname__}")
    return kind or ("separate_qkv_attention" if _separate_qkv_attention(module) else None)


def _separate_qkv_attention(module: nn.Module) -> bool:
    """Hugging Face's self-attention layout (BERT, RoBERTa, ViT, DeiT, ...): ``query``, ``key`` and ``value``
    linears, and the head counts that Hugging Face's own ``prune_heads`` updates."""
    return all(isinstance(getattr(module, name, None), nn.Linear) for name in ("query", "key", "value")) and all(
        isinstance(getattr(module, name, None), int)
        for name in ("num_attention_heads", "attention_head_size", "all_head_size")
    )


ELEMENTWISE_FUNCTIONS = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.neg,
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
PERMUTE_FUNCTIONS = {torch.permute, torch.transpose, torch.swapaxes, torch.movedim}
PERMUTE_METHODS = {"permute", "transpose", "swapaxes", "movedim"}
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
NORM_FUNCTIONS = {
    F.batch_norm: "channel_norm_function",
    F.instance_norm: "channel_norm_function",
    F.group_norm: "group_norm_function",
    F.layer_norm: "layer_norm_function",
}


KINDS = (
    "elementwise",
    "reshape",
    "permute",
    "pool",
    "reduce",
    "softmax",
    "concat",
    "split",
    "getitem",
    "conv",
    "conv_transpose",
    "linear",
    "batchnorm",
    "groupnorm",
    "layernorm",
    "prelu",
    "channel_shuffle",
    "channel_norm_function",
    "group_norm_function",
    "layer_norm_function",
    "fused_qkv_attention",
    "separate_qkv_attention",
    "multihead_attention",
    "embedding",
    "pad",
    "roll",
    "new_tensor",
)


def _by_kind(tables: dict[str, set]) -> dict:
    return {member: kind for kind, members in tables.items() for member in members}


_FUNCTION_KINDS = (
    _by_kind(
        {
            "elementwise": ELEMENTWISE_FUNCTIONS,
            "reshape": RESHAPE_FUNCTIONS,
            "permute": PERMUTE_FUNCTIONS,
            "pool": POOL_FUNCTIONS,
            "reduce": REDUCE_FUNCTIONS,
            "concat": CONCAT_FUNCTIONS,
            "split": SPLIT_FUNCTIONS,
            "softmax": SOFTMAX_FUNCTIONS,
            "getitem": {operator.getitem},
            "pad": {F.pad},
            "roll": {torch.roll},
        }
    )
    | NORM_FUNCTIONS
)
_METHOD_KINDS = _by_kind(
    {
        "elementwise": ELEMENTWISE_METHODS,
        "reshape": RESHAPE_METHODS,
        "permute": PERMUTE_METHODS,
        "reduce": REDUCE_METHODS,
        "split": SPLIT_METHODS,
        "softmax": SOFTMAX_METHODS,
        "roll": {"roll"},
        "new_tensor": {"new_empty", "new_zeros", "new_ones", "new_full", "new_tensor"},
    }
)


def function_kind(target) -> str | None:
    """The kind of a ``call_function`` target, or None when unsupported."""
    try:
        kind = _FUNCTION_KINDS.get(target)
    except TypeError:  # an unhashable target
        kind = None
    if (
        kind is None
        and f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', '')}" in ELEMENTWISE_FUNCTION_NAMES
    ):
        kind = "elementwise"
    return kind


def method_kind(name: str) -> str | None:
    """The kind of a ``call_method`` target (a Tensor method name), or None when unsupported."""
    return _METHOD_KINDS.get(name)


def describe_target(target) -> str:
    """A readable name for an fx node target (function, method name or module path)."""
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", "") or ""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)
    if "_VariableFunctionsClass" in name:  # torch's C functions (torch.sort, torch.cat, ...)
        return f"torch.{target.__name__}"
    return f"{module}.{name}" if module and module != "builtins" else name
