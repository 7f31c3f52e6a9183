"""ONNX export and measured latency: the module, the job's deployment step and the sweep end to end."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from torch import nn

from sweeps.deployment.latency import measure
from sweeps.deployment.measure import DeploymentOptions, measure_deployment
from sweeps.deployment.onnx_export import ExportFailed, export_onnx, session
from tests.support.app import FAST, FAST_SEARCH, run_analysis, run_app


class CumulativeMax(nn.Module):
    """A conv followed by ``cummax``, which PyTorch runs and the ONNX exporter cannot convert."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3)

    def forward(self, x):
        return torch.cummax(self.conv(x), dim=-1).values.mean(-1)


def small() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(1, 8, 3), nn.BatchNorm1d(8), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 3)
    ).train()


def test_an_export_runs_in_onnxruntime_like_torch_and_leaves_the_model_alone(tmp_path):
    net, example = small(), torch.randn(2, 1, 16)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    exported = export_onnx(net, example, tmp_path / "model.onnx")
    assert exported.max_abs_diff <= 1e-4
    runner = session(exported.path)
    batch = torch.randn(64, 1, 16)  # the batch dimension is dynamic
    got = runner.run(None, {runner.get_inputs()[0].name: batch.numpy()})[0]
    np.testing.assert_allclose(got, net.eval()(batch).detach().numpy(), atol=1e-4)
    net.train()
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_a_failed_export_says_why_and_leaves_no_file(tmp_path):
    with pytest.raises(ExportFailed, match="torch.onnx.export failed: ConversionError"):
        export_onnx(CumulativeMax(), torch.randn(2, 1, 8), tmp_path / "model.onnx")
    with pytest.raises(ExportFailed, match="differ from PyTorch's by .* more than 1e-30"):
        export_onnx(small(), torch.randn(2, 1, 16) * 100, tmp_path / "model.onnx", tolerance=1e-30)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_still_measures_latency_on_torch_and_marks_it(tmp_path):
    options = DeploymentOptions(batch_sizes=[1, 4], max_seconds=0.5)
    found = measure_deployment(CumulativeMax(), torch.randn(2, 1, 8), tmp_path, options)
    assert found.onnx_path is None and found.tags["taylorprune.onnx"].startswith("failed: torch.onnx.export failed")
    assert found.tags["taylorprune.latency_source"] == "torch"
    assert set(found.metrics) == {"latency_ms", "latency_spread", "latency_ms_b4", "latency_spread_b4"}
    exported = measure_deployment(small(), torch.randn(2, 1, 16), tmp_path, options)
    assert exported.onnx_path == tmp_path / "model.onnx" and exported.tags == {
        "taylorprune.onnx": "exported",
        "taylorprune.latency_source": "onnxruntime",
    }
    assert exported.metrics["onnx_max_abs_diff"] <= 1e-4 and exported.metrics["latency_ms_b4"] > 0


def test_latency_is_a_median_with_its_spread():
    calls = []
    timing = measure(lambda: calls.append(sum(range(2000))), warmup=5, min_runs=25, max_seconds=5.0)
    assert len(calls) == 5 + timing.runs * timing.calls_per_sample and timing.runs % 25 == 0
    assert timing.calls_per_sample > 1, "microsecond calls are timed in groups"
    assert timing.median_ms > 0 and timing.spread >= 0 and timing.stable == (timing.spread < 0.1)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("export.batch_sizes=[0]", "export: batch_sizes must be positive integers, got [0]"),
        ("export.latency=false", "sweep.objectives names 'latency_ms', which this configuration does not measure"),
    ],
)
def test_bad_export_settings_fail_before_any_work(tmp_path, override, message):
    result = run_app(
        tmp_path,
        *FAST,
        *FAST_SEARCH,
        "export.latency=true",
        "sweep.objectives=[latency_ms]",
        "sweep.directions=[minimize]",
        override,
        multirun=True,
        check=False,
    )
    assert result.returncode != 0 and message in result.stderr + result.stdout
    assert not (tmp_path / ".cache").exists()


@pytest.mark.slow
def test_a_study_on_measured_latency_logs_the_export_and_draws_the_latency_front(tmp_path):
    run_app(
        tmp_path,
        *FAST,
        *FAST_SEARCH,
        "export.onnx=true",
        "export.latency=true",
        "export.max_seconds=1",
        "sweep.objectives=[validation_accuracy,latency_ms]",
        "sweep.directions=[maximize,minimize]",
        "hydra.sweeper.n_trials=2",
        multirun=True,
    )
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(
        experiment_names=["taylorprune"], filter_string="tags.`taylorprune.role` = 'trial'", output_format="list"
    )
    study = optuna.load_study(study_name="taylorprune", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(runs) == 2 and len(study.trials) == 2
    for run in runs:
        assert run.data.tags["taylorprune.onnx"] == "exported"
        assert run.data.tags["taylorprune.latency_source"] == "onnxruntime"
        assert {"latency_ms", "latency_ms_b64", "latency_spread", "onnx_max_abs_diff"} <= set(run.data.metrics)
        assert "model.onnx" in {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
        trial = next(t for t in study.trials if t.user_attrs["mlflow_run_id"] == run.info.run_id)
        assert math.isclose(trial.values[1], run.data.metrics["latency_ms"])  # the value the study acted on
    out = tmp_path / "analysis"
    result = run_analysis(
        tmp_path,
        "--experiment",
        "taylorprune",
        "--out",
        str(out),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert result.returncode == 0, result.stderr
    assert (out / "fronts.png").stat().st_size > 10_000
    table = pd.read_csv(out / "table.csv")
    returned = table["returned"]
    assert table.loc[returned, "latency_ms"].notna().all() and table.loc[~returned, "latency_ms"].isna().all()


@pytest.mark.slow
def test_an_export_outside_its_tolerance_is_reported_and_the_trial_completes(tmp_path):
    run_app(
        tmp_path,
        *FAST,
        *FAST_SEARCH,
        "export.onnx=true",
        "export.latency=true",
        "export.max_seconds=0.5",
        "export.tolerance=1e-30",
        "sweep.objectives=[latency_ms]",
        "sweep.directions=[minimize]",
        "hydra.sweeper.n_trials=1",
        multirun=True,
    )
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = mlflow.search_runs(
        experiment_names=["taylorprune"], filter_string="tags.`taylorprune.role` = 'trial'", output_format="list"
    )
    assert run.info.status == "FINISHED"
    assert run.data.tags["taylorprune.onnx"].startswith("failed: onnxruntime's outputs differ from PyTorch's")
    assert run.data.tags["taylorprune.latency_source"] == "torch"
    assert "model.onnx" not in {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    (trial,) = optuna.load_study(study_name="taylorprune", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == run.data.metrics["latency_ms"]
