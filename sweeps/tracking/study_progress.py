"""The study's progress in the MLflow UI: the hypervolume of its front, logged after every trial.

``HypervolumeLog`` is a sweeper callback (``hydra.sweeper.callbacks.hypervolume`` in
``conf/config.yaml``). After each trial is told, it logs ``hypervolume`` to the study's parent run
at step = the trial's number: the volume the study's feasible complete trials dominate above
``sweep.reference_point`` (``optuna_sweep.front_hypervolume``). The parent run's chart then shows
whether the study is still improving. A reference point of None is 0 for every objective when
all are maximised (accuracies, reductions); with a minimised one (``latency_ms``), which has no
natural worst, nothing is logged unless a point is given. A failed or pruned trial logs the unchanged value, so
every trial has a point. A study run without its parent run (no ``StudyRunCallback``) logs
nothing; a store that cannot be reached costs a warning, never the study.

    hypervolume = HypervolumeLog(tracking, reference_point=None, directions=["maximize", "maximize"])
    hypervolume(study, frozen_trial)      # what the sweeper does after each tell
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import optuna
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from optuna_sweep.progress import check_reference_point, front_hypervolume
from sweeps import layout
from sweeps.tracking.study_run import STUDY_RUN_ENV

log = logging.getLogger(__name__)
METRIC = "hypervolume"


class HypervolumeLog:
    """Log the front's hypervolume to the study's parent run after each trial (see the module docstring)."""

    def __init__(
        self, tracking: DictConfig, reference_point: Sequence[float] | None, directions: Sequence[str]
    ) -> None:
        directions = [directions] if isinstance(directions, str) else list(directions)
        if reference_point is None and all(d == "maximize" for d in directions):
            reference_point = [0.0] * len(directions)
        self.reference_point = (
            None
            if reference_point is None
            else check_reference_point(reference_point, directions, "sweep.reference_point")
        )
        self.uri = layout.tracking_uri(tracking.uri)
        self.client: MlflowClient | None = None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        run_id = os.environ.get(STUDY_RUN_ENV)
        if run_id is None or self.reference_point is None:
            return
        volume = front_hypervolume(study, self.reference_point)
        try:
            self.client = self.client or MlflowClient(self.uri)
            self.client.log_metric(run_id, METRIC, volume, step=trial.number)
        except Exception as exc:  # the metric is a view of the study, which goes on without it
            log.warning(f"hypervolume after trial {trial.number} not logged: {type(exc).__name__}: {exc}")
