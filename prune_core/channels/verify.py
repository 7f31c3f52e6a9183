"""The surgery check: a pruned network must equal the original with the removed channels zeroed.

Removing a unit is exactly zeroing its channels where they enter the layers that consume them
(the input weights of the consuming convs and linears; where channels enter a product of two
activations instead, an attention's query and key dims, the filters that make them:
``graph.products``). ``reference_outputs`` runs the model *before* the surgery with those
weights zeroed (in place for that pass, then put back bit for bit: copying every weight a
surgery touches cost more than the pass), and ``check_equivalent`` compares the pruned model's
outputs with it on the graph's example input, in eval mode. ``remove_units`` runs both around
every surgery and puts the model back as it was when they differ.

A layer norm over channels renormalises over the channels that remain, so there pruning is not
zeroing: in the reference run, such a norm (``F.layer_norm`` called inside a module that
``graph.renormalizing`` names) normalises over its kept channels only, and its removed
channels read zero. Every surgery is then checked exactly, layer norms included.

What is compared: every tensor of the network's outputs (tuples, lists, dicts, dataclasses), or,
where the graph was built with ``compare_at`` (module names), every tensor those modules return
instead. A detector's outputs come after post-processing (a score threshold, top-k, NMS), where
the last-bit differences between zeroed and removed channels can pick other boxes: the check
would refuse a right surgery there. ``compare_at=["head"]`` compares the head's raw predictions,
before post-processing, at the same tolerance. Name modules whose outputs keep every channel (a
head's predictions, not the features it reads, which pruning narrows): every pruned layer upstream
of them is checked through them.

>>> import torch, torch.nn as nn
>>> from prune_core.channels.graph import ChannelGraph
>>> net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Conv1d(4, 2, 3)).eval()
>>> graph = ChannelGraph.build(net, torch.randn(2, 1, 16))
>>> reference = reference_outputs(net, graph, [1, 2])
>>> with torch.no_grad():   # a correct surgery, by hand: filters 1 and 2 and their input channels
...     net[0].weight, net[0].bias = nn.Parameter(net[0].weight[[0, 3]]), nn.Parameter(net[0].bias[[0, 3]])
...     net[2].weight = nn.Parameter(net[2].weight[:, [0, 3]])
>>> check_equivalent(net, graph, [1, 2], reference)    # silent when equal
>>> with torch.no_grad():   # a wrong one: a bias always shows (a weight after a ReLU that zeroed its channel may not)
...     net[2].bias[0] += 1.0
>>> check_equivalent(net, graph, [1, 2], reference)   # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
SurgeryMismatch: the pruned network differs from the original with the removed channels zeroed
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from prune_core.channels.graph import ChannelGraph
from prune_core.channels.preserve import preserved, set_training
from prune_core.channels.recorder import tensors_in
from prune_core.channels.sites import owner

# Allowed difference, relative to the largest reference output (at least 1), per dtype.
_RELATIVE_TOLERANCE = {torch.float64: 1e-8, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


class SurgeryMismatch(RuntimeError):
    """A surgery gave a network that is not the original with the removed channels zeroed."""


class _KeptChannelsLayerNorm(TorchFunctionMode):
    """``F.layer_norm`` over the kept channels only, inside the modules named in ``kept``."""

    def __init__(self, model: nn.Module, kept: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.kept, self.inside = kept, []
        self.hooks = ExitStack()
        modules = dict(model.named_modules())
        for name in kept:
            self.hooks.enter_context(modules[name].register_forward_pre_hook(self._enter(name)))
            self.hooks.enter_context(modules[name].register_forward_hook(self._leave))

    def _enter(self, name: str):
        def hook(module, args) -> None:
            self.inside.append(name)

        return hook

    def _leave(self, module, args, output) -> None:
        self.inside.pop()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.layer_norm or not self.inside:
            return func(*args, **kwargs)
        keep = self.kept[self.inside[-1]].to(args[0].device)
        x, rest = args[0], dict(zip(("normalized_shape", "weight", "bias", "eps"), args[1:])) | kwargs
        weight, bias = rest.get("weight"), rest.get("bias")
        out = torch.zeros_like(x)
        out[..., keep] = F.layer_norm(
            x[..., keep],
            (keep.numel(),),
            None if weight is None else weight[keep],
            None if bias is None else bias[keep],
            rest.get("eps", 1e-5),
        )
        return out


def _kept_norm_channels(graph: ChannelGraph, plan: dict) -> dict[str, torch.Tensor]:
    """For each renormalising norm that loses channels: the channel positions it keeps."""
    kept = {}
    for (name, dim), idx in plan.items():
        module = owner(name)
        if module in graph.renormalizing and module not in kept:
            keep = torch.ones(graph.size((name, dim)), dtype=torch.bool)
            keep[torch.as_tensor(idx)] = False
            kept[module] = keep.nonzero().flatten()
    return kept


@contextmanager
def _exact_float32() -> Iterator[None]:
    """TF32 off for CUDA convolutions and matrix products inside (restored after): on Ampere and later
    they default to TF32, whose rounding alone exceeds the check's tolerance."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _run(model: nn.Module, graph: ChannelGraph, kept: dict[str, torch.Tensor] | None = None) -> list[torch.Tensor]:
    example = graph.example_input
    device = example.tensors[0].device.type
    compared: list[torch.Tensor] = []
    with preserved(model), torch.no_grad(), ExitStack() as stack:
        set_training(model, False)
        for name in graph.compare_at:
            module = model.get_submodule(name)
            hook = module.register_forward_hook(lambda module, args, out: compared.extend(tensors_in(out)))
            stack.callback(hook.remove)
        stack.enter_context(torch.autocast(device, enabled=False))  # full precision under a caller's autocast
        stack.enter_context(_exact_float32())
        if kept:
            mode = stack.enter_context(_KeptChannelsLayerNorm(model, kept))
            stack.enter_context(mode.hooks)
        outputs = example.call(model)
    return compared if graph.compare_at else tensors_in(outputs)  # every tensor, dataclasses included


