"""One bad run does not spoil the analysis; nothing is left in the temporary folder; files are readable."""

from __future__ import annotations

import os
import stat
import tempfile

import mlflow
import pandas as pd
import pytest

from analysis import load_choice, load_experiment
from prune_core import save_pruned
from prune_core.channels import atomic_path
from sweeps.builders.models import small_cnn2d

HISTORY = pd.DataFrame(
    {
        "iteration": [0, 1],
        "learnables": [100, 60],
        "reduction": [0.0, 0.4],
        "validation_accuracy": [90.0, 89.0],
        "time_s": [0.0, 1.0],
    }
)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A real MLflow store, and a temporary folder of its own that the test can inspect."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("bad-runs", artifact_location=(tmp_path / "artifacts").as_uri())
    return uri, client, experiment, scratch


def add_trial(client, experiment, number: int, history: str | None, tmp_path, checkpoint: bytes | None = None) -> str:
    run = client.create_run(experiment, tags={"taylorprune.role": "trial", "taylorprune.trial": str(number)})
    run_id = run.info.run_id
    client.log_param(run_id, "pruning.increment", 0.1 * (number + 1))
    if history is not None:
        client.log_text(run_id, history, "tables/pruning_history.json")
    client.log_text(run_id, "model:\n  _target_: sweeps.builders.models.small_cnn2d\n", "hydra/config.yaml")
    path = tmp_path / "pruned_iteration_001.pt"
    if checkpoint is None:
        save_pruned(small_cnn2d(), path)
    else:
        path.write_bytes(checkpoint)
    client.log_artifact(run_id, str(path), "checkpoints")
    client.set_terminated(run_id)
    return run_id


def test_corrupt_or_missing_tables_leave_their_run_out_with_the_reason(store, tmp_path):
    uri, client, experiment, scratch = store
    good = HISTORY.to_json(orient="split", index=False)
    kept = add_trial(client, experiment, 0, good, tmp_path)
    truncated = add_trial(client, experiment, 1, good[: len(good) // 2], tmp_path)
    missing = add_trial(client, experiment, 2, None, tmp_path)
    loaded = load_experiment("bad-runs", uri)
    assert set(loaded.table["run_id"]) == {kept}
    assert "not a readable history table (JSONDecodeError" in loaded.left_out[truncated]
    assert loaded.left_out[missing] == "no tables/pruning_history.json artifact"
    assert os.listdir(scratch) == []  # every downloaded artifact is gone


def test_a_truncated_checkpoint_names_the_run_and_the_iteration(store, tmp_path):
    uri, client, experiment, scratch = store
    run_id = add_trial(
        client,
        experiment,
        0,
        HISTORY.to_json(orient="split", index=False),
        tmp_path,
        checkpoint=b"PK\x03\x04 truncated",
    )
    row = load_experiment("bad-runs", uri).table.query("iteration == 1").iloc[0]
    with pytest.raises(
        ValueError,
        match=rf"run {run_id}, iteration 1: checkpoint 'checkpoints/pruned_iteration_001.pt'"
        r" cannot be loaded: it is not a readable pruned-model checkpoint",
    ):
        load_choice(row, uri)
    assert os.listdir(scratch) == []


def test_a_good_checkpoint_loads_and_leaves_no_temporary_folder(store, tmp_path):
    uri, client, experiment, scratch = store
    add_trial(client, experiment, 0, HISTORY.to_json(orient="split", index=False), tmp_path)
    row = load_experiment("bad-runs", uri).table.query("iteration == 1").iloc[0]
    assert sum(p.numel() for p in load_choice(row, uri).parameters()) > 0
    assert os.listdir(scratch) == []


def test_files_written_through_the_atomic_helper_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "figure.png") as tmp:
            tmp.write_bytes(b"png")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "figure.png").st_mode) == 0o644
