"""MLflow logging details against a real (sqlite) store: metric batching, params, study runs."""

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from torch import nn

from prune_core import PruningInfo, TrainingOptions, compress_network
from sweeps import layout
from sweeps.tracking import history as tracking_history
from sweeps.tracking.store import experiment_id


def fake_history(steps: int) -> PruningInfo:
    training = pd.DataFrame(
        {
            "pruning_iteration": [1] * steps,
            "epoch": [1] * steps,
            "iteration": range(1, steps + 1),
            "loss": [1.0 / (k + 1) for k in range(steps)],
            "learn_rate": [1e-3] * steps,
            "time_s": [0.0] * steps,
        }
    )
    pruning = pd.DataFrame(
        {
            "iteration": [0, 1],
            "learnables": [100, 60],
            "reduction": [0.0, 0.4],
            "filters_removed": [0, 3],
            "validation_loss": [0.5, 0.6],
        }
    )
    validation = pd.DataFrame(
        {
            "pruning_iteration": [0, 1],
            "epoch": [0, 1],
            "iteration": [0, steps],
            "loss": [0.5, 0.6],
            "time_s": [0.0, 1.0],
        }
    )
    return PruningInfo(pruning, training, validation, ["conv"], "Maximum compression reached.", "", 1)


def counted_log_batches(monkeypatch) -> list[int]:
    """The number of metrics in each ``MlflowClient.log_batch`` call from now on (the calls still store them)."""
    calls: list[int] = []
    original = MlflowClient.log_batch
    monkeypatch.setattr(
        MlflowClient,
        "log_batch",
        lambda self, run_id, metrics=(), **kw: (
            calls.append(len(metrics)) or original(self, run_id, metrics=metrics, **kw)
        ),
    )
    return calls


def test_history_metrics_are_logged_in_batches_of_at_most_1000(tmp_path, monkeypatch):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("batches"))
    calls = counted_log_batches(monkeypatch)
    metrics = tracking_history.history_metrics(fake_history(2500))
    tracking_history._metric_batches(client, run.info.run_id, metrics)
    assert len(metrics) == 2 * 2500 + 2 * 4 + 2  # train loss and learn rate, 4 per pruning row, validation loss
    assert calls == [1000] * 5 + [10]
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == list(range(1, 2501))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "pruning/reduction")] == [0, 1]


def test_flattened_config_params():
    cfg = OmegaConf.create({"pruning": {"goal": 0.5, "layer_names": None}, "training": {"metrics": ["accuracy"]}})
    assert tracking_history.flatten(OmegaConf.to_container(cfg)) == {
        "pruning.goal": "0.5",
        "pruning.layer_names": "None",
        "training.metrics": "['accuracy']",
    }


def test_tracking_uri_defaults_to_an_absolute_sqlite_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert layout.tracking_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert layout.tracking_uri("http://example:5000") == "http://example:5000"
    mlflow.set_tracking_uri(layout.tracking_uri(None))
    layout.check_reachable(layout.tracking_uri(None), "tracking.uri")
    with pytest.raises(ValueError, match="there is no MLflow store at"):
        layout.check_reachable(layout.tracking_uri(None), "tracking URI", store_must_exist=True)


def test_the_app_and_the_analysis_honour_mlflow_tracking_uri_alike(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert layout.tracking_uri(None) == "http://tracking.example:5000"  # one resolution for writer and reader
    assert layout.tracking_uri("sqlite:///elsewhere.db") == "sqlite:///elsewhere.db"


def test_experiments_are_tagged_as_model_training_new_or_old_but_never_retagged(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    new = client.get_experiment(experiment_id(client, "new"))
    old = client.get_experiment(client.create_experiment("old"))
    assert layout.EXPERIMENT_KIND not in old.tags
    experiment_id(client, "old")
    client.create_experiment("genai", tags={layout.EXPERIMENT_KIND: "genai_development"})
    experiment_id(client, "genai")
    kinds = {name: client.get_experiment_by_name(name).tags[layout.EXPERIMENT_KIND] for name in ("new", "old", "genai")}
    assert kinds == {"new": "custom_model_development", "old": "custom_model_development", "genai": "genai_development"}
    assert new.tags[layout.EXPERIMENT_KIND] == "custom_model_development"


def test_live_log_sends_fine_tuning_steps_with_each_pruning_row_in_batches_of_at_most_1000(tmp_path, monkeypatch):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("live"))
    calls = counted_log_batches(monkeypatch)
    with tracking_history.LiveLog(client, run.info.run_id) as live:
        for step in range(1, 1201):  # a fine-tuning of 1200 steps, one metric each, then its pruning row
            assert (
                live.fine_tuning_step({"pruning_iteration": 1, "epoch": 1, "iteration": step, "loss": 1 / step})
                is False
            )
        live({"iteration": 1, "learnables": 60, "reduction": 0.4})
        live.fine_tuning_step({"pruning_iteration": 2, "epoch": 1, "iteration": 1201, "loss": 0.0})
        live.flush()
        assert calls == [1000, 202, 1], "one batch per pruning row (cut at 1000), the rest on flush"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(1, 1202))
    assert [m.value for m in client.get_metric_history(run.info.run_id, "pruning/reduction")] == [0.4]


def test_live_log_sends_every_validation_once_as_it_happens(tmp_path, monkeypatch):
    """Validations during fine-tuning (every 3rd iteration) and those that end a fine-tuning or precede pruning
    go out live, at their fine-tuning iteration, each once: what the validation history table holds."""
    monkeypatch.chdir(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("live"))
    torch.manual_seed(0)
    x, y = torch.randn(80, 6), torch.randint(0, 3, (80,))
    network = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    with tracking_history.LiveLog(client, run.info.run_id) as live:
        options = TrainingOptions(
            "adam",
            max_epochs=1,
            mini_batch_size=16,
            metrics=["accuracy"],
            validation_data=(x, y),
            validation_frequency=3,
            output_fn=live.fine_tuning_step,
        )
        _, info = compress_network(
            network, x, y, "crossentropy", options, goal=0.5, increment=0.2, iteration_fn=live, verbosity="off"
        )
        live.flush()
    table = info.validation_history
    assert len(table) > len(info.pruning_history), "validations during fine-tuning too"
    for name in ("loss", "accuracy"):
        logged = client.get_metric_history(run.info.run_id, f"validation/{name}")
        assert sorted((m.step, m.value) for m in logged) == sorted(zip(table["iteration"], table[name].astype(float)))
