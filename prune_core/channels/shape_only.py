"""Skip the arithmetic of the analysis' convolutions, linear layers, BatchNorms and adaptive average pools: zeros of
their output's shape.

Label propagation needs the shape, dtype and structure of each value, never its numbers. The
convolutions and linear layers of a 224x224 forward are most of a CPU analysis' time (half of
a ResNet-50's, nine tenths of a VGG-16's, most of a MobileNet's depthwise ones), so
``shape_only_output`` stands in for them: it works out the output's shape from the layer's
hyperparameters and returns zeros of that shape, dtype and device (a BatchNorm in eval mode gives
zeros shaped like its input, an adaptive average pool zeros of its output size). The zeros are one
element expanded to the shape (``zeros_of``): nothing is allocated or written, which was a fifth of
a MobileNet's analysis. Only plain
``nn.Conv1d/2d/3d`` (zero padding), ``nn.Linear``, ``nn.BatchNorm1d/2d/3d`` and
``nn.AdaptiveAvgPool1d/2d/3d`` qualify (no
subclass, parametrisation or hook that could read or change values), on one tensor whose device
and dtype match the layer's, outside autocast, and with as many channels or features as the layer
takes: an input the layer would refuse runs the real layer, so that its own error is the one
raised. Later operations run for real on those zeros; their shapes are the real ones wherever
a shape does not depend on values (a symbolically traced graph of a classifier), and
``propagate`` runs the pass again for real if one does and something fails (a detector's
recorded post-processing).

Why not the meta device: PyTorch's meta kernels are Python reference code, slower than the
arithmetic they skip on small tensors (a MobileNetV2 analysis took 88 ms with every operation on
meta against 26 ms for real).

>>> import torch, torch.nn as nn
>>> conv, x = nn.Conv2d(3, 64, 3, stride=2, padding=1), torch.ones(1, 3, 224, 224)
>>> out = shape_only_output(conv, (x,), {})
>>> tuple(out.shape) == tuple(conv(x).shape) == (1, 64, 112, 112), float(out.abs().sum())
(True, 0.0)
>>> shape_only_output(conv, (torch.ones(1, 4, 224, 224),), {}) is None   # the real layer says what is wrong
True
>>> layers = [nn.Conv2d(3, 6, 3, padding="same", dilation=2), nn.Conv2d(3, 6, (3, 5), stride=(2, 3), padding=(1, 2)),
...           nn.Conv2d(3, 6, 3, padding="valid", groups=3), nn.Conv1d(3, 6, 4, stride=3), nn.Conv3d(3, 6, 2),
...           nn.Linear(17, 5), nn.BatchNorm1d(4).eval(), nn.AdaptiveAvgPool2d((None, 2)), nn.AdaptiveAvgPool1d(3)]
>>> inputs = [torch.ones(2, 3, 17, 17)] * 3 + [torch.ones(3, 17), torch.ones(1, 3, 5, 6, 7), torch.ones(2, 4, 17)]
>>> inputs += [torch.ones(2, 4, 17), torch.ones(2, 3, 7, 9), torch.ones(4, 10)]
>>> [tuple(shape_only_output(m, (x,), {}).shape) == tuple(m(x).shape) for m, x in zip(layers, inputs)]
[True, True, True, True, True, True, True, True, True]
>>> shape_only_output(nn.BatchNorm1d(4), (torch.ones(2, 4),), {}) is None   # training: its statistics move
True

Where the input is itself such zeros and nothing else reads it (``own_input``), a BatchNorm, an
activation that maps zero to zero (ReLU, ReLU6, SiLU, GELU, Hardswish, ...), an ``Identity`` or a
``Dropout`` returns that input as its output: a conv-norm-activation block then costs one tensor of
zeros, not three.

>>> zeros = torch.zeros(2, 4, 8)
>>> shape_only_output(nn.BatchNorm1d(4).eval(), (zeros,), {}, own_input=True) is zeros
True
>>> shape_only_output(nn.ReLU6(), (zeros,), {}, own_input=True) is zeros, shape_only_output(nn.ReLU6(), (zeros,), {})
(True, None)
>>> shape_only_output(nn.Sigmoid(), (zeros,), {}, own_input=True) is None   # 0.5, not zero: runs for real
True
"""

from __future__ import annotations

import torch
from torch import nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCH_NORM_DIMS = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,)}
_ADAPTIVE_POOLS = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}  # by pooled dims
_SHAPE_ONLY = {*_CONVS, nn.Linear, *_BATCH_NORM_DIMS, *_ADAPTIVE_POOLS}
# modules that keep their input's shape and dtype and map zeros to zeros
_ZERO_KEEPING = {
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Mish,
    nn.ELU,
    nn.Tanh,
    nn.Identity,
    nn.Dropout,
}


