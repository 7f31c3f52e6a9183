"""A small sweep logged to a real ``mlflow server`` on 127.0.0.1, checked over its REST API."""

import pytest
import requests

from tests.support.app import FAST, FAST_SEARCH, run_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def api(url: str, endpoint: str, **params):
    response = requests.get(f"{url}/api/2.0/mlflow/{endpoint}", params=params, timeout=30)
    response.raise_for_status()
    return response.json()


def test_sweep_runs_metrics_and_artifacts_are_on_the_server(mlflow_server_url, tmp_path):
    server = mlflow_server_url
    work = tmp_path / "work"
    work.mkdir()
    run_app(work, *FAST, *FAST_SEARCH, "hydra.sweeper.n_trials=2", f"tracking.uri={server}", multirun=True)
    experiment = api(server, "experiments/get-by-name", experiment_name="taylorprune")["experiment"]
    search = {"experiment_ids": [experiment["experiment_id"]]}
    found = requests.post(f"{server}/api/2.0/mlflow/runs/search", json=search, timeout=30).json()["runs"]
    tags = [{t["key"]: t["value"] for t in run["data"]["tags"]} for run in found]
    assert sorted(t["taylorprune.role"] for t in tags) == ["study", "trial", "trial"]
    assert all(run["info"]["status"] == "FINISHED" for run in found)
    study_id = next(r["info"]["run_id"] for r, t in zip(found, tags) if t["taylorprune.role"] == "study")
    trials = [r for r, t in zip(found, tags) if t["taylorprune.role"] == "trial"]
    assert all(t.get("mlflow.parentRunId") == study_id for t in tags if t["taylorprune.role"] == "trial")
    for run in trials:
        run_id = run["info"]["run_id"]
        history = api(server, "metrics/get-history", run_id=run_id, metric_key="pruning/reduction")["metrics"]
        assert [m["step"] for m in history] == list(range(len(history))) and history[-1]["value"] >= 0.3
        top = {f["path"] for f in api(server, "artifacts/list", run_id=run_id)["files"]}
        assert {"tables", "checkpoints", "hydra", "model_safe", "pruning_progress.png"} <= top
        tables = {f["path"] for f in api(server, "artifacts/list", run_id=run_id, path="tables")["files"]}
        assert tables == {f"tables/{n}_history.json" for n in ("pruning", "training", "validation")}
    assert (tmp_path / "artifacts").is_dir(), "artifacts went through the server to its artifact store"
