"""``Family``: everything the engine knows about one family of operations, in one object.

The analysis, the surgery, the criteria, the MAC count and the checkpoints each ask a network's
operations something; a family answers all of it:

- ``rule(prop, call)``: how channel labels go from the operation's inputs to its output, and which
  parameters, buffers and attributes follow them (``rule_call``; None: not understood here, and every
  channel reaching it is kept);
- ``attributes``: the module's channel counts (``in_channels``, ``num_heads``, ...). The surgery keeps them in
  step, and checkpoints record them (``serialize``), so that ``load_pruned`` rebuilds the pruned sizes;
- ``after_surgery(name, module, graph)``: what the surgery derives from the module's new weight shapes
  (a convolution's ``groups``; a pruned ``nn.MultiheadAttention`` taking its pruned form);
- ``filters``: where a producer layer of the family holds its output channels, as (weight name, dim),
  for the weight-based criteria;
- ``input_dim(module, ndim)``: the channel dim of the module's input (of ``ndim`` dims), for the Taylor
  criterion's per-input scores;
- ``attention_products``: the child linear whose rows carry the module's attention products' MACs;
- ``macs_over``: the weights over whose entries an opaque module's own MACs are spread
  (``nn.MultiheadAttention``: its input and output projections);
- ``filter_count``: the attribute that counts a layer's output channels (``out_channels``), which the
  analysis report shows for a layer that is not a producer of units.

``ops`` says which modules, functions and methods belong to which family; ``register_module_rule``
adds a module of one's own with its family (or a bare rule, which is a family with only a rule).

>>> import torch.nn as nn
>>> from prune_core.channels.rules_elementwise import elementwise
>>> Family("scaled", elementwise, attributes=("channels",)).filters
('weight', 0)
>>> Family("bad", elementwise, filters=("weight", -1))
Traceback (most recent call last):
ValueError: Family 'bad': filters must be (weight name, dim >= 0), got ('weight', -1)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class Family:
    """One family of operations (see the module docstring)."""

    name: str
    rule: Callable[..., Any]
    attributes: tuple[str, ...] = ()
    after_surgery: Callable[[str, nn.Module, Any], None] | None = None
    filters: tuple[str, int] = ("weight", 0)
    input_dim: Callable[[nn.Module, int], int] | None = None
    attention_products: str | None = None
    filter_count: str | None = None
    macs_over: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not callable(self.rule):
            raise TypeError(f"Family {self.name!r}: rule must be a function rule(prop, call), got {self.rule!r}")
        name, dim = self.filters
        if not isinstance(name, str) or not isinstance(dim, int) or dim < 0:
            raise ValueError(f"Family {self.name!r}: filters must be (weight name, dim >= 0), got {self.filters!r}")
        if not all(isinstance(a, str) for a in self.attributes):
            raise TypeError(f"Family {self.name!r}: attributes must be names, got {self.attributes!r}")

    def channel_dim_of_input(self, module: nn.Module, ndim: int) -> int:
        """The channel dim of ``module``'s input of ``ndim`` dims; an error naming the family where it has none."""
        if self.input_dim is None:
            raise ValueError(
                f"family {self.name!r} of {type(module).__name__} does not say which dim of its input holds the "
                "channels (Family.input_dim), so its input channels cannot be scored"
            )
        return self.input_dim(module, ndim)
