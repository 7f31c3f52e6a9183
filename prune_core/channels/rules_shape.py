"""Channel rules of operations that move values between positions: reshapes, permutations, concatenation,
splits, indexing, padding, rolls and channel shuffles.

Labels move with the values; where pruning would leave a size or an offset written in ``forward`` wrong,
the rule ties or blocks the channels involved, or gives up (None: the operation is unsupported).

>>> import torch, torch.nn as nn
>>> from prune_core.channels.graph import ChannelGraph
>>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
>>> ChannelGraph.build(net, torch.zeros(1, 1, 8, 8)).site_units[("2.weight", 1)][:3].tolist()  # a filter's 36 inputs
[0, 0, 0]
"""

from __future__ import annotations

import dataclasses
import operator

import numpy as np
import torch
from torch import fx

from prune_core.channels.labels import along, shaped, squeeze_constant, squeeze_constant_from, varying_dims
from prune_core.channels.rule_call import OpCall, Propagation, argument, dims_of
from prune_core.channels.sites import ParamRef


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


def permute(prop: Propagation, call: OpCall):
    """``permute``, ``transpose``, ``movedim``, ``t`` and the ``.T`` and ``.mT`` attributes: the labels move with
    the dims. A 2-D parameter read directly and transposed (``weight.T``) is marked so (``ParamRef.transposed``)
    for the rule that uses it (``rules_layers.matmul_linear``)."""
    n, args, kwargs, lab_args = call.node, call.args, call.kwargs, call.labels
    lab = lab_args[0]
    name = n.target if isinstance(n.target, str) else n.target.__name__
    rest = list(args[1:]) + [kwargs[k] for k in ("dims", "dim0", "dim1", "source", "destination") if k in kwargs]
    if name == "getattr":  # a tensor attribute: only the transposes are permutations
        name, rest = str(args[1]), []
        if name not in ("T", "mT"):
            return None
    if isinstance(lab, ParamRef):
        dims = {d % 2 for d in rest if isinstance(d, int)} if len(rest) == 2 else set()
        swaps = name in ("t", "T", "mT") or (name in ("transpose", "swapaxes") and dims == {0, 1})
        return dataclasses.replace(lab, transposed=not lab.transposed) if len(lab.shape) == 2 and swaps else None
    if not isinstance(lab, np.ndarray):
        return None
    if name in ("t", "T"):  # every dim reversed (at most two for ``t``)
        return np.ascontiguousarray(lab.T)
    if name == "mT":
        return np.ascontiguousarray(np.swapaxes(lab, -1, -2))
    if name == "permute":
        dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
        return np.ascontiguousarray(np.transpose(lab, [d % lab.ndim for d in dims]))
    if name in ("transpose", "swapaxes"):
        return np.ascontiguousarray(np.swapaxes(lab, rest[0], rest[1]))
    return np.ascontiguousarray(np.moveaxis(lab, rest[0], rest[1]))


def concat(prop: Propagation, call: OpCall):
    """``torch.cat``: along the channel dim the pieces' channels follow at their offsets; along another
    dim the pieces' channels are tied position by position. An empty one-dimensional piece, which
    ``torch.cat`` skips whatever the others' dims (the empty start of a Hugging Face key-value cache), is
    skipped here too.

    >>> import torch
    >>> from torch import nn
    >>> from prune_core.channels.graph import ChannelGraph
    >>> class Cached(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv = nn.Conv1d(1, 4, 3)
    ...     def forward(self, x):
    ...         return torch.cat([torch.tensor([]), self.conv(x)], dim=-1)
    >>> len(ChannelGraph.build(Cached(), torch.zeros(1, 1, 8)).units)
    4
    """
    args, kwargs, lab_args, result = call.args, call.kwargs, call.labels, call.result
    if not isinstance(lab_args[0], (tuple, list)) or not all(isinstance(lab, np.ndarray) for lab in lab_args[0]):
        return None
    nd = result.ndim
    kept = [(x, lab) for x, lab in zip(args[0], lab_args[0]) if nd == 1 or x.shape != (0,)]
    tensors, labels = [x for x, _ in kept], [lab for _, lab in kept]
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


def pad(prop: Propagation, call: OpCall):
    """``F.pad``: fine where no channel dim is padded (Swin's windows pad the spatial dims); gives up otherwise."""
    return _padded(call.labels[0], argument(call.args, call.kwargs, 1, "pad"))


def pad_module(prop: Propagation, call: OpCall):
    """A padding module (``nn.ZeroPad2d``, ``nn.ReflectionPad2d``, ...: ``F.pad`` with its ``padding``), as ``pad``."""
    return _padded(call.labels[0], prop.modules[call.node.target].padding)


def _padded(lab, amounts):
    """The labels of ``lab`` padded by ``amounts`` (``F.pad``'s, from the last dim back), or None where a
    channel dim is padded."""
    if not isinstance(lab, np.ndarray) or not isinstance(amounts, (tuple, list)):
        return None
    padded = [lab.ndim - 1 - i for i in range(len(amounts) // 2) if amounts[2 * i] or amounts[2 * i + 1]]
    if set(padded) & set(varying_dims(lab)):
        return None
    return lab[tuple(slice(0, 1) if d in padded else slice(None) for d in range(lab.ndim))]


def roll(prop: Propagation, call: OpCall):
    """``torch.roll``: fine along dims without channels (Swin's shifted windows roll the spatial dims)."""
    args, kwargs, lab_args = call.args, call.kwargs, call.labels
    lab, dims = lab_args[0], argument(args, kwargs, 2, "dims")
    if not isinstance(lab, np.ndarray):
        return None
    rolled = list(range(lab.ndim)) if dims is None else dims_of(dims, lab.ndim)
    return None if set(rolled) & set(varying_dims(lab)) else lab


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
