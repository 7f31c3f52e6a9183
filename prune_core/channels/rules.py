"""The channel rules: how each kind of operation moves channel labels from its inputs to its output.

``RULES`` maps every kind ``ops`` knows to a rule, explicitly: a kind without a rule is an
error at import, never a silent "unsupported". A rule is a function ``rule(prop, call)`` of
the running propagation (``rule_call.Propagation``: it records slots, sites and blocks) and an ``OpCall``
(the fx node, its real arguments, their labels and the real result). It returns the labels of
the result, or None when it does not understand this call: then the propagation treats the
operation as unsupported, and every channel that reaches it is kept.

The elementwise rule is the subtlest; its docstring says how it works.

Users add rules for their own leaf modules with ``ops.register_module_rule``; ``channelwise``
builds the common one (a module that acts on each channel along dim 1 with per-channel
parameters).

>>> import torch, torch.nn as nn
>>> from prune_core.channels.tracing import trace_model
>>> from prune_core.channels.propagate import ChannelPropagation
>>> prop = ChannelPropagation(trace_model(nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU())))
>>> _ = prop.run(torch.zeros(1, 1, 8))
>>> sorted(set(RULES) - set(ops.KINDS)), sorted(set(ops.KINDS) - set(RULES))
([], [])
"""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch import fx

from prune_core.channels import ops
from prune_core.channels.attention_rules import fused_qkv_attention, multihead_attention, separate_qkv_attention
from prune_core.channels.labels import along, shaped, squeeze_constant, squeeze_constant_from, varying_dims
from prune_core.channels.rule_call import OpCall, Propagation, Rule, argument, channel_vector
from prune_core.channels.sites import ParamRef, owner


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


def _dims(dims, ndim: int) -> list[int]:
    dims = [dims] if isinstance(dims, int) else list(dims)
    return sorted(d % ndim for d in dims)


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
    out_shape = tuple(result.shape)
    nd = len(out_shape)
    tensors, params = [], []
    for real, lab in _operands(args, kwargs, lab_args, lab_kwargs):
        if real.ndim > nd:
            return None
        shape = (1,) * (nd - real.ndim) + tuple(real.shape)
        if isinstance(lab, ParamRef):
            params.append((lab, shape))
            continue
        if lab is None:
            lab = prop.fresh(real, f"tensor without channel information at `{n.name}`")
        tensors.append((shape, lab.reshape((1,) * (nd - lab.ndim) + lab.shape)))
    if not tensors:
        return _parameter_alone(prop, params, out_shape)
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


def reshape(prop: Propagation, call: OpCall):
    """Row-major reshapes (view, reshape, flatten, squeeze, ...).

    Merging a channel dim with others is always safe. Splitting one (ShuffleNet's
    ``view(N, g, C // g, H, W)``) stays valid after pruning only if every outer slice
    loses the same inner positions, so those are tied. A channel-carrying output size
    given as a constant would break after pruning, so it blocks. A size read from
    *another* tensor's channel count (EdgeNeXt's ``attention.reshape(B, N, C)`` with
    ``B, N, C = x.shape``) must change with it: unless that dim holds the same channels
    (ShuffleNet's second view, reordered), its positions are tied to the other tensor's
    channels (which blocks them where this tensor's count is fixed); a size computed from
    another tensor's channel count blocks both.
    """
    n, args, lab_args, result = call.node, call.args, call.labels, call.result
    x, lab = args[0], lab_args[0]
    if not isinstance(lab, np.ndarray) or not isinstance(result, torch.Tensor):
        return None
    in_shape, out_shape = tuple(x.shape), tuple(result.shape)
    out = np.broadcast_to(lab, in_shape).reshape(out_shape)
    sizes = _reshape_sizes(n, len(out_shape))
    if not all([_size_follows(prop, n, size, out, dim) for dim, size in enumerate(sizes)]):
        return None
    varying = set(varying_dims(lab))
    for dims_in, dims_out in _reshape_blocks(in_shape, out_shape):
        if not varying & set(dims_in):
            continue
        sized = [d for d in dims_out if out_shape[d] > 1]
        if not sized or not (sizes[sized[-1]] == -1 or isinstance(sizes[sized[-1]], fx.Node)):
            return None
        if len(sized) > 1:
            outer = int(np.prod([out_shape[d] for d in sized[:-1]]))
            moved = squeeze_constant_from(np.moveaxis(out, sized, range(len(sized))), len(sized))
            rows = moved.reshape(outer, -1)
            for row in rows[1:]:
                prop.slots.unify_arrays(rows[0], row)
    return squeeze_constant(out)