def shape_only_output(module: nn.Module, args: tuple, kwargs: dict, own_input: bool = False) -> torch.Tensor | None:
    """Zeros shaped like ``module(*args, **kwargs)``'s output where that can be told without running it, else None.
    ``own_input``: the one argument is such zeros, read by nothing else (see the module docstring)."""
    kind = type(module)
    keeps_zeros = own_input and kind in _ZERO_KEEPING
    if kwargs or len(args) != 1:
        return None
    if not keeps_zeros and kind not in _SHAPE_ONLY:
        return None
    x, tensors = args[0], [t for t in (*module._parameters.values(), *module._buffers.values()) if t is not None]
    if not isinstance(x, torch.Tensor) or any(t.device != x.device for t in tensors):
        return None
    if module._forward_hooks or module._forward_pre_hooks or torch.is_autocast_enabled(x.device.type):
        return None
    if keeps_zeros:
        return x
    if kind in _ADAPTIVE_POOLS:
        return _adaptive_pool_output(module, x)  # type: ignore[arg-type]
    if kind in _BATCH_NORM_DIMS:
        if not _batch_norm_keeps_shape(module, x):
            return None
        return x if own_input else zeros_of(x.shape, x)
    if module._parameters.get("weight") is None or any(t.dtype != x.dtype for t in tensors):
        return None
    shape = _linear_shape(module, x) if kind is nn.Linear else _conv_shape(module, x)  # type: ignore[arg-type]
    return None if shape is None else zeros_of(shape, x)


def zeros_of(shape: tuple[int, ...] | torch.Size, like: torch.Tensor) -> torch.Tensor:
    """Zeros of ``shape`` with ``like``'s dtype and device, one element expanded (nothing allocated or written:
    an operation writing into them in place raises, and ``propagate`` runs it again on ``materialized`` arguments).

    >>> z = zeros_of((2, 3), torch.ones(1))
    >>> z.tolist(), z.stride(), is_expanded(z), materialized((z,))[0].stride()
    ([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], (0, 0), True, (3, 1))
    """
    return like.new_zeros(()).expand(shape)


def is_expanded(value: object) -> bool:
    """Whether ``value`` is a tensor whose entries share memory (``zeros_of``'s, or a view of them)."""
    return isinstance(value, torch.Tensor) and value.numel() > 1 and 0 in value.stride()


def materialized(args: tuple) -> tuple:
    """``args`` with each expanded tensor (``is_expanded``) replaced by a copy of its own."""
    return tuple(a.contiguous() if is_expanded(a) else a for a in args)


def _adaptive_pool_output(module: nn.AdaptiveAvgPool1d | nn.AdaptiveAvgPool2d | nn.AdaptiveAvgPool3d, x: torch.Tensor):
    """Zeros shaped like an adaptive average pool's output (``None`` in ``output_size`` keeps that size), or None
    for an input it would refuse."""
    d = _ADAPTIVE_POOLS[type(module)]
    if x.ndim not in (d + 1, d + 2) or 0 in x.shape or not (x.is_floating_point() or x.is_complex()):
        return None
    sizes = (module.output_size,) * d if isinstance(module.output_size, int) else tuple(module.output_size)
    kept = tuple(x.shape[-d + i] if size is None else size for i, size in enumerate(sizes))
    return zeros_of((*x.shape[:-d], *kept), x)


def _batch_norm_keeps_shape(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether an evaluating BatchNorm's output is shaped like ``x`` without running it (one in training, or
    without running statistics, normalises by the batch's: run it)."""
    if module.training or module._buffers.get("running_mean") is None:
        return False
    if x.ndim not in _BATCH_NORM_DIMS[type(module)] or x.shape[1] != module.num_features:
        return False
    return x.is_floating_point() and all(
        t is None or not t.is_floating_point() or t.dtype == x.dtype for t in module._parameters.values()
    )


def _linear_shape(module: nn.Linear, x: torch.Tensor) -> tuple[int, ...] | None:
    if x.ndim < 1 or x.shape[-1] != module.in_features:
        return None
    return (*x.shape[:-1], module.out_features)


def _conv_shape(module: nn.Conv1d | nn.Conv2d | nn.Conv3d, x: torch.Tensor) -> tuple[int, ...] | None:
    """The output shape of a zero-padded convolution (batched or not), None for anything else."""
    d = len(module.kernel_size)
    if module.padding_mode != "zeros" or x.ndim not in (d + 1, d + 2) or x.shape[-d - 1] != module.in_channels:
        return None
    sizes = list(x.shape[-d:])
    if module.padding != "same":
        padding = (0,) * d if module.padding == "valid" else module.padding
        for i in range(d):
            span = module.dilation[i] * (module.kernel_size[i] - 1) + 1
            sizes[i] = (sizes[i] + 2 * padding[i] - span) // module.stride[i] + 1  # type: ignore[index]
    if min(sizes, default=1) < 1:
        return None
    return (*x.shape[: -d - 1], module.out_channels, *sizes)
