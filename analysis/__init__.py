"""analysis: an MLflow experiment of pruning runs as a table, Pareto fronts, the level to ship.

>>> from analysis import load_experiment, pareto_front, choose, load_choice   # doctest: +SKIP
>>> experiment = load_experiment("taylorprune")                              # doctest: +SKIP
>>> front = pareto_front(experiment.table)                                   # doctest: +SKIP
>>> row = choose(experiment.table, max_drop=1.0)                             # doctest: +SKIP
>>> model = load_choice(row, experiment.tracking_uri)                        # doctest: +SKIP
"""

from analysis.choice import accuracy_drop, choose, load_choice, run_config, validation_accuracy
from analysis.loading import Experiment, load_experiment, trial_summary
from analysis.pareto import fronts_by, pareto_front

__all__ = [
    "Experiment",
    "accuracy_drop",
    "choose",
    "fronts_by",
    "load_choice",
    "load_experiment",
    "pareto_front",
    "run_config",
    "trial_summary",
    "validation_accuracy",
]