def _size_follows(prop, n: fx.Node, size, out: np.ndarray, dim: int) -> bool:
    """Whether output size ``size`` (an int or an fx node) of reshape ``n`` stays right (see above)."""
    if not isinstance(size, fx.Node):
        return True
    others = [(t, d) for t, d in _shape_reads(prop, size) if t is not n.args[0] and _carries_channels(prop, t, d)]
    if not others:
        return True
    source = _size_source(size)
    theirs = prop.labels.get(source[0]) if source is not None else None
    if others == [source] and isinstance(theirs, np.ndarray):
        theirs = along(theirs, source[1] % theirs.ndim, out.shape[dim])
        mine = along(squeeze_constant(out), dim, out.shape[dim])
        if mine is not None and theirs is not None:
            if sorted(map(prop.slots.find, mine.tolist())) != sorted(map(prop.slots.find, theirs.tolist())):
                prop.slots.unify_arrays(mine, theirs)  # not the same channels, maybe reordered: tie them
            return True
    for tensor, _ in others:
        prop.block(prop.labels.get(tensor), f"its channel count sets a size of `{n.name}`")
    return False


def _shape_reads(prop, node: fx.Node) -> list[tuple[fx.Node, int | None]]:
    """Every tensor size a size expression reads, as ``(tensor, dim)``; dim None: a whole shape, or values."""
    found, stack = [], [node]
    while stack:
        current = stack.pop()
        source = _size_source(current)
        if source is not None:
            found.append(source)
        elif isinstance(prop.labels.get(current), np.ndarray):  # a tensor: its values set the size
            found.append((current, None))
        elif (current.op == "call_function" and current.target is getattr) or (
            current.op == "call_method" and current.target == "size"
        ):
            found.append((current.args[0], None))
        else:
            stack.extend(current.all_input_nodes)
    return found


def _carries_channels(prop, tensor: fx.Node, dim: int | None) -> bool:
    """Whether pruning can change ``tensor``'s size along ``dim`` (None: along any dim)."""
    labels = prop.labels.get(tensor)
    if not isinstance(labels, np.ndarray):
        return True
    varying = varying_dims(labels)
    return bool(varying) if dim is None else dim % labels.ndim in varying


def permute(prop: Propagation, call: OpCall):
    """``permute``, ``transpose``, ``movedim``: the labels move with the dims."""
    n, args, kwargs, lab_args = call.node, call.args, call.kwargs, call.labels
    lab = lab_args[0]
    if not isinstance(lab, np.ndarray):
        return None
    name = n.target if isinstance(n.target, str) else n.target.__name__
    rest = list(args[1:]) + [kwargs[k] for k in ("dims", "dim0", "dim1", "source", "destination") if k in kwargs]
    if name == "permute":
        dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
        return np.ascontiguousarray(np.transpose(lab, [d % lab.ndim for d in dims]))
    if name in ("transpose", "swapaxes"):
        return np.ascontiguousarray(np.swapaxes(lab, rest[0], rest[1]))
    return np.ascontiguousarray(np.moveaxis(lab, rest[0], rest[1]))


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
    dims = list(range(lab.ndim)) if dims is None else _dims(dims, lab.ndim)
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


