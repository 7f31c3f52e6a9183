"""How far a study has come: the hypervolume its feasible front dominates above a reference point.

``front_hypervolume(study, reference_point)`` takes the study's complete trials whose constraints
(if any) are met, keeps the values strictly better than ``reference_point`` in every objective
(the worst values that still count, one per objective), and returns the volume
they dominate, in the study's own directions. One objective gives the best value's distance from
the reference; no trial better than it gives 0.0.

>>> import optuna
>>> optuna.logging.set_verbosity(optuna.logging.WARNING)
>>> study = optuna.create_study(directions=["maximize", "maximize"])
>>> for values in ([90.0, 0.5], [80.0, 0.75], [70.0, 0.25]):
...     study.add_trial(optuna.trial.create_trial(values=values))
>>> front_hypervolume(study, [0.0, 0.0])  # 90 x 0.5 + (80 x 0.75 - 80 x 0.5)
65.0

Optuna computes the volume (``optuna._hypervolume``, the code behind its own
``plot_hypervolume_history``, which is public only as a figure).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume
from optuna.study import StudyDirection
from optuna.trial import TrialState

CONSTRAINTS_ATTR = "constraints"  # where the sweeper stores a trial's constraints (<= 0 is feasible)


def check_reference_point(reference_point: Sequence[float], directions: Sequence[str], argument: str) -> list[float]:
    """``reference_point`` as floats, one per direction, or ValueError naming ``argument``."""
    point = [float(v) for v in reference_point]
    if len(point) != len(directions) or not all(math.isfinite(v) for v in point):
        raise ValueError(
            f"{argument}={list(reference_point)} must hold one finite number per objective; the study has "
            f"{len(directions)} ({list(directions)})"
        )
    return point


def front_hypervolume(study: optuna.Study, reference_point: Sequence[float]) -> float:
    """The volume the study's feasible complete trials dominate above ``reference_point`` (see the module)."""
    check_reference_point(reference_point, [d.name.lower() for d in study.directions], "reference_point")
    signs = np.array([-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in study.directions])
    losses = np.array(
        [
            trial.values
            for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if all(c <= 0 for c in trial.user_attrs.get(CONSTRAINTS_ATTR, ()))
        ],
        dtype=float,
    ).reshape(-1, len(signs))
    losses, reference = losses * signs, np.asarray(reference_point, dtype=float) * signs
    better = losses[(losses < reference).all(axis=1)]
    return float(compute_hypervolume(better, reference)) if len(better) else 0.0
