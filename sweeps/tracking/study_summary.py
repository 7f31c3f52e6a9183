"""What a study's parent run holds once the study ends: its settings, its plots, and where to look.

- ``study_params(config)``: the sampler, ``n_trials``, the directions and metric names, and every
  searched dimension (``search/<key>``) as params of the parent run;
- ``log_study_plots(...)``: Optuna's Pareto-front (or optimisation-history) plot and one fANOVA
  parameter-importance plot per objective as HTML (``optuna/``); a plot that cannot be drawn (too
  few complete trials, say) is skipped with a warning, never failing the study. The front over
  every pruning iteration (``pareto_front.png``) is the analysis' callback
  (``analysis.study_figure``);
- ``runs_page(uri, experiment_id)``: the MLflow UI page of the experiment's runs, on the UI's "Model
  training" side (``?workflowType=machine_learning``: MLflow 3.17's UI opens every experiment on its "GenAI"
  side otherwise, whatever the experiment's ``mlflow.experimentKind`` tag says; seen in a headless browser).

>>> runs_page("http://127.0.0.1:5000", "3")
'http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning'
>>> runs_page("sqlite:////work/mlflow.db", "3")
'http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning (after mlflow ui --backend-store-uri sqlite:////work/mlflow.db)'
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
_RUNS = "runs?workflowType=machine_learning"  # the runs table, on the UI's "Model training" side


def study_params(config: DictConfig) -> dict[str, str]:
    """The study's settings as parent-run params (see the module docstring)."""
    sweeper = config.hydra.sweeper
    params = {
        "sampler": str(sweeper.get("sampler", {}).get("_target_", "")),
        "n_trials": str(sweeper.n_trials),
        "directions": str(list(sweeper.direction)) if OmegaConf.is_list(sweeper.direction) else str(sweeper.direction),
        "metric_names": str(sweeper.get("metric_names")),
    }
    for key, value in (sweeper.get("params") or {}).items():
        params[f"search/{key}"] = str(value)
    for line in config.hydra.overrides.task:
        key, _, value = line.partition("=")
        if any(mark in value for mark in (",", "interval(", "range(", "choice(")):
            params[f"search/{key.lstrip('+~')}"] = value
    return params


def runs_page(uri: str, experiment_id: str) -> str:
    """The MLflow UI page listing the experiment's runs (a local store needs ``mlflow ui`` running)."""
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/{_RUNS}"
    return f"http://127.0.0.1:5000/#/experiments/{experiment_id}/{_RUNS} (after mlflow ui --backend-store-uri {uri})"


def _optuna_plots(study: optuna.Study) -> dict[str, object]:
    names = study.metric_names or [f"objective {k}" for k in range(len(study.directions))]
    plots = {}
    if len(study.directions) > 1:
        plots["pareto_front.html"] = lambda: optuna.visualization.plot_pareto_front(study, target_names=names)
    else:
        plots["optimization_history.html"] = lambda: optuna.visualization.plot_optimization_history(
            study, target_name=names[0]
        )
    for k, name in enumerate(names):
        plots[f"param_importances_{name}.html"] = lambda k=k, name=name: optuna.visualization.plot_param_importances(
            study,
            evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
            target=lambda t: t.values[k],
            target_name=name,
        )
    return plots


def log_study_plots(client: MlflowClient, run_id: str, study: optuna.Study) -> None:
    """Attach Optuna's plots of ``study`` to its parent run (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="taylorprune-study-") as folder:
        for name, draw in _optuna_plots(study).items():
            try:
                draw().write_html(Path(folder) / name, include_plotlyjs="cdn")
            except Exception as exc:  # e.g. fewer than two complete trials
                log.warning(f"Optuna plot {name} not drawn: {type(exc).__name__}: {exc}")
        if any(Path(folder).iterdir()):
            client.log_artifacts(run_id, folder, "optuna")
