"""Named loss functions for fine-tuning, as in the reference (``lossFcn``).

``resolve_loss(name_or_callable)`` returns ``loss(outputs, targets) -> scalar tensor`` where
``outputs`` and ``targets`` are tuples (several network outputs and several targets are
allowed; the named losses use the first of each). Network outputs are **logits** for the
classification losses (the softmax/sigmoid is part of the loss, as is usual in PyTorch):

- ``crossentropy``: targets are class indices or class probabilities (one-hot) along dim 1; an
  index that is not a class of the output (``7`` for 5 outputs) raises ValueError naming it
  where PyTorch reports it (on the CPU; a GPU kernel asserts instead);
- ``index-crossentropy``: targets are class indices (integers);
- ``binary-crossentropy``: targets are 0/1 (or probabilities) of the output's shape;
- ``mae`` / ``mean-absolute-error`` / ``l1loss``, ``mse`` / ``mean-squared-error`` /
  ``l2loss``, ``huber``: regression, averaged over every element.

A callable is called as ``loss(*outputs, *targets)``.

>>> import torch
>>> loss = resolve_loss("index-crossentropy")
>>> round(float(loss((torch.zeros(4, 2),), (torch.tensor([0, 1, 0, 1]),))), 4)
0.6931
>>> resolve_loss("hinge")
Traceback (most recent call last):
...
ValueError: loss 'hinge' is not a known loss name; use one of ['binary-crossentropy', 'crossentropy', \
'huber', 'index-crossentropy', 'l1loss', 'l2loss', 'mae', 'mean-absolute-error', 'mean-squared-error', 'mse'] \
or a callable loss(*outputs, *targets)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensors = tuple[torch.Tensor, ...]
LossFn = Callable[[Tensors, Tensors], torch.Tensor]
TensorLoss = Callable[..., torch.Tensor]


def _indexed_crossentropy(y: torch.Tensor, t: torch.Tensor, name: str) -> torch.Tensor:
    """Cross-entropy of ``y`` against class indices ``t``; a label that is not a class of ``y``'s
    dimension 1 raises ValueError naming it.

    The labels are looked at only when PyTorch refuses them, so a good batch costs no host sync.
    """
    t = t.long()
    try:
        return F.cross_entropy(y, t)
    except IndexError:
        classes = y.shape[1] if y.ndim > 1 else 0
        low, high = (int(v) for v in torch.aminmax(t))
        bad = low if low < 0 else high
        raise ValueError(
            f"loss {name!r}: label {bad} is not a class of the network, which has {classes} outputs "
            f"(classes 0 to {classes - 1}); give the network {max(high + 1, classes)} outputs "
            f"(num_classes), or relabel the data to 0..{classes - 1}"
        ) from None


def _crossentropy(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point() and t.shape == y.shape:
        return F.cross_entropy(y, t)
    return _indexed_crossentropy(y, t, "crossentropy")


def _index_crossentropy(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise ValueError(
            "loss 'index-crossentropy' needs integer class indices as targets; "
            "use 'crossentropy' for class probabilities"
        )
    return _indexed_crossentropy(y, t, "index-crossentropy")


def _binary_crossentropy(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(y, t.to(y.dtype).reshape(y.shape))


def _regression(fn: TensorLoss) -> TensorLoss:
    return lambda y, t: fn(y, t.to(y.dtype).reshape(y.shape))


NAMED_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "crossentropy": _crossentropy,
    "index-crossentropy": _index_crossentropy,
    "binary-crossentropy": _binary_crossentropy,
    "mae": _regression(F.l1_loss),
    "mean-absolute-error": _regression(F.l1_loss),
    "l1loss": _regression(F.l1_loss),
    "mse": _regression(F.mse_loss),
    "mean-squared-error": _regression(F.mse_loss),
    "l2loss": _regression(F.mse_loss),
    "huber": _regression(F.huber_loss),
}


class _Resolved:
    """A loss on tuples of outputs and targets, as ``resolve_loss`` returns it (resolving it again is a no-op)."""

    def __init__(self, fn: TensorLoss, spread: bool) -> None:
        self.fn, self.spread = fn, spread

    def __call__(self, outputs: Tensors, targets: Tensors) -> torch.Tensor:
        value: torch.Tensor = self.fn(*outputs, *targets) if self.spread else self.fn(outputs[0], targets[0])
        return value


def resolve_loss(loss: str | TensorLoss) -> LossFn:
    """``loss(outputs, targets)`` for a loss name (see the module docstring) or a callable; a loss it already
    resolved comes back as it is (wrapping it again would hand it single tensors instead of tuples)."""
    if isinstance(loss, _Resolved):
        return loss
    if isinstance(loss, str):
        fn = NAMED_LOSSES.get(loss.lower())
        if fn is None:
            raise ValueError(
                f"loss {loss!r} is not a known loss name; use one of {sorted(NAMED_LOSSES)} "
                "or a callable loss(*outputs, *targets)"
            )
        return _Resolved(fn, spread=False)
    if callable(loss):
        return _Resolved(loss, spread=True)
    raise TypeError(f"loss must be a loss name or a callable, got {type(loss).__name__} {loss!r}")
