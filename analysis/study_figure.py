"""The study's end-of-run figure: the Pareto front over every pruning iteration, on the study's MLflow run.

``StudyFrontFigure`` is a Hydra callback the app's config lists (``conf/config.yaml``, before the
study's own run callback, so that it runs after that one has ended the run). When a study
invocation ends, it finds that invocation's parent run (tags ``taylorprune.role=study`` and
``taylorprune.sweep_dir``), reads the experiment back as the analysis does (``load_experiment``)
and logs ``pareto_front.png`` there. An experiment with no pruning iteration yet, or without
validation accuracy (no validation data), draws nothing (a warning says so); any other failure is
a failure: the line names it, the study run is tagged ``taylorprune.front_figure = failed: <why>``,
and the command exits non-zero.

    hydra:
      callbacks:
        front_figure:
          _target_: analysis.study_figure.StudyFrontFigure
          tracking: ${tracking}
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from analysis.loading import load_experiment
from analysis.pareto import pareto_front
from sweeps import layout

log = logging.getLogger(__name__)
FIGURE = "pareto_front.png"
METRIC = "validation_accuracy"  # the front's y axis


def study_run_id(client: MlflowClient, experiment: str, sweep_dir: str) -> str:
    """The id of the latest study run of ``experiment`` that wrote to ``sweep_dir``."""
    found = client.get_experiment_by_name(experiment)
    runs = (
        []
        if found is None
        else client.search_runs(
            [found.experiment_id],
            max_results=1,
            order_by=["attributes.start_time DESC"],
            filter_string=f"tags.`{layout.ROLE}` = 'study' and tags.`{layout.SWEEP_DIR}` = '{sweep_dir}'",
        )
    )
    if not runs:
        raise ValueError(f"no study run of experiment {experiment!r} has {layout.SWEEP_DIR}={sweep_dir!r}")
    return runs[0].info.run_id


class StudyFrontFigure(Callback):
    """Logs the front of every pruning iteration to the study's run when it ends (see the module docstring)."""

    def __init__(self, tracking: DictConfig) -> None:
        self.tracking = tracking

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        uri = layout.tracking_uri(self.tracking.uri)
        client, run_id = MlflowClient(uri), None
        try:
            run_id = study_run_id(client, self.tracking.experiment, str(config.hydra.sweep.dir))
            table = load_experiment(self.tracking.experiment, uri).table
            if table.empty or METRIC not in table:
                why = "no pruning iteration yet" if table.empty else f"no {METRIC} (no validation data)"
                log.warning(f"Pareto-front figure not drawn: experiment {self.tracking.experiment!r} has {why}")
                return
            # imported here: matplotlib and seaborn take about a second, which every run of the app (Hydra
            # builds its callbacks first, single runs and refused configs included) would pay for nothing
            from analysis.plots import front_figure

            client.log_figure(run_id, front_figure(table, pareto_front(table)), FIGURE)
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            if run_id is not None:
                client.set_tag(run_id, layout.FRONT_FIGURE, f"failed: {why}"[:5000])
            # Hydra turns a callback's exception into a warning: exit here, with one clear line
            raise SystemExit(f"Error: the study's Pareto-front figure ({FIGURE}) was not drawn: {why}") from exc