def _memory(tensor: torch.Tensor) -> int | None:
    """Where ``tensor``'s storage starts (None for a tensor without one: sparse, nested)."""
    return tensor.untyped_storage().data_ptr() if tensor.layout == torch.strided else None


def reference_outputs(model: nn.Module, graph: ChannelGraph, unit_ids: Sequence[int]) -> list[torch.Tensor]:
    """``model``'s outputs on the example input with the units' channels zeroed at their consumers.

    The entries are zeroed in place for this one pass (they are the ones the surgery removes: no copy of
    the weights) and put back bit for bit after it, whatever happens; an output that shares a zeroed
    tensor's memory is copied first.

    >>> import torch.nn as nn
    >>> from prune_core.channels.graph import ChannelGraph
    >>> net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Conv1d(4, 2, 3))
    >>> before = net[2].weight.detach().clone()
    >>> graph = ChannelGraph.build(net, torch.randn(2, 1, 16))
    >>> _ = reference_outputs(net, graph, [0, 3])
    >>> torch.equal(net[2].weight, before)
    True
    """
    params = dict(model.named_parameters(remove_duplicate=False))
    first = {id(p): name for name, p in reversed(params.items())}  # a tied tensor's first name: one value for all
    plan = graph.removal_plan(unit_ids)
    zeroed: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]] = []  # tensor, dim, index, saved entries
    try:
        with torch.no_grad():
            for (name, dim), idx in plan.items():
                role = graph.sites[(name, dim)].role
                if (role == "input" or (role == "filter" and owner(name) in graph.products)) and name in params:
                    tensor = params[first[id(params[name])]]
                    index = torch.as_tensor(idx, device=tensor.device)
                    zeroed.append((tensor, dim, index, tensor.index_select(dim, index)))
                    tensor.index_fill_(dim, index, 0.0)
        outputs = _run(model, graph, _kept_norm_channels(graph, plan))
        memory = {_memory(tensor) for tensor, *_ in zeroed}
        return [out.clone() if _memory(out) in memory else out for out in outputs]
    finally:
        with torch.no_grad():
            for tensor, dim, index, saved in reversed(zeroed):  # last zeroed first: a tensor zeroed along two dims
                tensor.index_copy_(dim, index, saved)


def _involved(graph: ChannelGraph, unit_ids: Sequence[int]) -> str:
    units = sorted(unit_ids)
    producers = sorted({p for uid in units for p in graph.units[uid].producers})
    members = sorted({m for uid in units for m in graph.units[uid].members} - set(producers))
    shown = ", ".join(map(str, units[:12])) + (f", ... ({len(units)} in all)" if len(units) > 12 else "")
    return (
        f"units [{shown}] (filters of {', '.join(f'`{p}`' for p in producers[:10]) or 'no layer'}; "
        f"also shrinking {', '.join(f'`{m}`' for m in members[:10]) or 'nothing else'})"
    )


def check_equivalent(
    model: nn.Module, graph: ChannelGraph, unit_ids: Sequence[int], reference: list[torch.Tensor]
) -> None:
    """Raise ``SurgeryMismatch`` unless the pruned ``model`` reproduces ``reference`` (see the module docstring)."""
    advice = (
        "This is a fault of the channel analysis, not of your model: please report it. To go on, keep "
        "the layers involved out of pruning (leaf_modules=[...] or layer_names=[...])."
    )
    try:
        pruned = _run(model, graph)
    except Exception as exc:
        raise SurgeryMismatch(
            f"the pruned network no longer runs on the example input after removing "
            f"{_involved(graph, unit_ids)}: {type(exc).__name__}: {exc}. {advice}"
        ) from exc
    where = (
        f"the outputs of {', '.join(f'`{name}`' for name in graph.compare_at)} (compare_at)"
        if graph.compare_at
        else "the output"
    )
    shapes = [tuple(t.shape) for t in reference], [tuple(t.shape) for t in pruned]
    if shapes[0] != shapes[1]:
        raise SurgeryMismatch(
            f"removing {_involved(graph, unit_ids)} changed the shapes of {where} from {shapes[0]} to {shapes[1]}. "
            "Where the forward branches on sizes or values, the analysis followed the example input's path and "
            "the pruned network may take another; where the outputs are post-processed (top-k, thresholds, NMS "
            "in a detector), compare the tensors before it with compare_at=[...], naming modules whose outputs "
            "keep every channel (a head's predictions, not the features pruning narrows). "
            f"{advice}"
        )
    for i, (ref, out) in enumerate(zip(reference, pruned)):
        if not ref.is_floating_point():
            continue
        scale = max(1.0, float(ref.abs().max())) if ref.numel() else 1.0
        tolerance = _RELATIVE_TOLERANCE.get(ref.dtype, 1e-4) * scale
        error = float((out - ref).abs().max()) if ref.numel() else 0.0
        if not error <= tolerance:
            raise SurgeryMismatch(
                f"the pruned network differs from the original with the removed channels zeroed by {error:.3g} "
                f"(tolerance {tolerance:.3g}) at tensor {i} of {where}, after removing {_involved(graph, unit_ids)}. "
                f"{advice}"
            )
