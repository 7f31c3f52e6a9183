"""Run a traced network once on an example input and propagate channel labels through it.

``ChannelPropagation`` is a torch.fx ``Interpreter``: it executes every node for real (so
every shape is known exactly) and, beside the value, computes the node's channel labels
(see ``labels``). Along the way it records *sites*: the (parameter or attribute, dimension)
pairs whose entries belong to channel slots -- a conv's filters (dim 0 of its weight), the
matching input channels of the layers that consume them (dim 1), norm parameters and
running statistics, ``num_features`` and the like. ``graph`` turns the result into removal
units. Values are freed after their last use (fx's garbage collection), labels are small
integer arrays.

>>> import torch, torch.nn as nn
>>> from prune_core.tracing import trace_model
>>> gm = trace_model(nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Conv1d(4, 2, 3)))
>>> prop = ChannelPropagation(gm)
>>> _ = prop.run(torch.zeros(1, 1, 16))
>>> sorted(key for key in prop.sites if key[0].startswith("0."))
[('0.bias', 0), ('0.weight', 0), ('0.weight', 1)]
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx, nn
from torch.fx.node import map_arg

from prune_core import ops
from prune_core.labels import SlotTable, along, compress, compress_from, shaped, varying_dims


@dataclass(frozen=True)
class ParamRef:
    """A parameter or buffer used directly by functional code (an fx ``get_attr``)."""

    name: str
    shape: tuple[int, ...]


@dataclass
class Site:
    """Entries of a parameter, buffer or module attribute that belong to channel slots.

    ``kind`` is "parameter", "buffer" or "attribute"; ``role`` is "filter" (a prunable
    layer's own output channels), "input" (a consuming layer's input channels) or "follower"
    (everything else that follows the channels: norm parameters, grouped-conv rows, counts).
    """

    vector: np.ndarray
    kind: str
    role: str


class ExampleInputMismatch(ValueError):
    """The example input does not run through the model."""


def leaves(value):
    """Every non-container value inside nested tuples, lists and dicts."""
    if isinstance(value, (tuple, list)):
        for item in value:
            yield from leaves(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from leaves(item)
    else:
        yield value


def _walk(labels):
    """Every label array inside a nested structure of labels."""
    return (leaf for leaf in leaves(labels) if isinstance(leaf, np.ndarray))


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


def _arg(args, kwargs, index: int, name: str, default=None):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _dims(dims, ndim: int) -> list[int]:
    dims = [dims] if isinstance(dims, int) else list(dims)
    return sorted(d % ndim for d in dims)


class ChannelPropagation(fx.Interpreter):
    """Executes ``gm`` and records channel labels, slots and sites (see module docstring)."""

    def __init__(self, gm: fx.GraphModule, model: nn.Module | None = None) -> None:
        super().__init__(gm, garbage_collect_values=True)
        model = gm if model is None else model  # the GraphModule holds only the leaves it calls
        self.slots = SlotTable()
        self.labels: dict[fx.Node, object] = {}
        self.sites: dict[tuple[str, int], Site] = {}
        self.producer_slots: dict[str, np.ndarray] = {}
        self.grouped_convs: dict[str, int] = {}
        self.norm_groups: dict[str, int] = {}
        self.renormalizing: set[str] = set()
        self.unsupported: dict[str, None] = {}  # operations not understood, in the order met
        self._modules = dict(model.named_modules())
        self._parameters = {name for name, _ in model.named_parameters()}

    # -- fx.Interpreter ----------------------------------------------------------------
    def run_node(self, n: fx.Node):
        with self._set_current_node(n):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            try:
                result = getattr(self, n.op)(n.target, args, kwargs)
            except Exception as exc:
                what = ops.describe_target(n.target)
                if n.op == "call_module":
                    what = f"module `{n.target}` ({type(self._modules[n.target]).__name__})"
                shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
                raise ExampleInputMismatch(
                    f"the example input does not fit the model: {what} failed on inputs of shape {shapes}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        lab_args = map_arg(n.args, lambda a: self.labels.get(a))
        lab_kwargs = map_arg(n.kwargs, lambda a: self.labels.get(a))
        self.labels[n] = self._propagate(n, args, kwargs, lab_args, lab_kwargs, result)
        return result

    # -- bookkeeping -------------------------------------------------------------------
    def _fresh(self, value, reason: str):
        if isinstance(value, torch.Tensor):
            return np.full([1] * value.ndim, self.slots.new_blocked(reason), dtype=np.int64)
        if isinstance(value, (tuple, list)):
            return tuple(self._fresh(v, reason) for v in value)
        return None

    def _block(self, labels, reason: str) -> None:
        for array in _walk(labels):
            self.slots.block(array, reason)

    def _site(self, name: str, dim: int, vector: np.ndarray, role: str, kind: str | None = None) -> None:
        if kind is None:
            kind = "parameter" if name in self._parameters else "buffer"
        key = (name, dim)
        existing = self.sites.get(key)
        if existing is None:
            self.sites[key] = Site(np.asarray(vector, dtype=np.int64).copy(), kind, role)
        elif existing.vector.shape == vector.shape:
            self.slots.unify_arrays(existing.vector, vector)
        else:
            reason = f"`{name}` is used with {existing.vector.size} and {vector.size} channels"
            self.slots.block(existing.vector, reason)
            self.slots.block(vector, reason)

    def _module_sites(self, fqn: str, names: tuple[str, ...], vector: np.ndarray, role: str = "follower") -> None:
        module = self._modules[fqn]
        for name in names:
            if getattr(module, name, None) is not None:
                self._site(f"{fqn}.{name}", 0, vector, role)

    def _producer(self, fqn: str, count: int) -> np.ndarray:
        slots = self.producer_slots.get(fqn)
        if slots is None:
            slots = self.producer_slots[fqn] = self.slots.new_slots(count)
        return slots

    def _unsupported(self, n: fx.Node, lab_args, lab_kwargs, result, what: str):
        self.unsupported[what] = None
        self._block((lab_args, lab_kwargs), f"used by unsupported operation `{what}` (node `{n.name}`)")
        return self._fresh(result, f"output of unsupported operation `{what}` (node `{n.name}`)")

    # -- dispatch ----------------------------------------------------------------------
    def _propagate(self, n, args, kwargs, lab_args, lab_kwargs, result):
        if n.op == "placeholder":
            return self._fresh(result, f"network input `{n.target}`")
        if n.op == "get_attr":
            return ParamRef(n.target, tuple(result.shape)) if isinstance(result, torch.Tensor) else None
        if n.op == "output":
            self._block(lab_args, "reaches the network output")
            return None
        if not any(isinstance(v, torch.Tensor) for v in leaves(result)):
            return None
        if n.op == "call_module":
            module = self._modules[n.target]
            kind = ops.module_kind(module)
            what = f"{n.target} ({type(module).__name__})"
        elif n.op == "call_function":
            kind, what = ops.function_kind(n.target), ops.describe_target(n.target)
        else:
            kind, what = ops.method_kind(n.target), f"Tensor.{n.target}"
        handler = getattr(self, f"_do_{kind}", None) if kind else None
        labels = handler(n, args, kwargs, lab_args, lab_kwargs, result) if handler else None
        if labels is None:
            return self._unsupported(n, lab_args, lab_kwargs, result, what)
        return labels

    # -- handlers: each returns the output labels, or None for "not understood here" ----
    def _operands(self, args, kwargs, lab_args, lab_kwargs):
        return list(_tensor_pairs(args, lab_args)) + list(_tensor_pairs(kwargs, lab_kwargs))

    def _do_elementwise(self, n, args, kwargs, lab_args, lab_kwargs, result):
        if not isinstance(result, torch.Tensor):
            return None
        out_shape = tuple(result.shape)
        nd = len(out_shape)
        tensors, params = [], []
        for real, lab in self._operands(args, kwargs, lab_args, lab_kwargs):
            if real.ndim > nd:
                return None
            shape = (1,) * (nd - real.ndim) + tuple(real.shape)
            if isinstance(lab, ParamRef):
                params.append((lab, shape))
                continue
            if lab is None:
                lab = self._fresh(real, f"tensor without channel information at `{n.name}`")
            tensors.append((shape, lab.reshape((1,) * (nd - lab.ndim) + lab.shape)))
        if not tensors:
            return None
        labeled = {d for _, lab in tensors for d in varying_dims(lab)}
        part = [lab for shape, lab in tensors if all(shape[d] == out_shape[d] for d in labeled)]
        rest = [lab for shape, lab in tensors if not all(shape[d] == out_shape[d] for d in labeled)]
        if any(varying_dims(lab) for lab in rest) or not part:
            return None
        common = np.broadcast_shapes(*(lab.shape for lab in part))
        first = np.broadcast_to(part[0], common)
        for lab in part[1:]:
            self.slots.unify_arrays(first, lab)
        out = compress(first)
        for ref, shape in params:
            offset = nd - len(ref.shape)
            for d in labeled:
                if d >= offset and shape[d] == out_shape[d] > 1:
                    vector = along(out, d, out_shape[d])
                    if vector is None:
                        return None
                    self._site(ref.name, d - offset, vector, "follower")
        return out

    def _do_reshape(self, n, args, kwargs, lab_args, lab_kwargs, result):
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
        x, lab = args[0], lab_args[0]
        if not isinstance(lab, np.ndarray) or not isinstance(result, torch.Tensor):
            return None
        in_shape, out_shape = tuple(x.shape), tuple(result.shape)
        out = np.broadcast_to(lab, in_shape).reshape(out_shape)
        sizes = _reshape_sizes(n, len(out_shape))
        if not all([self._size_follows(n, size, out, dim) for dim, size in enumerate(sizes)]):
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
                moved = compress_from(np.moveaxis(out, sized, range(len(sized))), len(sized))
                rows = moved.reshape(outer, -1)
                for row in rows[1:]:
                    self.slots.unify_arrays(rows[0], row)
        return compress(out)

    def _size_follows(self, n: fx.Node, size, out: np.ndarray, dim: int) -> bool:
        """Whether output size ``size`` (an int or an fx node) of reshape ``n`` stays right (see above)."""
        if not isinstance(size, fx.Node):
            return True
        others = [(t, d) for t, d in self._shape_reads(size) if t is not n.args[0] and self._carries_channels(t, d)]
        if not others:
            return True
        source = _size_source(size)
        theirs = self.labels.get(source[0]) if source is not None else None
        if others == [source] and isinstance(theirs, np.ndarray):
            theirs = along(theirs, source[1] % theirs.ndim, out.shape[dim])
            mine = along(compress(out), dim, out.shape[dim])
            if mine is not None and theirs is not None:
                if sorted(map(self.slots.find, mine.tolist())) != sorted(map(self.slots.find, theirs.tolist())):
                    self.slots.unify_arrays(mine, theirs)  # not the same channels, maybe reordered: tie them
                return True
        for tensor, _ in others:
            self._block(self.labels.get(tensor), f"its channel count sets a size of `{n.name}`")
        return False

    def _shape_reads(self, node: fx.Node) -> list[tuple[fx.Node, int | None]]:
        """Every tensor size a size expression reads, as ``(tensor, dim)``; dim None: a whole shape, or values."""
        found, stack = [], [node]
        while stack:
            current = stack.pop()
            source = _size_source(current)
            if source is not None:
                found.append(source)
            elif isinstance(self.labels.get(current), np.ndarray):  # a tensor: its values set the size
                found.append((current, None))
            elif (current.op == "call_function" and current.target is getattr) or (
                    current.op == "call_method" and current.target == "size"):
                found.append((current.args[0], None))
            else:
                stack.extend(current.all_input_nodes)
        return found

    def _carries_channels(self, tensor: fx.Node, dim: int | None) -> bool:
        """Whether pruning can change ``tensor``'s size along ``dim`` (None: along any dim)."""
        labels = self.labels.get(tensor)
        if not isinstance(labels, np.ndarray):
            return True
        varying = varying_dims(labels)
        return bool(varying) if dim is None else dim % labels.ndim in varying

    def _do_permute(self, n, args, kwargs, lab_args, lab_kwargs, result):
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

    def _do_pool(self, n, args, kwargs, lab_args, lab_kwargs, result):
        lab = lab_args[0]
        if not isinstance(lab, np.ndarray) or any(d >= 2 for d in varying_dims(lab)):
            return None
        return lab

    def _do_reduce(self, n, args, kwargs, lab_args, lab_kwargs, result):
        lab = lab_args[0]
        dims = _arg(args, kwargs, 1, "dim")
        if not isinstance(lab, np.ndarray) or isinstance(dims, torch.dtype):
            return None
        dims = list(range(lab.ndim)) if dims is None else _dims(dims, lab.ndim)
        if any(d in dims for d in varying_dims(lab)):
            return None
        keepdim = bool(_arg(args, kwargs, 2, "keepdim", False))
        return lab[tuple(slice(0, 1) if d in dims else slice(None) for d in range(lab.ndim))].reshape(
            [1 if d in dims else s for d, s in enumerate(lab.shape) if keepdim or d not in dims]
        )

    def _do_softmax(self, n, args, kwargs, lab_args, lab_kwargs, result):
        lab = lab_args[0]
        dim = self._modules[n.target].dim if n.op == "call_module" else _arg(args, kwargs, 1, "dim")
        if not isinstance(lab, np.ndarray) or dim is None or (dim % lab.ndim) in varying_dims(lab):
            return None
        return lab

    def _do_concat(self, n, args, kwargs, lab_args, lab_kwargs, result):
        tensors, labels = args[0], lab_args[0]
        if not isinstance(labels, (tuple, list)) or not all(isinstance(lab, np.ndarray) for lab in labels):
            return None
        nd = result.ndim
        dim = _arg(args, kwargs, 1, "dim", 0) % nd
        other = {d for lab in labels for d in varying_dims(lab) if d != dim}
        if other:
            if any(dim in varying_dims(lab) for lab in labels):
                return None
            heads = [lab.take([0], axis=dim) for lab in labels]
            for head in heads[1:]:
                self.slots.unify_arrays(heads[0], head)
            return compress(heads[0])
        pieces = []
        for x, lab in zip(tensors, labels):
            shape = [1] * nd
            shape[dim] = x.shape[dim]
            pieces.append(np.broadcast_to(lab, shape))
        return compress(np.concatenate(pieces, axis=dim))

    def _do_split(self, n, args, kwargs, lab_args, lab_kwargs, result):
        x, lab = args[0], lab_args[0]
        if not isinstance(lab, np.ndarray) or not isinstance(result, (tuple, list)):
            return None
        dim = _arg(args, kwargs, 2, "dim", 0) % x.ndim
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
                self.slots.unify_arrays(pieces[0], piece)
        return tuple(compress(p) for p in pieces)

    def _do_getitem(self, n, args, kwargs, lab_args, lab_kwargs, result):
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
        return compress(np.broadcast_to(container, tuple(args[0].shape))[index])

    def _do_layer_norm_function(self, n, args, kwargs, lab_args, lab_kwargs, result):
        weight = _arg(lab_args, lab_kwargs, 2, "weight")
        bias = _arg(lab_args, lab_kwargs, 3, "bias")
        refs = [r.name for r in (weight, bias) if isinstance(r, ParamRef)]
        owner = refs[0].rpartition(".")[0] if refs else None
        return self._layer_norm(args[0], lab_args[0], len(_arg(args, kwargs, 1, "normalized_shape")), refs, owner)

    def _layer_norm(self, x, lab, k: int, names: list[str], owner: str | None):
        """Layer norm over the last ``k`` dims; channels along them are pruned only when k == 1."""
        if not isinstance(lab, np.ndarray):
            return None
        if not set(varying_dims(lab)) & set(range(x.ndim - k, x.ndim)):
            return lab
        vector = along(lab, x.ndim - 1, x.shape[-1])
        if k != 1 or vector is None:
            return None
        for name in names:
            self._site(name, 0, vector, "follower")
        if owner is not None:
            self.renormalizing.add(owner)
            if isinstance(getattr(self._modules.get(owner), "normalized_shape", None), tuple):
                self._site(f"{owner}.normalized_shape", 0, vector, "follower", kind="attribute")
        return lab

    # -- leaf modules --------------------------------------------------------------------
    def _channel_vector(self, lab, dim: int, size: int, fqn: str) -> np.ndarray:
        vector = along(lab, dim, size) if isinstance(lab, np.ndarray) else None
        if vector is None:
            if isinstance(lab, np.ndarray):
                self.slots.block(lab, f"channel layout not understood at the input of `{fqn}`")
            vector = np.full(size, self.slots.new_blocked(f"input of `{fqn}` has no channel information"))
        return vector

    def _do_conv(self, n, args, kwargs, lab_args, lab_kwargs, result):
        m, fqn, x = self._modules[n.target], n.target, args[0]
        cdim = x.ndim - len(m.kernel_size) - 1
        vector = self._channel_vector(lab_args[0], cdim, m.in_channels, fqn)
        if m.groups == 1:
            self._site(f"{fqn}.weight", 1, vector, "input")
            out = self._producer(fqn, m.out_channels)
            self._module_sites(fqn, ("weight", "bias"), out, "filter")
        else:
            in_per, out_per = m.in_channels // m.groups, m.out_channels // m.groups
            if in_per == 1:  # depthwise: each group is one input channel already
                reps = vector
            else:
                reps = np.asarray([self.slots.unify_all(vector[k * in_per:(k + 1) * in_per])
                                   for k in range(m.groups)], dtype=np.int64)
            out = np.repeat(reps, out_per)
            self._module_sites(fqn, ("weight", "bias"), out)
            self.grouped_convs[fqn] = out_per
        return shaped(out, result.ndim, cdim)

    def _do_conv_transpose(self, n, args, kwargs, lab_args, lab_kwargs, result):
        m, fqn, x = self._modules[n.target], n.target, args[0]
        if m.groups != 1:
            return None
        cdim = x.ndim - len(m.kernel_size) - 1
        self._site(f"{fqn}.weight", 0, self._channel_vector(lab_args[0], cdim, m.in_channels, fqn), "input")
        out = self._producer(fqn, m.out_channels)
        self._site(f"{fqn}.weight", 1, out, "filter")
        self._module_sites(fqn, ("bias",), out, "filter")
        return shaped(out, result.ndim, cdim)

    def _do_linear(self, n, args, kwargs, lab_args, lab_kwargs, result):
        m, fqn, x = self._modules[n.target], n.target, args[0]
        self._site(f"{fqn}.weight", 1, self._channel_vector(lab_args[0], x.ndim - 1, m.in_features, fqn), "input")
        if x.ndim <= 2:
            return self._fresh(result, f"`{fqn}` is a fully connected layer (only convolution filters and "
                                       "pointwise linear layers are pruned)")
        out = self._producer(fqn, m.out_features)
        self._module_sites(fqn, ("weight", "bias"), out, "filter")
        return shaped(out, result.ndim, result.ndim - 1)

    def _norm_sites(self, fqn: str, lab, size: int, names: tuple[str, ...], attribute: str):
        """A channel-wise module: its parameters/buffers and its channel count follow the labels."""
        vector = along(lab, 1, size) if isinstance(lab, np.ndarray) else None
        if vector is None:
            return None
        self._module_sites(fqn, names, vector)
        self._site(f"{fqn}.{attribute}", 0, vector, "follower", kind="attribute")
        return lab

    def _do_batchnorm(self, n, args, kwargs, lab_args, lab_kwargs, result):
        m = self._modules[n.target]
        names = ("weight", "bias", "running_mean", "running_var")
        return self._norm_sites(n.target, lab_args[0], m.num_features, names, "num_features")

    def _do_groupnorm(self, n, args, kwargs, lab_args, lab_kwargs, result):
        m, fqn, lab = self._modules[n.target], n.target, lab_args[0]
        out = self._norm_sites(fqn, lab, m.num_channels, ("weight", "bias"), "num_channels")
        if out is not None:
            self._tie_norm_groups(fqn, along(lab, 1, m.num_channels), m.num_groups)
        return out

    def _tie_norm_groups(self, fqn: str, vector: np.ndarray, num_groups: int) -> None:
        """Channels normalised together go together: whole norm groups are removed."""
        per = vector.size // num_groups
        for k in range(num_groups):
            self.slots.unify_all(vector[k * per:(k + 1) * per])
        self.norm_groups[fqn] = per

    # -- functional normalisation with a module's own tensors (timm's BatchNormAct2d, ...) ---
    def _do_channel_norm_function(self, n, args, kwargs, lab_args, lab_kwargs, result):
        """``F.batch_norm`` / ``F.instance_norm``: per channel along dim 1, like the modules."""
        names = ("running_mean", "running_var", "weight", "bias")
        tensors = [_arg(lab_args, lab_kwargs, i, name) for i, name in enumerate(names, start=1)]
        return None if self._functional_norm(args[0], lab_args[0], tensors) is None else lab_args[0]

    def _do_group_norm_function(self, n, args, kwargs, lab_args, lab_kwargs, result):
        """``F.group_norm``: whole groups go, and the owning module's ``num_groups`` follows."""
        tensors = [_arg(lab_args, lab_kwargs, 2, "weight"), _arg(lab_args, lab_kwargs, 3, "bias")]
        owners = self._functional_norm(args[0], lab_args[0], tensors)
        num_groups = _arg(args, kwargs, 1, "num_groups")
        modules = [self._modules[name] for name in owners or ()]
        if not modules or not all(getattr(m, "num_groups", None) == num_groups for m in modules):
            return None  # the group count would not follow the pruning
        vector = along(lab_args[0], 1, args[0].shape[1])
        for name in owners:
            self._tie_norm_groups(name, vector, num_groups)
        return lab_args[0]

    def _functional_norm(self, x, lab, tensors) -> list[str] | None:
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
                self._site(tensor.name, 0, vector, "follower")
                owners.append(tensor.name.rpartition(".")[0])
            elif isinstance(tensor, np.ndarray):
                channels = along(tensor, 0, size) if tensor.ndim == 1 else None
                if channels is None:
                    return None
                self.slots.unify_arrays(vector, channels)
        owners = sorted(set(owners))
        for name in owners:
            module = self._modules.get(name)
            for attribute in ("num_features", "num_channels"):
                if getattr(module, attribute, None) == size:
                    self._site(f"{name}.{attribute}", 0, vector, "follower", kind="attribute")
        return owners

    def _do_layernorm(self, n, args, kwargs, lab_args, lab_kwargs, result):
        m, fqn, x = self._modules[n.target], n.target, args[0]
        names = [f"{fqn}.{p}" for p in ("weight", "bias") if getattr(m, p, None) is not None]
        return self._layer_norm(x, lab_args[0], len(m.normalized_shape), names, fqn)

    def _do_prelu(self, n, args, kwargs, lab_args, lab_kwargs, result):
        m = self._modules[n.target]
        if m.num_parameters == 1:
            return lab_args[0]
        return self._norm_sites(n.target, lab_args[0], m.num_parameters, ("weight",), "num_parameters")

    def _do_channel_shuffle(self, n, args, kwargs, lab_args, lab_kwargs, result):
        """``view(N, g, C // g, ...)``, swap, flatten: each of the g groups must lose the same positions."""
        m, lab = self._modules[n.target], lab_args[0]
        size = args[0].shape[1]
        vector = along(lab, 1, size) if isinstance(lab, np.ndarray) else None
        if vector is None:
            return None
        rows = vector.reshape(m.groups, size // m.groups)
        for row in rows[1:]:
            self.slots.unify_arrays(rows[0], row)
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
                or (base.op == "call_method" and base.target == "size" and len(base.args) == 1)):
            return base.args[0], node.args[1]
    return None
