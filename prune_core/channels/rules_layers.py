"""Channel rules of layers with parameters: convolutions, linear layers and embeddings (whose outputs are
new channels, the *producers*, and whose inputs are *sites*), and norms and PReLU (whose per-channel
parameters, statistics and counts follow the channels through them).

``channelwise`` builds the family of a user's module that acts on each channel on its own.

>>> import torch, torch.nn as nn
>>> from prune_core.channels.graph import ChannelGraph
>>> net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.Conv1d(4, 2, 3))
>>> sorted(k for k in ChannelGraph.build(net, torch.zeros(2, 1, 8)).sites if k[0].startswith("1."))
[('1.bias', 0), ('1.num_features', 0), ('1.running_mean', 0), ('1.running_var', 0), ('1.weight', 0)]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from prune_core.channels.family import Family
from prune_core.channels.labels import along, shaped, varying_dims
from prune_core.channels.rule_call import OpCall, Propagation, argument, channel_vector
from prune_core.channels.sites import ParamRef, owner


def conv(prop: Propagation, call: OpCall):
    """A convolution: its filters are new channels (dim 0 of the weight); its input channels are a site.
    Grouped convolutions tie each group's input channels, and their filters follow those groups."""
    n = call.node
    return _conv(prop, n.target, prop.modules[n.target], call.args[0], call.labels[0], call.result)


def conv_function(prop: Propagation, call: OpCall):
    """``F.conv1d``/``conv2d``/``conv3d`` called with a convolution module's own weight (and bias), with its
    groups: a ``Conv2d`` subclass whose forward pads first (TensorFlow's "same" padding, as in timm's
    ``Conv2dSame`` or the ``efficientnet_pytorch`` encoders) is that convolution, as ``conv``. Any other weight
    (computed in forward, or a tensor of a module that is no convolution) is not understood.

    >>> import torch.nn as nn, torch.nn.functional as F
    >>> from prune_core.channels.graph import ChannelGraph
    >>> class SamePadding(nn.Conv2d):
    ...     def forward(self, x):
    ...         return F.conv2d(F.pad(x, (1, 1, 1, 1)), self.weight, self.bias, self.stride, 0, 1, self.groups)
    >>> net = nn.Sequential(SamePadding(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 2, 1))
    >>> [u.producers for u in ChannelGraph.build(net, torch.zeros(1, 3, 8, 8)).removable_units()][:2]
    [('0',), ('0',)]
    """
    args, kwargs, lab_args, lab_kwargs = call.args, call.kwargs, call.labels, call.label_kwargs
    weight, bias = argument(lab_args, lab_kwargs, 1, "weight"), argument(lab_args, lab_kwargs, 2, "bias")
    m, fqn = _own_layer(prop, weight, bias, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d))
    if m is None or argument(args, kwargs, 6, "groups", 1) != m.groups:
        return None
    return _conv(prop, fqn, m, args[0], lab_args[0], call.result)


def _conv(prop: Propagation, fqn: str, m: torch.nn.Module, x: torch.Tensor, lab, result: torch.Tensor):
    cdim = x.ndim - len(m.kernel_size) - 1
    vector = channel_vector(prop, lab, cdim, m.in_channels, fqn)
    if m.groups == 1:
        prop.site(f"{fqn}.weight", 1, vector, "input")
        out = prop.producer(fqn, m.out_channels)
        prop.module_sites(fqn, ("weight", "bias"), out, "filter")
    else:
        in_per, out_per = m.in_channels // m.groups, m.out_channels // m.groups
        if in_per == 1:  # depthwise: each group is one input channel already
            reps = vector
        else:
            reps = prop.slots.unify_rows(vector.reshape(m.groups, in_per))
        out = np.repeat(reps, out_per)
        prop.module_sites(fqn, ("weight", "bias"), out)
        prop.grouped_convs[fqn] = out_per
    return shaped(out, result.ndim, cdim)


def conv_transpose(prop: Propagation, call: OpCall):
    """A transposed convolution (one group): filters along dim 1 of the weight, inputs along dim 0."""
    n, args, lab_args, result = call.node, call.args, call.labels, call.result
    m, fqn, x = prop.modules[n.target], n.target, args[0]
    if m.groups != 1:
        return None
    cdim = x.ndim - len(m.kernel_size) - 1
    prop.site(f"{fqn}.weight", 0, channel_vector(prop, lab_args[0], cdim, m.in_channels, fqn), "input")
    out = prop.producer(fqn, m.out_channels)
    prop.site(f"{fqn}.weight", 1, out, "filter")
    prop.module_sites(fqn, ("bias",), out, "filter")
    return shaped(out, result.ndim, cdim)


