"""The study's end-of-run figure (``analysis.study_figure``): drawn on the study's run, skipped with a
warning when there is nothing to draw, and a failure that fails: tagged on the run, non-zero exit."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from analysis.study_figure import FIGURE, StudyFrontFigure
from sweeps import layout

HISTORY = {"iteration": [0, 1, 2], "learnables": [100, 60, 30], "reduction": [0.0, 0.4, 0.7], "time_s": [0, 1, 2]}


def study(tmp_path: Path, history: dict) -> tuple[MlflowClient, str, StudyFrontFigure]:
    """A store with one study run and one finished trial run logging ``history``; the callback and the run id."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    location = (tmp_path / "artifacts").as_uri()
    experiment = client.create_experiment("figure", artifact_location=location)
    sweep_dir = str(tmp_path / "multirun")
    parent = client.create_run(experiment, tags={layout.ROLE: "study", layout.SWEEP_DIR: sweep_dir}).info.run_id
    trial = client.create_run(experiment, tags={layout.ROLE: "trial", layout.TRIAL: "0"}).info.run_id
    client.log_text(trial, pd.DataFrame(history).to_json(orient="split", index=False), "tables/pruning_history.json")
    client.set_terminated(trial)
    callback = StudyFrontFigure(OmegaConf.create({"uri": uri, "experiment": "figure"}))
    return client, parent, callback


def end(callback: StudyFrontFigure, tmp_path: Path) -> None:
    callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "multirun")}}}))


def test_the_front_is_drawn_on_the_study_run(tmp_path):
    client, parent, callback = study(tmp_path, HISTORY | {"validation_accuracy": [90.0, 89.5, 80.0]})
    end(callback, tmp_path)
    assert FIGURE in {a.path for a in client.list_artifacts(parent)}


def test_a_study_without_validation_accuracy_draws_nothing_and_says_so(tmp_path, caplog):
    client, parent, callback = study(tmp_path, HISTORY)
    with caplog.at_level(logging.WARNING):
        end(callback, tmp_path)
    assert "has no validation_accuracy (no validation data)" in caplog.text
    assert FIGURE not in {a.path for a in client.list_artifacts(parent)}


def test_a_figure_that_cannot_be_logged_is_tagged_and_exits_non_zero(tmp_path):
    client, parent, callback = study(tmp_path, HISTORY | {"validation_accuracy": [90.0, 89.5, 80.0]})
    (tmp_path / "artifacts" / parent).write_text("a file where the study run's artifact folder goes")
    with pytest.raises(SystemExit, match=r"Error: the study's Pareto-front figure \(pareto_front.png\) was not drawn"):
        end(callback, tmp_path)
    assert client.get_run(parent).data.tags[layout.FRONT_FIGURE].startswith("failed: ")


def test_a_study_run_that_cannot_be_found_exits_non_zero(tmp_path):
    _, _, callback = study(tmp_path, HISTORY)
    with pytest.raises(SystemExit, match="no study run of experiment 'figure' has taylorprune.sweep_dir="):
        callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": "/elsewhere"}}}))
