"""The example input a network is analysed, checked and measured on, in any of its three forms.

``ExampleInput.of(example_input)`` accepts what a user passes as ``example_input``:

- a tensor: ``model(x)``;
- a tuple (or list) of positional arguments: ``model(*args)``; each is a tensor, a list or
  tuple of tensors (detectors take a list of images), a number, a string or ``None``;
- a dict of keyword arguments: ``model(**kwargs)`` (``{"x": ..., "t": ...}``).

It checks them before any work: at least one tensor, nothing but those forms, every tensor on
the model's device.

>>> import torch
>>> example = ExampleInput.of({"x": torch.zeros(2, 3), "t": torch.zeros(2)})
>>> example.batch, len(example.tensors)
(2, 2)
>>> ExampleInput.of([torch.zeros(1, 3), [torch.zeros(3, 8, 8), torch.zeros(3, 6, 6)]]).call(lambda a, b: len(b))
2
>>> ExampleInput.of("x")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
TypeError: example_input must be a tensor, a tuple of positional arguments ... got str
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

_FORMS = (
    "example_input must be a tensor, a tuple of positional arguments (tensors, lists of tensors, numbers, "
    "strings or None) or a dict of keyword arguments"
)


def _check_argument(value, where: str) -> None:
    if value is None or isinstance(value, (torch.Tensor, bool, int, float, str)):
        return
    if isinstance(value, (tuple, list)) and all(isinstance(v, torch.Tensor) for v in value):
        return
    inner = [type(v).__name__ for v in value] if isinstance(value, (tuple, list)) else type(value).__name__
    raise TypeError(f"{_FORMS}; {where} is {inner}")


@dataclass(frozen=True)
class ExampleInput:
    """Positional and keyword arguments of one forward pass (see the module docstring)."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    @classmethod
    def of(cls, example_input) -> ExampleInput:
        """The example in any of its forms (an ``ExampleInput`` is returned as it is)."""
        if isinstance(example_input, ExampleInput):
            return example_input
        if isinstance(example_input, torch.Tensor):
            example = cls((example_input,))
        elif isinstance(example_input, (tuple, list)):
            example = cls(tuple(example_input))
            for i, value in enumerate(example.args):
                _check_argument(value, f"example_input[{i}]")
        elif isinstance(example_input, dict):
            if not all(isinstance(k, str) for k in example_input):
                raise TypeError(f"{_FORMS}; the dict's keys must be argument names, got {list(example_input)}")
            example = cls((), dict(example_input))
            for key, value in example.kwargs.items():
                _check_argument(value, f"example_input[{key!r}]")
        else:
            raise TypeError(f"{_FORMS}, got {type(example_input).__name__}")
        if not example.tensors:
            raise TypeError(f"{_FORMS}; it holds no tensor")
        return example

    @property
    def tensors(self) -> list[torch.Tensor]:
        """Every tensor of the example, positional ones first."""
        return [tensor for _, tensor in self.named_tensors()]

    def named_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """``(where, tensor)`` for every tensor; where is ``example_input[0]``, ``example_input[1][2]`` or
        ``example_input['t']``."""
        out = []
        for key, value in [*enumerate(self.args), *self.kwargs.items()]:
            where = f"example_input[{key!r}]"
            if isinstance(value, torch.Tensor):
                out.append((where, value))
            elif isinstance(value, (tuple, list)):
                out += [(f"{where}[{j}]", v) for j, v in enumerate(value)]
        return out

    @property
    def values(self) -> tuple:
        """The arguments in the order of the recorded graph's placeholders: positional, then keyword."""
        return (*self.args, *self.kwargs.values())

    @property
    def batch(self) -> int:
        """The number of examples: the first tensor's leading size (a list of images counts its images)."""
        first = next(v for v in self.values if isinstance(v, (torch.Tensor, tuple, list)))
        if isinstance(first, torch.Tensor):
            return max(1, int(first.shape[0])) if first.ndim else 1
        return max(1, len(first))

    def call(self, model):
        """``model(*args, **kwargs)``."""
        return model(*self.args, **self.kwargs)

    def check_device(self, model: nn.Module) -> ExampleInput:
        """Raise ValueError naming the argument when a tensor is not on the model's parameters' device."""
        params = next(iter(model.parameters()), None)
        if params is not None:
            for where, x in self.named_tensors():
                if x.device != params.device:
                    raise ValueError(
                        f"{where} is on {x.device} but the model's parameters are on "
                        f"{params.device}; move one of them (e.g. example_input.to('{params.device}'))"
                    )
        return self
