"""Channel rules of operations that act position by position: activations, arithmetic, dropout, casts,
pooling, reductions and softmax over dims without channels, and new tensors.

A rule is ``rule(prop, call)`` (``rule_call``): it returns the labels of the result, or None when it does not
understand the call (the operation is then unsupported and every channel reaching it kept). ``families``
gives each rule its family.

>>> import torch, torch.nn as nn
>>> from prune_core.channels.graph import ChannelGraph
>>> graph = ChannelGraph.build(nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Conv1d(4, 2, 3)), torch.zeros(1, 1, 8))
>>> graph.site_units[("2.weight", 1)].tolist()    # ReLU passes the first conv's 4 filters to the second
[0, 1, 2, 3]
"""

from __future__ import annotations

import numpy as np
import torch

from prune_core.channels.labels import along, shaped, squeeze_constant, varying_dims
from prune_core.channels.rule_call import OpCall, Propagation, argument, dims_of
from prune_core.channels.sites import ParamRef


def _tensor_pairs(values, labels):
    """(tensor, label) pairs of matching nested argument structures."""
    if isinstance(values, torch.Tensor):
        yield values, labels
    elif isinstance(values, (tuple, list)) and isinstance(labels, (tuple, list)):
        for v, lab in zip(values, labels):
            yield from _tensor_pairs(v, lab)
    elif isinstance(values, dict) and isinstance(labels, dict):
        for key in values:
            yield from _tensor_pairs(values[key], labels.get(key))


def _operands(args, kwargs, lab_args, lab_kwargs):
    return list(_tensor_pairs(args, lab_args)) + list(_tensor_pairs(kwargs, lab_kwargs))


def elementwise(prop: Propagation, call: OpCall):
    """Activations, ``+``, ``*``, ``torch.where``, dropout, casts, ...: the output at a position depends on
    the operands at the same (broadcast) position only.

    - The *channel dims* are those along which some tensor operand's labels vary.
    - Operands that span the output along every channel dim are *unified* position by position:
      a residual addition ties channel k of both branches into one unit, removed together, and
      a squeeze-and-excitation product ties the gate's channels to the features'.
    - An operand that broadcasts along a channel dim (a per-example scale of shape
      ``(N, 1, 1, 1)``) is fine if its labels do not vary; if they do, a pruning could not keep
      it aligned, and the rule gives up (the operation is then unsupported).
    - A tensor without labels (a constant built in ``forward``) gets blocked labels: when it
      spans a channel dim, unifying with it keeps those channels.
    - A parameter or buffer read directly (``ParamRef``, e.g. a learned per-channel scale of
      shape ``(C, 1, 1)``) that spans a channel dim becomes a *site* along that dim, so the
      surgery slices it with the channels; if the output's labels vary along another dim too,
      the rule gives up. A parameter alone (a class token expanded to the batch) gets new slots
      along the one dim it spans.
    """
    n, args, kwargs, lab_args, lab_kwargs, result = call
    if not isinstance(result, torch.Tensor):
        return None
    if not kwargs and len(args) == 1 and isinstance(args[0], torch.Tensor) and type(lab_args[0]) is np.ndarray:
        if args[0].shape == result.shape and lab_args[0].ndim == result.ndim:  # an activation or a cast
            return squeeze_constant(lab_args[0])  # its one operand's labels, as the general case below gives them
    out_shape = tuple(result.shape)
    nd = len(out_shape)
    tensors, params = [], []
    for real, lab in _operands(args, kwargs, lab_args, lab_kwargs):
        if real.ndim > nd:
            return None
        shape = (1,) * (nd - real.ndim) + tuple(real.shape)
        if isinstance(lab, ParamRef):
            if lab.transposed:  # its dims are not the stored tensor's
                return None
            params.append((lab, shape))
            continue
        if lab is None:
            lab = prop.fresh(real, f"tensor without channel information at `{n.name}`")
        tensors.append((shape, lab.reshape((1,) * (nd - lab.ndim) + lab.shape)))
    if not tensors:
        return _parameter_alone(prop, params, out_shape)
    if len(tensors) == 1 and not params and tensors[0][0] == out_shape:  # an activation: its operand's labels
        return squeeze_constant(tensors[0][1])
    labeled = {d for _, lab in tensors for d in varying_dims(lab)}
    part = [lab for shape, lab in tensors if all(shape[d] == out_shape[d] for d in labeled)]
    rest = [lab for shape, lab in tensors if not all(shape[d] == out_shape[d] for d in labeled)]
    if any(varying_dims(lab) for lab in rest) or not part:
        return None
    common = np.broadcast_shapes(*(lab.shape for lab in part))
    first = np.broadcast_to(part[0], common)
    for lab in part[1:]:
        prop.slots.unify_arrays(first, lab)
    out = squeeze_constant(first)
    for ref, shape in params:
        offset = nd - len(ref.shape)
        for d in labeled:
            if d >= offset and shape[d] == out_shape[d] > 1:
                vector = along(out, d, out_shape[d])
                if vector is None:
                    return None
                prop.site(ref.name, d - offset, vector, "follower")
    return out


