"""The returned network as an MLflow logged model, saved from the job's one torch.export of it."""

from __future__ import annotations

import mlflow
import torch
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from torch import nn

from sweeps.deployment.program import export_program
from sweeps.tracking.logged_model import new_logged_model, save_logged_model


def test_a_logged_model_is_the_shared_program_exported_once_and_linked_to_its_run(tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 8, 3), nn.BatchNorm1d(8), nn.ReLU(), nn.Flatten(), nn.Linear(48, 3))
    example = torch.randn(2, 1, 8)
    program = export_program(net, example)
    exports = []
    export = torch.export.export

    def spy(*args, **kwargs):
        exports.append(args)
        return export(*args, **kwargs)

    monkeypatch.setattr(torch.export, "export", spy)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("logged-model")  # in this store: not whichever another test left set
    client = MlflowClient()
    with mlflow.start_run() as run:
        run_id = run.info.run_id
        mlflow.log_param("pruning.goal", "0.5")
        model_id = new_logged_model(run, {"pruning.goal": "0.5"}, "trial-0")
        client.log_batch(
            run_id, metrics=[Metric("reduction", 0.5, 1, 0, model_id=model_id), Metric("train/loss", 0.1, 1, 3)]
        )
        save_logged_model(client, run_id, model_id, net, example, 3, program)
        assert mlflow.active_run().info.run_id == run_id, "the run stays active"
    assert exports == [], "MLflow saved the shared program instead of exporting the network again"
    assert torch.export.export is spy, "put back after logging"
    model = client.get_logged_model(model_id)
    assert [r.info.run_id for r in client.search_runs([run.info.experiment_id])] == [run_id], "no run of its own"
    assert (model.name, model.source_run_id, model.params) == ("trial-0", run_id, {"pruning.goal": "0.5"})
    assert [(m.key, m.value) for m in model.metrics] == [("reduction", 0.5)]
    assert [(o.model_id, o.step) for o in client.get_run(run_id).outputs.model_outputs] == [(model_id, 3)]
    assert [m.value for m in client.get_metric_history(run_id, "reduction")] == [0.5], "the run's, too"
    x = torch.randn(5, 1, 8)
    assert torch.allclose(mlflow.pytorch.load_model(model.model_uri)(x), net.eval()(x), atol=1e-6)
    assert mlflow.models.get_model_info(model.model_uri).run_id == run_id


class DataDependent(nn.Module):
    """A branch on the input's values: ``torch.export`` cannot export it, PyTorch runs it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        return self.linear(x) if x.sum() > 0 else -self.linear(x)


def test_a_model_torch_export_cannot_export_is_logged_pickled(tmp_path):
    net, example = DataDependent(), torch.ones(2, 4)
    assert export_program(net, example) is None, "each consumer exports on its own, and says why it fails"
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("logged-model")  # in this store: not whichever another test left set
    client = MlflowClient()
    with mlflow.start_run() as run:
        model_id = new_logged_model(run, {}, "model")
        save_logged_model(client, run.info.run_id, model_id, net, example, 0, None)
    logged = client.get_logged_model(model_id)
    assert str(logged.status) == "READY", "the failed export's attempt is not the model's state"
    loaded = mlflow.pytorch.load_model(logged.model_uri)
    assert torch.equal(loaded(example), net(example)) and torch.equal(loaded(-example), net(-example))