def concat(prop: Propagation, call: OpCall):
    """``torch.cat``: along the channel dim the pieces' channels follow at their offsets; along another
    dim the pieces' channels are tied position by position."""
    args, kwargs, lab_args, result = call.args, call.kwargs, call.labels, call.result
    tensors, labels = args[0], lab_args[0]
    if not isinstance(labels, (tuple, list)) or not all(isinstance(lab, np.ndarray) for lab in labels):
        return None
    nd = result.ndim
    dim = argument(args, kwargs, 1, "dim", 0) % nd
    other = {d for lab in labels for d in varying_dims(lab) if d != dim}
    if other:
        if any(dim in varying_dims(lab) for lab in labels):
            return None
        heads = [lab.take([0], axis=dim) for lab in labels]
        for head in heads[1:]:
            prop.slots.unify_arrays(heads[0], head)
        return squeeze_constant(heads[0])
    pieces = []
    for x, lab in zip(tensors, labels):
        shape = [1] * nd
        shape[dim] = x.shape[dim]
        pieces.append(np.broadcast_to(lab, shape))
    return squeeze_constant(np.concatenate(pieces, axis=dim))


def split(prop: Propagation, call: OpCall):
    """``chunk``/``split``: along a non-channel dim the pieces keep the labels; along a channel dim only equal
    chunks are understood (see inside)."""
    n, args, kwargs, lab_args, result = call.node, call.args, call.kwargs, call.labels, call.result
    x, lab = args[0], lab_args[0]
    if not isinstance(lab, np.ndarray) or not isinstance(result, (tuple, list)):
        return None
    dim = argument(args, kwargs, 2, "dim", 0) % x.ndim
    full = np.broadcast_to(lab, tuple(x.shape))
    pieces, start = [], 0
    for part in result:
        size = part.shape[dim]
        pieces.append(full.take(range(start, start + size), axis=dim))
        start += size
    if dim in varying_dims(lab):
        # The split points are fixed by the piece count (chunk) or by constants (split):
        # only equal chunks stay consistent, and only if every piece loses the same
        # positions -- so the pieces' channels are tied position by position.
        name = n.target if isinstance(n.target, str) else n.target.__name__
        if name != "chunk" or len({p.shape[dim] for p in pieces}) != 1:
            return None
        for piece in pieces[1:]:
            prop.slots.unify_arrays(pieces[0], piece)
    return tuple(squeeze_constant(p) for p in pieces)


def getitem(prop: Propagation, call: OpCall):
    """Indexing: a tuple's element, or a tensor slice that does not select along a channel dim."""
    args, lab_args = call.args, call.labels
    container, index = lab_args[0], args[1]
    if isinstance(container, (tuple, list)):
        return container[index]
    if not isinstance(container, np.ndarray):
        return None
    parts = index if isinstance(index, tuple) else (index,)
    if not all(p is None or p is Ellipsis or isinstance(p, (int, slice)) for p in parts):
        return None
    if set(varying_dims(container)) & set(_indexed_dims(parts, container.ndim)):
        return None  # constant positions along channels (DPN's x[:, :k]) would be wrong once pruned
    return squeeze_constant(np.broadcast_to(container, tuple(args[0].shape))[index])


def layer_norm_function(prop: Propagation, call: OpCall):
    """``F.layer_norm``: as the module, with the weight and bias read directly."""
    args, kwargs, lab_args, lab_kwargs = call.args, call.kwargs, call.labels, call.label_kwargs
    weight = argument(lab_args, lab_kwargs, 2, "weight")
    bias = argument(lab_args, lab_kwargs, 3, "bias")
    refs = [r.name for r in (weight, bias) if isinstance(r, ParamRef)]
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


