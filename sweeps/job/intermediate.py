"""Intermediate values for Optuna's pruners: each pruning iteration's objective, reported to the trial.

``IntermediateValues(trial, objective, then)`` is a ``compress_network`` ``iteration_fn``: it
calls ``then(row)`` (the live MLflow log), reports ``row[objective]`` at step = the pruning
iteration, and returns True, which stops the run after that iteration, when the trial's pruner
says to prune. ``pruned_at`` is that iteration (None while the trial goes on).

>>> import optuna
>>> study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5))
>>> values = IntermediateValues(study.ask(), "reduction", then=lambda row: None)
>>> values({"iteration": 1, "reduction": 0.6}), values({"iteration": 2, "reduction": 0.4}), values.pruned_at
(False, True, 2)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import optuna


class IntermediateValues:
    """See the module docstring."""

    def __init__(self, trial: optuna.Trial, objective: str, then: Callable[[dict], object]) -> None:
        self.trial, self.objective, self.then = trial, objective, then
        self.pruned_at: int | None = None

    def __call__(self, row: dict) -> bool:
        self.then(row)
        value = row.get(self.objective)
        if value is None or not math.isfinite(float(value)):
            return False
        self.trial.report(float(value), int(row["iteration"]))
        if self.trial.should_prune():
            self.pruned_at = int(row["iteration"])
            return True
        return False