def linear(prop: Propagation, call: OpCall):
    """A linear layer: its inputs (the last dim) are a site and its outputs are new channels, both on 2 dims
    (a hidden fully connected layer, as in VGG's classifier) and on more (pointwise, as in an MLP block)."""
    n = call.node
    return _linear(prop, n.target, prop.modules[n.target], call.args[0], call.labels[0], call.result)


def linear_function(prop: Propagation, call: OpCall):
    """``F.linear`` called with a linear module's own weight (and bias, or none): an ``nn.Linear`` subclass
    whose forward calls it (a wrapper that scales or casts its input first) is that linear layer, as ``linear``.
    Any other weight is not understood."""
    args, lab_args, lab_kwargs = call.args, call.labels, call.label_kwargs
    weight, bias = argument(lab_args, lab_kwargs, 1, "weight"), argument(lab_args, lab_kwargs, 2, "bias")
    m, fqn = _own_layer(prop, weight, bias, torch.nn.Linear)
    if m is None:
        return None
    return _linear(prop, fqn, m, args[0], lab_args[0], call.result)


def matmul_linear(prop: Propagation, call: OpCall):
    """``x @ weight.T`` (``torch.matmul``, ``Tensor.matmul``) with a linear module's own weight: an ``nn.Linear``
    subclass whose forward multiplies by its transposed weight and adds its bias after (Falcon's
    ``FalconLinear``) is that linear layer, as ``linear``; its bias, added to the product, follows the outputs
    there. A product of two activations, or with any other tensor, is not understood.

    >>> import torch.nn as nn
    >>> from prune_core.channels.graph import ChannelGraph
    >>> class ByProduct(nn.Linear):
    ...     def forward(self, x):
    ...         return x @ self.weight.T + self.bias
    >>> net = nn.Sequential(ByProduct(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> [u.producers for u in ChannelGraph.build(net, torch.zeros(3, 4)).removable_units()][:2]
    [('0',), ('0',)]
    """
    args, lab_args = call.args, call.labels
    if len(args) != 2 or not isinstance(args[0], torch.Tensor) or args[0].ndim < 1:
        return None
    m, fqn = _own_layer(prop, lab_args[1], None, torch.nn.Linear, transposed=True)
    if m is None:
        return None
    return _linear(prop, fqn, m, args[0], lab_args[0], call.result)


def _own_layer(
    prop: Propagation, weight, bias, kinds: type | tuple[type, ...], transposed: bool = False
) -> tuple[Any, str]:
    """The module of one of ``kinds`` whose own ``weight`` the label ``weight`` reads (as stored, or transposed),
    with its own bias or none (``bias``, a label), and its name: what ``F.conv2d``, ``F.linear`` or
    ``x @ weight.T`` called in a layer's forward is. (None, "") for anything else."""
    if not isinstance(weight, ParamRef) or weight.name.rpartition(".")[2] != "weight":
        return None, ""
    if weight.transposed != transposed:
        return None, ""
    fqn = owner(weight.name)
    m = prop.modules.get(fqn)
    own_bias = bias is None or (isinstance(bias, ParamRef) and not bias.transposed and bias.name == f"{fqn}.bias")
    return (m, fqn) if isinstance(m, kinds) and own_bias else (None, "")


def _linear(prop: Propagation, fqn: str, m: torch.nn.Module, x: torch.Tensor, lab, result: torch.Tensor):
    prop.site(f"{fqn}.weight", 1, channel_vector(prop, lab, x.ndim - 1, m.in_features, fqn), "input")
    out = prop.producer(fqn, m.out_features)
    prop.module_sites(fqn, ("weight", "bias"), out, "filter")
    return shaped(out, result.ndim, result.ndim - 1)