def conv(prop: Propagation, call: OpCall):
    """A convolution: its filters are new channels (dim 0 of the weight); its input channels are a site.
    Grouped convolutions tie each group's input channels, and their filters follow those groups."""
    n, args, lab_args, result = call.node, call.args, call.labels, call.result
    m, fqn, x = prop.modules[n.target], n.target, args[0]
    cdim = x.ndim - len(m.kernel_size) - 1
    vector = channel_vector(prop, lab_args[0], cdim, m.in_channels, fqn)
    if m.groups == 1:
        prop.site(f"{fqn}.weight", 1, vector, "input")
        out = prop.producer(fqn, m.out_channels)
        prop.module_sites(fqn, ("weight", "bias"), out, "filter")
    else:
        in_per, out_per = m.in_channels // m.groups, m.out_channels // m.groups
        if in_per == 1:  # depthwise: each group is one input channel already
            reps = vector
        else:
            reps = np.asarray(
                [prop.slots.unify_all(vector[k * in_per : (k + 1) * in_per]) for k in range(m.groups)], dtype=np.int64
            )
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
    n, args, lab_args, result = call.node, call.args, call.labels, call.result
    m, fqn, x = prop.modules[n.target], n.target, args[0]
    prop.site(f"{fqn}.weight", 1, channel_vector(prop, lab_args[0], x.ndim - 1, m.in_features, fqn), "input")
    out = prop.producer(fqn, m.out_features)
    prop.module_sites(fqn, ("weight", "bias"), out, "filter")
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