def _parameter_alone(prop: Propagation, params: list, out_shape: tuple[int, ...]):
    """A parameter read directly with no tensor beside it (a class token expanded to the batch): new slots
    along the one dim it spans, as a site; they join the channels of what it is concatenated with or added to."""
    if len(params) != 1:
        return None
    ref, shape = params[0]
    spanned = [d for d, size in enumerate(shape) if size > 1]
    if len(spanned) != 1 or shape[spanned[0]] != out_shape[spanned[0]]:
        return None
    d = spanned[0]
    vector = prop.slots.new_slots(out_shape[d])
    prop.site(ref.name, d - (len(out_shape) - len(ref.shape)), vector, "follower")
    return shaped(vector, len(out_shape), d)


def pool(prop: Propagation, call: OpCall):
    """Pooling and interpolation: channels (dim 1) pass through; labels along spatial dims give up."""
    lab_args = call.labels
    lab = lab_args[0]
    if not isinstance(lab, np.ndarray) or any(d >= 2 for d in varying_dims(lab)):
        return None
    return lab


def reduce(prop: Propagation, call: OpCall):
    """``mean``, ``sum``, ``amax``, ``amin``: fine over dims without channels, gives up over a channel dim."""
    args, kwargs, lab_args = call.args, call.kwargs, call.labels
    lab = lab_args[0]
    dims = argument(args, kwargs, 1, "dim")
    if not isinstance(lab, np.ndarray) or isinstance(dims, torch.dtype):
        return None
    dims = list(range(lab.ndim)) if dims is None else dims_of(dims, lab.ndim)
    if any(d in dims for d in varying_dims(lab)):
        return None
    keepdim = bool(argument(args, kwargs, 2, "keepdim", False))
    return lab[tuple(slice(0, 1) if d in dims else slice(None) for d in range(lab.ndim))].reshape(
        [1 if d in dims else s for d, s in enumerate(lab.shape) if keepdim or d not in dims]
    )


def softmax(prop: Propagation, call: OpCall):
    """Softmax over a dim without channels passes them through; over a channel dim it gives up."""
    n, args, kwargs, lab_args = call.node, call.args, call.kwargs, call.labels
    lab = lab_args[0]
    dim = prop.modules[n.target].dim if n.op == "call_module" else argument(args, kwargs, 1, "dim")
    if not isinstance(lab, np.ndarray) or dim is None or (dim % lab.ndim) in varying_dims(lab):
        return None
    return lab


def new_tensor(prop: Propagation, call: OpCall):
    """``x.new_empty(shape)`` and the like: a tensor of ``x``'s type that holds none of its channels (stochastic
    depth's random mask, traced in training mode)."""
    return prop.fresh(call.result, f"a new tensor (`Tensor.{call.node.target}`, node `{call.node.name}`)")
