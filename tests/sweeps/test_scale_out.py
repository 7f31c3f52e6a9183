"""Scale-out for real: workers in separate folders on one PostgreSQL study, logging to an ``mlflow server``
with a PostgreSQL store and proxied artifacts; the submitit launcher; one GPU per concurrent trial.

PostgreSQL comes from Debian's package (``.ci/run`` installs it); without it these tests are
skipped on a developer's machine and fail in CI (``CI`` set), which must run them.
"""

from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from analysis import choose, load_choice, load_experiment
from sweeps.process.devices import job_device
from tests.support.app import FAST, FAST_SEARCH, finish, run_app, start_app
from tests.support.services import create_database, mlflow_server

# a continuous dimension besides FAST_SEARCH: distinct parameters tell duplicated suggestions apart
SEARCH = [*FAST_SEARCH, "training.initial_learn_rate=interval(0.0005, 0.002)"]


@pytest.mark.integration
@pytest.mark.slow
def test_two_workers_share_a_postgres_study_and_a_tracking_server_with_a_postgres_store(postgres_cluster, tmp_path):
    study_url = create_database(postgres_cluster, "study")
    with mlflow_server(create_database(postgres_cluster, "tracking"), tmp_path / "artifacts") as server:
        folders = [tmp_path / "worker-a", tmp_path / "worker-b"]
        processes = []
        for folder in folders:
            folder.mkdir()
            processes.append(
                start_app(
                    folder,
                    *FAST,
                    *SEARCH,
                    "hydra.sweeper.n_trials=2",
                    f"hydra.sweeper.storage={study_url}",
                    f"tracking.uri={server}",
                )
            )
        outputs = [finish(p) for p in processes]
        assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
        trials = optuna.load_study(study_name="taylorprune", storage=study_url).trials
        assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
        assert sorted(t.number for t in trials) == [0, 1, 2, 3]
        assert len({tuple(sorted(t.params.items())) for t in trials}) == 4, "no parameters suggested twice"
        client = MlflowClient(server)
        experiment = client.get_experiment_by_name("taylorprune")
        runs = client.search_runs([experiment.experiment_id], max_results=100)
        assert sorted(r.data.tags["taylorprune.role"] for r in runs) == ["study"] * 2 + ["trial"] * 4
        assert {r.info.status for r in runs} == {"FINISHED"}
        parents = {r.info.run_id for r in runs if r.data.tags["taylorprune.role"] == "study"}
        children = [r.data.tags["mlflow.parentRunId"] for r in runs if r.data.tags["taylorprune.role"] == "trial"]
        assert sorted(children.count(p) for p in parents) == [2, 2]
        table = load_experiment("taylorprune", server).table  # the analysis, through the server
        assert table["run_id"].nunique() == 4
        row = choose(table, max_drop=50.0)
        model = load_choice(row, server)
        assert sum(p.numel() for p in model.parameters()) == row["learnables"]
        assert any((tmp_path / "artifacts").rglob("*.pt")), "checkpoints went through the server to its store"


@pytest.mark.slow
def test_trials_through_the_submitit_local_launcher(tmp_path):
    run_app(
        tmp_path,
        *FAST,
        *FAST_SEARCH,
        "hydra/launcher=submitit_local",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2",
        multirun=True,
    )
    trials = optuna.load_study(study_name="taylorprune", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("taylorprune").experiment_id])
    (parent,) = [r.info.run_id for r in runs if r.data.tags["taylorprune.role"] == "study"]
    trial_runs = [r for r in runs if r.data.tags["taylorprune.role"] == "trial"]
    assert sorted(r.data.tags["taylorprune.trial"] for r in trial_runs) == ["0", "1"]
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parent}
    assert list(Path(tmp_path, "multirun").rglob(".submitit")), "the jobs ran as submitit jobs"


@pytest.mark.parametrize(
    "index,count,expected", [(0, 4, "cuda:0"), (5, 4, "cuda:1"), (3, 2, "cuda:1"), (7, 1, "cuda"), (7, 0, "cpu")]
)
def test_concurrent_trials_get_their_own_gpu(index, count, expected):
    assert job_device("auto", index, count) == expected
    assert job_device("cpu", index, count) == "cpu"


def test_the_slurm_launcher_example_composes():
    from hydra import compose, initialize_config_dir

    from sweeps.job.schemas import register_schemas

    register_schemas()

    with initialize_config_dir(config_dir=str(Path(__file__).parents[2] / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 120)