def pad(prop: Propagation, call: OpCall):
    """``F.pad``: fine where no channel dim is padded (Swin's windows pad the spatial dims); gives up otherwise."""
    args, kwargs, lab_args = call.args, call.kwargs, call.labels
    lab, amounts = lab_args[0], argument(args, kwargs, 1, "pad")
    if not isinstance(lab, np.ndarray) or not isinstance(amounts, (tuple, list)):
        return None
    padded = [lab.ndim - 1 - i for i in range(len(amounts) // 2) if amounts[2 * i] or amounts[2 * i + 1]]
    if set(padded) & set(varying_dims(lab)):
        return None
    return lab[tuple(slice(0, 1) if d in padded else slice(None) for d in range(lab.ndim))]


def new_tensor(prop: Propagation, call: OpCall):
    """``x.new_empty(shape)`` and the like: a tensor of ``x``'s type that holds none of its channels (stochastic
    depth's random mask, traced in training mode)."""
    return prop.fresh(call.result, f"a new tensor (`Tensor.{call.node.target}`, node `{call.node.name}`)")


def roll(prop: Propagation, call: OpCall):
    """``torch.roll``: fine along dims without channels (Swin's shifted windows roll the spatial dims)."""
    args, kwargs, lab_args = call.args, call.kwargs, call.labels
    lab, dims = lab_args[0], argument(args, kwargs, 2, "dims")
    if not isinstance(lab, np.ndarray):
        return None
    rolled = list(range(lab.ndim)) if dims is None else _dims(dims, lab.ndim)
    return None if set(rolled) & set(varying_dims(lab)) else lab


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
    for k in range(num_groups):
        prop.slots.unify_all(vector[k * per : (k + 1) * per])
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


def prelu(prop: Propagation, call: OpCall):
    """PReLU: one parameter, or one per channel (``num_parameters``) that follows the channels."""
    n, lab_args = call.node, call.labels
    m = prop.modules[n.target]
    if m.num_parameters == 1:
        return lab_args[0]
    return _norm_sites(prop, n.target, lab_args[0], m.num_parameters, ("weight",), "num_parameters")


def channel_shuffle(prop: Propagation, call: OpCall):
    """``view(N, g, C // g, ...)``, swap, flatten: each of the g groups must lose the same positions."""
    n, args, lab_args = call.node, call.args, call.labels
    m, lab = prop.modules[n.target], lab_args[0]
    size = args[0].shape[1]
    vector = along(lab, 1, size) if isinstance(lab, np.ndarray) else None
    if vector is None:
        return None
    rows = vector.reshape(m.groups, size // m.groups)
    for row in rows[1:]:
        prop.slots.unify_arrays(rows[0], row)
    return shaped(rows.T.reshape(-1), lab.ndim, 1)


def _indexed_dims(parts: tuple, ndim: int) -> list[int]:
    """The dims of an ``ndim``-dimensional tensor that an index selects from (anything but a full ``:``)."""
    real = [p for p in parts if p is not None]
    dims, dim = [], 0
    for part in real:
        if part is Ellipsis:
            dim = ndim - (len(real) - 1 - real.index(Ellipsis))
            continue
        if part != slice(None):
            dims.append(dim)
        dim += 1
    return dims


def _reshape_blocks(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> list[tuple[list[int], list[int]]]:
    """Group input and output dims of a row-major reshape into blocks of equal size."""
    blocks, i, j = [], 0, 0
    while i < len(in_shape) or j < len(out_shape):
        dims_in, dims_out = [], []
        size_in = size_out = 1
        while True:
            if size_in <= size_out and i < len(in_shape):
                size_in *= in_shape[i]
                dims_in.append(i)
                i += 1
            elif j < len(out_shape):
                size_out *= out_shape[j]
                dims_out.append(j)
                j += 1
            else:
                break
            if size_in == size_out and dims_in and dims_out:
                break
        blocks.append((dims_in, dims_out))
    return blocks


def _reshape_sizes(n: fx.Node, ndim: int) -> list:
    """Each output size of a reshape as written: an int (-1 included), or the fx node computing it."""
    name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
    if name not in ("view", "reshape"):
        return [-1] * ndim  # flatten, squeeze, unflatten, view_as...: sizes follow the tensors involved
    sizes = list(n.args[1:]) if n.op == "call_method" else list(n.args[1:2])
    if "shape" in n.kwargs or "size" in n.kwargs:
        sizes = [n.kwargs.get("shape", n.kwargs.get("size"))]
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list, torch.Size)):
        sizes = list(sizes[0])
    if len(sizes) == 1 and isinstance(sizes[0], fx.Node) and ndim != 1:  # a whole shape: x.view(y.shape)
        return [sizes[0]] * ndim
    if len(sizes) != ndim:
        return [-1] * ndim
    return sizes


def _size_source(node: fx.Node) -> tuple[fx.Node, int] | None:
    """``(tensor, dim)`` when ``node`` is one size of a tensor: ``t.shape[d]``, ``t.size(d)``, ``t.size()[d]``."""
    if node.op == "call_method" and node.target == "size" and len(node.args) == 2 and isinstance(node.args[1], int):
        return node.args[0], node.args[1]
    if node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[1], int):
        base = node.args[0]
        if isinstance(base, fx.Node) and (
            (base.op == "call_function" and base.target is getattr and base.args[1] == "shape")
            or (base.op == "call_method" and base.target == "size" and len(base.args) == 1)
        ):
            return base.args[0], node.args[1]
    return None


def channelwise(*names: str, count: str | None = None) -> Rule:
    """A rule for a leaf module that acts on each channel (dim 1) of its first input on its own: the
    parameters or buffers ``names`` (one entry per channel) follow the channels, and so does the
    integer attribute ``count`` (its channel count) when given.

    >>> rule = channelwise("scale", count="channels")   # then ops.register_module_rule(MyScale, rule)
    """

    def rule(prop: Propagation, call: OpCall):
        x = call.args[0]
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            return None
        return _norm_sites(prop, call.node.target, call.labels[0], x.shape[1], names, count)

    return rule


RULES: dict[str, Rule] = {
    "elementwise": elementwise,
    "reshape": reshape,
    "permute": permute,
    "pool": pool,
    "reduce": reduce,
    "softmax": softmax,
    "concat": concat,
    "split": split,
    "getitem": getitem,
    "conv": conv,
    "conv_transpose": conv_transpose,
    "linear": linear,
    "batchnorm": batchnorm,
    "groupnorm": groupnorm,
    "layernorm": layernorm,
    "prelu": prelu,
    "channel_shuffle": channel_shuffle,
    "channel_norm_function": channel_norm_function,
    "group_norm_function": group_norm_function,
    "layer_norm_function": layer_norm_function,
    "fused_qkv_attention": fused_qkv_attention,
    "multihead_attention": multihead_attention,
    "separate_qkv_attention": separate_qkv_attention,
    "embedding": embedding,
    "pad": pad,
    "roll": roll,
    "new_tensor": new_tensor,
}
if set(RULES) != set(ops.KINDS):
    raise ImportError(f"channel rules and op kinds differ: {sorted(set(RULES) ^ set(ops.KINDS))}")
