"""Skip the arithmetic of the analysis' costly layers: their output's shape, computed on the meta device.

Label propagation needs the shape, dtype and structure of each value, never its numbers. The
convolutions and linear layers of a 224x224 forward are most of a CPU analysis' time (half of
a ResNet-50's, nine tenths of a VGG-16's), so ``shape_only_output`` stands in for the ones
that cost more than ``COSTLY_MACS`` multiply-accumulates: it runs the layer on the meta device
(a shallow copy whose parameters are meta tensors, so the caller's layer is untouched) and
returns zeros of the output's shape, dtype and device. Only plain ``nn.Conv1d/2d/3d`` and
``nn.Linear`` qualify (no subclass, parametrisation or hook that could read values), on one
tensor whose device and dtype match the weight's, outside autocast; a shape the meta device
refuses runs the real layer, so that its own error is the one raised. Later operations run for
real on those zeros: their outputs' shapes are exact, and a symbolically traced or recorded
graph has no branch that could read their values.

Why not the whole forward on the meta device: PyTorch's meta kernels for elementwise
operations and norms are Python reference code, slower than the arithmetic they skip on small
tensors (a MobileNetV2 analysis took 88 ms on meta against 26 ms for real).

>>> import torch, torch.nn as nn
>>> conv, x = nn.Conv2d(3, 64, 3), torch.ones(1, 3, 224, 224)
>>> out = shape_only_output(conv, (x,), {})
>>> tuple(out.shape), out.device.type, conv.weight.device.type
((1, 64, 222, 222), 'cpu', 'cpu')
>>> shape_only_output(nn.Conv2d(3, 4, 1), (torch.ones(1, 3, 8, 8),), {}) is None   # cheap: run for real
True
"""

from __future__ import annotations

import copy

import torch
from torch import nn

COSTLY_MACS = 2_000_000  # about a tenth of a millisecond of arithmetic on one CPU core
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def shape_only_output(module: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """Zeros shaped like ``module(*args, **kwargs)``'s output where the layer is costly, else None (run it)."""
    if type(module) not in _LAYERS or kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor):
        return None
    if module._forward_hooks or module._forward_pre_hooks or torch.nn.modules.module._has_any_global_hook():
        return None
    x, weight = args[0], module._parameters.get("weight")
    if weight is None or x.ndim < 2 or x.device != weight.device or x.dtype != weight.dtype:
        return None
    if torch.is_autocast_enabled(x.device.type):  # the real layer's output dtype is autocast's
        return None
    inputs = x.shape[-1] if isinstance(module, nn.Linear) else x.shape[1]
    if inputs == 0 or x.numel() // inputs * weight.numel() <= COSTLY_MACS:
        return None
    shadow = copy.copy(module)
    shadow._parameters = {name: None if p is None else p.detach().to("meta") for name, p in module._parameters.items()}
    try:
        shape = shadow(x.detach().to("meta")).shape
    except Exception:  # the real layer raises it again, with its own clearer message
        return None
    return torch.zeros(shape, dtype=x.dtype, device=x.device)
