"""Knowledge distillation in fine-tuning: the pruned network (the student) learns from a teacher.

``Distillation(alpha, temperature)`` is ``TrainingOptions.distillation``. With it, every
fine-tuning step also runs the teacher (in ``compress_network``, a frozen copy of the input
network, in eval mode) on the same batch, and the loss becomes

    alpha * T² * KL(teacher ‖ student at temperature T) + (1 - alpha) * task loss

(Hinton et al. 2015). The KL divergence is over dimension 1 of the first output (the classes of
``(N, C)`` logits, of ``(N, C, H, W)`` segmentation maps), averaged over every other position.
``alpha=0`` is the task loss alone, and the teacher is not run.

>>> import torch
>>> student, teacher = torch.tensor([[2.0, 0.0]]), torch.tensor([[2.0, 0.0]])
>>> float(Distillation(alpha=1.0).loss(student, teacher, torch.tensor(0.7)))
0.0
>>> round(float(Distillation(alpha=0.5, temperature=1.0).loss(student, teacher, torch.tensor(0.7))), 6)
0.35
>>> Distillation(alpha=1.5)
Traceback (most recent call last):
...
ValueError: distillation.alpha must be a number in [0, 1], got 1.5
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from prune_core.checks import check_number


@dataclass(frozen=True)
class Distillation:
    """The weight ``alpha`` of the distillation term, in [0, 1], and the ``temperature``, > 0."""

    alpha: float = 0.5
    temperature: float = 4.0

    def __post_init__(self) -> None:
        check_number("distillation.alpha", self.alpha, "[0, 1]")
        check_number("distillation.temperature", self.temperature, "(0, inf)")

    @classmethod
    def of(cls, value: Distillation | Mapping[str, Any] | None) -> Distillation | None:
        """``value`` as a ``Distillation``: one already, a mapping of its fields (a config), or None."""
        if value is None or isinstance(value, Distillation):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(
                f"distillation must be a Distillation, a mapping with 'alpha' and 'temperature', or None; "
                f"got {type(value).__name__}"
            )
        unknown = sorted(set(value) - {"alpha", "temperature"})
        if unknown:
            raise TypeError(f"distillation has no field {unknown[0]!r}; its fields are ['alpha', 'temperature']")
        return cls(**value)

    @property
    def active(self) -> bool:
        """Whether the teacher is run at all (``alpha > 0``)."""
        return self.alpha > 0

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, task_loss: torch.Tensor) -> torch.Tensor:
        """The combined loss of one batch, from the student's and the teacher's first outputs."""
        if student.shape != teacher.shape:
            raise ValueError(
                f"distillation: the teacher's first output has shape {tuple(teacher.shape)}, "
                f"the network's {tuple(student.shape)}; they must match"
            )
        t = self.temperature
        log_student = F.log_softmax(student.float() / t, dim=1)
        log_teacher = F.log_softmax(teacher.float() / t, dim=1)
        divergence = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1).mean()
        return self.alpha * t * t * divergence + (1 - self.alpha) * task_loss