def transposed_linear(prop: Propagation, call: OpCall):
    """A linear layer whose weight is stored transposed, inputs along dim 0 and outputs along dim 1 (Hugging
    Face's ``Conv1D``, GPT-2's layers: ``addmm(bias, x, weight)``)."""
    n, args, lab_args, result = call.node, call.args, call.labels, call.result
    m, fqn, x = prop.modules[n.target], n.target, args[0]
    inputs, outputs = m.weight.shape
    prop.site(f"{fqn}.weight", 0, channel_vector(prop, lab_args[0], x.ndim - 1, inputs, fqn), "input")
    out = prop.producer(fqn, outputs)
    prop.site(f"{fqn}.weight", 1, out, "filter")
    prop.module_sites(fqn, ("bias",), out, "filter")
    return shaped(out, result.ndim, result.ndim - 1)


def embedding(prop: Propagation, call: OpCall):
    """An embedding table (``nn.Embedding``): its embedding dims (dim 1 of the weight, the output's last dim)
    are new channels, as a linear layer's outputs are (the surgery sets ``embedding_dim`` from the weight). A
    table that renormalises its rows (``max_norm``) keeps them: a row's norm spans every dim."""
    n, result = call.node, call.result
    m, fqn = prop.modules[n.target], n.target
    if m.max_norm is not None:
        return None
    out = prop.producer(fqn, m.embedding_dim)
    prop.site(f"{fqn}.weight", 1, out, "filter")
    return shaped(out, result.ndim, result.ndim - 1)


def _norm_sites(prop, fqn: str, lab, size: int, names: tuple[str, ...], attribute: str | None):
    """A channel-wise module: its parameters/buffers and its channel count follow the labels."""
    vector = along(lab, 1, size) if isinstance(lab, np.ndarray) else None
    if vector is None:
        return None
    prop.module_sites(fqn, names, vector)
    if attribute is not None:
        prop.site(f"{fqn}.{attribute}", 0, vector, "follower", kind="attribute")
    return lab


def batchnorm(prop: Propagation, call: OpCall):
    """BatchNorm and InstanceNorm modules: parameters, running statistics and ``num_features`` follow."""
    n, lab_args = call.node, call.labels
    m = prop.modules[n.target]
    names = ("weight", "bias", "running_mean", "running_var")
    return _norm_sites(prop, n.target, lab_args[0], m.num_features, names, "num_features")


def groupnorm(prop: Propagation, call: OpCall):
    """GroupNorm: parameters and ``num_channels`` follow; whole norm groups go together."""
    n, lab_args = call.node, call.labels
    m, fqn, lab = prop.modules[n.target], n.target, lab_args[0]
    out = _norm_sites(prop, fqn, lab, m.num_channels, ("weight", "bias"), "num_channels")
    if out is not None:
        _tie_norm_groups(prop, fqn, along(lab, 1, m.num_channels), m.num_groups)
    return out


def _tie_norm_groups(prop, fqn: str, vector: np.ndarray, num_groups: int) -> None:
    """Channels normalised together go together: whole norm groups are removed."""
    per = vector.size // num_groups
    prop.slots.unify_rows(vector.reshape(num_groups, per))
    prop.norm_groups[fqn] = per


def channel_norm_function(prop: Propagation, call: OpCall):
    """``F.batch_norm`` / ``F.instance_norm``: per channel along dim 1, like the modules."""
    args, lab_args, lab_kwargs = call.args, call.labels, call.label_kwargs
    names = ("running_mean", "running_var", "weight", "bias")
    tensors = [argument(lab_args, lab_kwargs, i, name) for i, name in enumerate(names, start=1)]
    return None if _functional_norm(prop, args[0], lab_args[0], tensors) is None else lab_args[0]


def group_norm_function(prop: Propagation, call: OpCall):
    """``F.group_norm``: whole groups go, and the owning module's ``num_groups`` follows."""
    args, kwargs, lab_args, lab_kwargs = call.args, call.kwargs, call.labels, call.label_kwargs
    tensors = [argument(lab_args, lab_kwargs, 2, "weight"), argument(lab_args, lab_kwargs, 3, "bias")]
    owners = _functional_norm(prop, args[0], lab_args[0], tensors)
    num_groups = argument(args, kwargs, 1, "num_groups")
    modules = [prop.modules[name] for name in owners or ()]
    if not modules or not all(getattr(m, "num_groups", None) == num_groups for m in modules):
        return None  # the group count would not follow the pruning
    vector = along(lab_args[0], 1, args[0].shape[1])
    for name in owners:
        _tie_norm_groups(prop, name, vector, num_groups)
    return lab_args[0]


