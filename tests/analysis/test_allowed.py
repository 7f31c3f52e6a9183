"""A logged config is untrusted: loading a choice instantiates only allow-listed builders."""

from __future__ import annotations

import pickle

import mlflow
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from analysis import load_choice, validation_accuracy
from prune_core import save_pruned
from sweeps.builders.models import small_cnn2d


class Planted:
    """A pickle payload that would create a marker file when unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def trusted_net():
    """A caller's own builder, allowed by name."""
    return small_cnn2d()


@pytest.fixture
def store(tmp_path):
    """A real MLflow store with one run holding a checkpoint; returns (uri, log_config)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("planted", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    save_pruned(small_cnn2d(), tmp_path / "iteration-1.pt")
    client.log_artifact(run.info.run_id, str(tmp_path / "iteration-1.pt"), "checkpoints")
    client.set_terminated(run.info.run_id)
    row = pd.Series({"run_id": run.info.run_id, "iteration": 1, "checkpoint": "checkpoints/iteration-1.pt"})

    def log_config(config: dict) -> pd.Series:
        client.log_text(run.info.run_id, OmegaConf.to_yaml(OmegaConf.create(config)), "hydra/config.yaml")
        return row

    return uri, log_config


def test_a_planted_target_is_refused_and_never_runs(store, tmp_path):
    uri, log_config = store
    marker, evil = tmp_path / "ran", tmp_path / "evil.pt"
    with open(evil, "wb") as handle:
        pickle.dump(Planted(str(marker)), handle)
    row = log_config({"model": {"_target_": "torch.load", "f": str(evil), "weights_only": False}})
    with pytest.raises(ValueError, match=r"model._target_='torch.load' is not an allowed builder"):
        load_choice(row, uri)
    assert not marker.exists()


@pytest.mark.parametrize(
    "model",
    [
        {"_target_": "sweeps.builders.models.small_cnn2d", "width": {"_target_": "os.system", "_args_": ["touch ran"]}},
        {"_target_": "sweeps.builders.models.nn"},  # imported by the module, not one of its builders
        {"_target_": "${oc.env:HOME}"},  # interpolations are not resolved into targets
        "sweeps.builders.models.small_cnn2d",  # not a mapping
    ],
)
def test_nested_imported_and_malformed_targets_are_refused(store, tmp_path, monkeypatch, model):
    uri, log_config = store
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="not an allowed builder|not a mapping"):
        load_choice(log_config({"model": model}), uri)
    assert not (tmp_path / "ran").exists()


def test_allowed_builders_load(store):
    uri, log_config = store
    row = log_config(
        {
            "model": {"_target_": "sweeps.builders.models.small_cnn2d"},
            "data": {"_target_": "sweeps.builders.datasets.digits", "validation_fraction": 0.25},
        }
    )
    model = load_choice(row, uri)
    accuracy = validation_accuracy(model, OmegaConf.create({"data": {"_target_": "sweeps.builders.datasets.digits"}}))
    assert 0.0 <= accuracy <= 100.0
    row = log_config({"model": {"_target_": "tests.analysis.test_allowed.trusted_net"}})
    with pytest.raises(ValueError, match="not an allowed builder"):
        load_choice(row, uri)
    assert isinstance(load_choice(row, uri, allowed=["tests.analysis.test_allowed.trusted_net"]), torch.nn.Module)
    assert isinstance(load_choice(row, uri, builder=small_cnn2d), torch.nn.Module)
