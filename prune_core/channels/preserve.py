"""Leave a model exactly as it was: buffers, ``requires_grad`` flags and train/eval modes.

Analysis runs the caller's model (tracing, label propagation, the surgery check). A module
that is traced through rather than kept as a leaf can update state as it runs: timm's
``BatchNormAct2d`` calls ``F.batch_norm(..., training=True)`` and ``num_batches_tracked.add_(1)``
when traced in training mode. ``preserved(model)`` snapshots every buffer, flag and mode on
entry and puts them back bit for bit on exit, whatever happened inside (an exception included).
Parameters are not copied (a forward pass does not write them; the no-mutation tests check it).

>>> import torch, torch.nn as nn
>>> bn = nn.BatchNorm1d(2).eval()
>>> with preserved(bn):
...     _ = bn.train()(torch.randn(4, 2))       # updates the running statistics inside...
>>> bn.training, bn.running_mean.tolist(), int(bn.num_batches_tracked)   # ...not after
(False, [0.0, 0.0], 0)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def set_training(model: nn.Module, mode: bool) -> None:
    """``model.train(mode)``; where no module overrides ``train`` or ``__setattr__`` or makes ``training`` a class
    attribute (a property), each flag is set directly (``nn.Module.__setattr__`` is most of the time ``train``
    takes on a network of hundreds of modules).

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    >>> set_training(net, False)
    >>> [m.training for m in net.modules()]
    [False, False, False]
    >>> class Flagged(nn.Module):   # its mode kept under another name, by a property: set through train()
    ...     training = property(lambda m: m.__dict__.get("mode", True), lambda m, on: m.__dict__.update(mode=on))
    >>> flagged = Flagged()
    >>> set_training(flagged, False)
    >>> flagged.training, flagged.__dict__["mode"]
    (False, False)
    """
    modules = list(model.modules())
    plain = (nn.Module.train, nn.Module.__setattr__)
    if all((type(m).train, type(m).__setattr__) == plain and not hasattr(type(m), "training") for m in modules):
        for module in modules:
            module.__dict__["training"] = mode
    else:
        model.train(mode)


@contextmanager
def preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Restore ``model``'s buffers, ``requires_grad`` flags and modes on exit (see the module docstring)."""
    modules = list(model.modules())
    modes = [m.training for m in modules]
    buffers = [(m, name, b, b.detach().clone()) for m in modules for name, b in m._buffers.items() if b is not None]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield model
    finally:
        with torch.no_grad():
            for module, name, buffer, saved in buffers:
                module._buffers[name] = buffer
                buffer.copy_(saved)
        for p, flag in flags:
            p.requires_grad_(flag)
        for module, mode in zip(modules, modes):
            if module.training != mode:  # nn.Module's own __setattr__ is slow: set only what changed
                module.training = mode