def _functional_norm(prop, x, lab, tensors) -> list[str] | None:
    """Channel-wise tensors of a functional norm follow the input's channels (dim 1).

    ``tensors`` are the labels of the per-channel arguments: a parameter or buffer (a
    site of its own, and the owning module's ``num_features``/``num_channels`` follows),
    a computed per-channel tensor (its channels are tied to the input's) or None. Returns
    the owning modules, or None when the layout is not understood.
    """
    size = x.shape[1] if isinstance(x, torch.Tensor) and x.ndim >= 2 else 0
    vector = along(lab, 1, size) if isinstance(lab, np.ndarray) and size else None
    if vector is None:
        return None
    owners = []
    for tensor in tensors:
        if isinstance(tensor, ParamRef):
            if tensor.shape != (size,):
                return None
            prop.site(tensor.name, 0, vector, "follower")
            owners.append(owner(tensor.name))
        elif isinstance(tensor, np.ndarray):
            channels = along(tensor, 0, size) if tensor.ndim == 1 else None
            if channels is None:
                return None
            prop.slots.unify_arrays(vector, channels)
    owners = sorted(set(owners))
    for name in owners:
        module = prop.modules.get(name)
        for attribute in ("num_features", "num_channels"):
            if getattr(module, attribute, None) == size:
                prop.site(f"{name}.{attribute}", 0, vector, "follower", kind="attribute")
    return owners


def layernorm(prop: Propagation, call: OpCall):
    """LayerNorm over the last dim: its parameters (and ``normalized_shape``) follow the channels."""
    n, args, lab_args = call.node, call.args, call.labels
    m, fqn, x = prop.modules[n.target], n.target, args[0]
    names = [f"{fqn}.{p}" for p in ("weight", "bias") if getattr(m, p, None) is not None]
    return _layer_norm(prop, x, lab_args[0], len(m.normalized_shape), names, fqn)


def layer_norm_function(prop: Propagation, call: OpCall):
    """``F.layer_norm``: as the module, with the weight and bias read directly."""
    args, kwargs, lab_args, lab_kwargs = call.args, call.kwargs, call.labels, call.label_kwargs
    weight = argument(lab_args, lab_kwargs, 2, "weight")
    bias = argument(lab_args, lab_kwargs, 3, "bias")
    refs = [r.name for r in (weight, bias) if isinstance(r, ParamRef) and not r.transposed]
    owner_name = owner(refs[0]) if refs else None
    return _layer_norm(prop, args[0], lab_args[0], len(argument(args, kwargs, 1, "normalized_shape")), refs, owner_name)


def _layer_norm(prop, x, lab, k: int, names: list[str], owner: str | None):
    """Layer norm over the last ``k`` dims; channels along them are pruned only when k == 1."""
    if not isinstance(lab, np.ndarray):
        return None
    if not set(varying_dims(lab)) & set(range(x.ndim - k, x.ndim)):
        return lab
    vector = along(lab, x.ndim - 1, x.shape[-1])
    if k != 1 or vector is None:
        return None
    for name in names:
        prop.site(name, 0, vector, "follower")
    if owner is not None:
        prop.renormalizing.add(owner)
        if isinstance(getattr(prop.modules.get(owner), "normalized_shape", None), tuple):
            prop.site(f"{owner}.normalized_shape", 0, vector, "follower", kind="attribute")
    return lab


def prelu(prop: Propagation, call: OpCall):
    """PReLU: one parameter, or one per channel (``num_parameters``) that follows the channels."""
    n, lab_args = call.node, call.labels
    m = prop.modules[n.target]
    if m.num_parameters == 1:
        return lab_args[0]
    return _norm_sites(prop, n.target, lab_args[0], m.num_parameters, ("weight",), "num_parameters")


def channelwise(*names: str, count: str | None = None) -> Family:
    """The family of a leaf module that acts on each channel (dim 1) of its first input on its own: the
    parameters or buffers ``names`` (one entry per channel) follow the channels, and so does the
    integer attribute ``count`` (its channel count) when given, which checkpoints then record.

    >>> family = channelwise("scale", count="channels")   # then register_module_rule(MyScale, family)
    >>> family.attributes
    ('channels',)
    """

    def rule(prop: Propagation, call: OpCall):
        x = call.args[0]
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            return None
        return _norm_sites(prop, call.node.target, call.labels[0], x.shape[1], names, count)

    return Family(f"channelwise({', '.join(map(repr, names))})", rule, attributes=() if count is None else (count,))
