"""Multiply-accumulates (MACs) of a network on its example input, counted by ``FlopCounterMode``.

``count_macs(model, example)`` is the MACs of one example: PyTorch's FLOP counter
(``torch.utils.flop_counter``) counts the matrix products and convolutions of a forward pass,
and a MAC is two of its FLOPs. ``macs_per_weight(model, example)`` attributes them to
parameters: for every leaf module that holds a ``weight``, the module's MACs divided by the
weight's size. Removing an entry of that weight removes that many MACs (exact for convolutions
and linear layers, whose MACs are the weight's size times the output positions, which filter
pruning never changes), so a ``RemovalTally`` weighted by it counts the MACs a removal saves.
An ``nn.MultiheadAttention``'s MACs (projections and attention products) are spread evenly over
the entries of its ``in_proj_weight`` and ``out_proj.weight``, and a fused-qkv attention's
attention products over its ``qkv.weight`` (a separate-q/k/v one's over ``query.weight``): a head
holds the same share of those weights as of those MACs, so this is exact for heads; for the
embedding width it overcounts by the attention products' share.

Both run the model read-only: eval mode, no gradients, every buffer and mode restored. The
count runs under a pass-through ``TorchFunctionMode``: with one active, torch's fused inference
kernels (``nn.MultiheadAttention``'s and ``nn.TransformerEncoderLayer``'s fast paths), which
the counter cannot see into and counts as nothing, are not taken. CPU attention
(``aten._scaled_dot_product_flash_attention_for_cpu``), which the counter has no formula for,
is counted as the other attention kernels are.

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Conv1d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30, 2))
>>> count_macs(net, torch.zeros(4, 1, 32))      # 8*1*3*30 + 240*2 per example
1200.0
>>> macs_per_weight(net, torch.zeros(4, 1, 32))
{'0.weight': 30.0, '3.weight': 1.0}

``PrunedMacs(model, example)`` is ``count_macs`` for the filter-pruned versions of ``model``, from
one counted pass of it. Where every MAC of ``model`` is in the products of its convolutions and
linear layers with their own weights (plain CNNs and MLPs), a pruned version's MACs are worked
out from its weights' sizes, without running it: the same number ``count_macs`` gives. Otherwise
(attention products, a functional convolution, a parametrised weight) each call counts again.

>>> macs = PrunedMacs(net, torch.zeros(4, 1, 32))
>>> macs.original, macs.worked_out
(1200.0, True)
>>> net[0], net[3] = nn.Conv1d(1, 5, 3), nn.Linear(5 * 30, 2)      # as a surgery leaves it
>>> macs(net), count_macs(net, torch.zeros(4, 1, 32))
(750.0, 750.0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from prune_core.channels.example import ExampleInput
from prune_core.channels.ops import layer_family
from prune_core.channels.preserve import preserved

if TYPE_CHECKING:
    from torch.utils.flop_counter import FlopCounterMode


class _Unfused(TorchFunctionMode):
    """Calls every function as it is; while it is active, torch does not take its fused inference paths."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _counted(model: nn.Module, example) -> tuple[FlopCounterMode, int]:
    # imported here: torch.utils.flop_counter loads triton, about 0.3 s that importing prune_core need not pay
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    example = ExampleInput.of(example)
    counter = FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention_flops}
    )
    with preserved(model), torch.no_grad():
        model.eval()
        with counter, _Unfused():
            example.call(model)
    return counter, example.batch


def count_macs(model: nn.Module, example) -> float:
    """MACs of ``model`` per example of ``example`` (any form of ``ExampleInput``, batch first)."""
    counter, batch = _counted(model, example)
    return counter.get_total_flops() / 2 / batch


def macs_per_weight(model: nn.Module, example) -> dict[str, float]:
    """MACs per entry of every leaf module's ``weight`` (by parameter name), per example; see the module docstring."""
    return _per_weight(model, *_counted(model, example))


class PrunedMacs:
    """``count_macs`` of ``model`` and of its filter-pruned versions (see the module docstring).

    ``original`` is ``model``'s MACs, ``worked_out`` whether calls work the count out from the weights'
    sizes (True) or count again (False).
    """

    def __init__(self, model: nn.Module, example) -> None:
        self.example = example
        counter, self._batch = _counted(model, example)
        self.original = counter.get_total_flops() / 2 / self._batch
        self._flops_per_entry = _weight_products(model, counter)

    @property
    def worked_out(self) -> bool:
        return self._flops_per_entry is not None

    def __call__(self, pruned: nn.Module) -> float:
        """MACs per example of ``pruned``, ``model`` after filter pruning (or ``model`` itself)."""
        weights = dict(pruned.named_parameters())
        if self._flops_per_entry is None or not self._flops_per_entry.keys() <= weights.keys():
            return count_macs(pruned, self.example)
        flops = sum(per_entry * weights[name].numel() for name, per_entry in self._flops_per_entry.items())
        return flops / 2 / self._batch


# The products a convolution or linear layer computes with its own weight: FLOPs = weight entries x a
# constant (2 x the output positions of the batch), which filter pruning never changes.
_WEIGHT_PRODUCTS = {"aten::convolution", "aten::_convolution", "aten::mm", "aten::addmm"}
_WEIGHTED_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


def _weight_products(model: nn.Module, counter: FlopCounterMode) -> dict[str, int] | None:
    """FLOPs per entry of each convolution's and linear layer's weight (by parameter name), where
    those layers' products with their weights are all the FLOPs counted; otherwise None."""
    root, counts = type(model).__name__, counter.get_flop_counts()
    per_entry, covered = {}, 0
    for name, module in model.named_modules():
        ops = counts.get(f"{root}.{name}" if name else root, {})
        if not ops or next(module.children(), None) is not None:
            continue
        weight, flops = module._parameters.get("weight"), sum(ops.values())
        if (
            not isinstance(module, _WEIGHTED_LAYERS)
            or weight is None
            or any(op._qualified_op_name not in _WEIGHT_PRODUCTS for op in ops)
            or flops % weight.numel()
        ):
            return None
        per_entry[f"{name}.weight" if name else "weight"] = flops // weight.numel()
        covered += flops
    return per_entry if covered == counter.get_total_flops() else None


def _per_weight(model: nn.Module, counter: FlopCounterMode, batch: int) -> dict[str, float]:
    root = type(model).__name__
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    result = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not name or next(module.children(), None) is not None or not isinstance(weight, nn.Parameter):
            continue
        flops = per_module.get(f"{root}.{name}", 0)
        if flops:
            result[f"{name}.weight"] = flops / 2 / batch / weight.numel()
    for name, module in model.named_modules():
        prefix, flops = f"{name}." if name else "", per_module.get(f"{root}.{name}" if name else root, 0)
        family = layer_family(module)
        own = dict(module.named_parameters())
        spread = [own.get(weight) for weight in getattr(family, "macs_over", ())]
        if spread and all(weight is not None for weight in spread):  # its MACs, over these weights' entries
            entries = sum(weight.numel() for weight in spread)
            for weight in family.macs_over:  # type: ignore[union-attr]  # spread is empty without a family
                result[prefix + weight] = flops / 2 / batch / entries
        elif (heads := getattr(family, "attention_products", None)) is not None:
            own = flops - sum(per_module.get(f"{root}.{prefix}{child}", 0) for child, _ in module.named_children())
            weight = f"{prefix}{heads}.weight"
            result[weight] = result.get(weight, 0.0) + own / 2 / batch / module.get_submodule(heads).weight.numel()
    return result
