"""A small sweep logged to a real ``mlflow server`` on 127.0.0.1, checked over its REST API."""

import signal

import pytest
import requests

from tests.support.app import FAST, FAST_SEARCH, finish, run_app, start_app, wait_for
from tests.support.services import free_port, mlflow_server

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


def test_a_study_rides_out_its_tracking_server_going_down_and_coming_back(tmp_path):
    store, artifacts, port = f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts", free_port()
    work = tmp_path / "work"
    work.mkdir()
    with mlflow_server(store, artifacts, port=port, stop_signal=signal.SIGKILL) as server:  # down at once
        backoff = {"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}  # MLflow's retries, twice as close as by default
        process = start_app(
            work, *FAST, *FAST_SEARCH, "hydra.sweeper.n_trials=3", f"tracking.uri={server}", env=backoff
        )

        def finished_trials():
            assert process.poll() is None, process.stdout.read()[-4000:]
            found = requests.post(f"{server}/api/2.0/mlflow/runs/search", json={"experiment_ids": ["1"]}, timeout=30)
            runs = found.json().get("runs", []) if found.ok else []
            return [r for r in runs if r["info"]["status"] == "FINISHED"]

        wait_for(finished_trials, "a finished trial run on the server")
    seen = []  # the server is down: the app's next call to it is retried
    for line in process.stdout:
        seen.append(line)
        if "Retrying" in line:
            break
    assert any("Retrying" in line for line in seen), "".join(seen)[-3000:]
    with mlflow_server(store, artifacts, port=port) as server:
        output = "".join(seen) + finish(process)
        assert process.returncode == 0, output[-4000:]
        search = {"experiment_ids": ["1"]}
        runs = requests.post(f"{server}/api/2.0/mlflow/runs/search", json=search, timeout=30).json()["runs"]
    roles = sorted(next(t["value"] for t in r["data"]["tags"] if t["key"] == "taylorprune.role") for r in runs)
    assert roles == ["study", "trial", "trial", "trial"], output[-6000:]
    assert {r["info"]["status"] for r in runs} == {"FINISHED"}
