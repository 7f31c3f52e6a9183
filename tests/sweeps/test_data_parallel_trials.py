"""Trials on two processes each (``training.distributed=auto``), launched as SLURM would launch them, by
submitit's local launcher with ``tasks_per_node=2``, on a gloo group: one MLflow run and one Optuna trial per
trial, rank 0's; a rank killed in the middle of a fine-tuning fails its trial and leaves nothing RUNNING."""

from __future__ import annotations

import signal
from pathlib import Path

import optuna
import psutil
import pytest
from hydra import compose, initialize_config_dir

from sweeps.job.schemas import register_schemas
from tests.support.app import (
    FAST,
    FAST_SEARCH,
    all_runs,
    finish,
    run_app,
    running_trial_runs,
    start_app,
    trials,
    wait_for,
)

pytestmark = pytest.mark.slow
TWO_RANKS = ["hydra/launcher=local_ddp", "hydra.launcher.tasks_per_node=2", "training.distributed=auto"]


def test_a_study_whose_trials_run_on_two_processes_each(tmp_path: Path) -> None:
    run_app(tmp_path, *FAST, *FAST_SEARCH, *TWO_RANKS, "hydra.sweeper.n_trials=2", multirun=True)
    done = trials(tmp_path)
    assert [t.state for t in done] == [optuna.trial.TrialState.COMPLETE] * 2
    runs = [r for r in all_runs(tmp_path) if r.data.tags["taylorprune.role"] == "trial"]
    assert sorted(r.data.tags["taylorprune.trial"] for r in runs) == ["0", "1"], "one MLflow run per trial"
    assert {r.data.tags["taylorprune.processes"] for r in runs} == {"2"}, "each ran on two processes"
    assert {r.info.status for r in runs} == {"FINISHED"}
    for trial in done:  # the trial's values are those its run logged
        (run,) = [r for r in runs if r.info.run_id == trial.user_attrs["mlflow_run_id"]]
        assert trial.values[1] == pytest.approx(run.data.metrics["pruning/reduction"])
    logs = sorted(p.name for p in tmp_path.joinpath("multirun").rglob("*_log.err"))
    assert len(logs) == 4 and {name.split("_")[1] for name in logs} == {"0", "1"}, "ranks 0 and 1 of each trial"


def _rank(number: int, folder: Path) -> psutil.Process | None:
    """The process of rank ``number`` of the job running now in ``folder``."""
    for process in psutil.process_iter():
        try:
            if process.environ().get("SUBMITIT_LOCAL_GLOBALID") == str(number) and process.cwd() == str(folder):
                return process
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def test_a_killed_rank_fails_its_trial_and_leaves_nothing_running(tmp_path: Path) -> None:
    process = start_app(
        tmp_path,
        *FAST,
        *TWO_RANKS,
        "hydra.sweeper.params=null",
        "pruning.num_importance_score_iterations=int(interval(2, 10))",
        "hydra.sweeper.n_trials=1",
        "training.max_epochs=200",  # a fine-tuning that outlasts the kill
    )
    wait_for(lambda: running_trial_runs(tmp_path, 1), "the trial's run")
    rank_one = wait_for(lambda: _rank(1, tmp_path), "rank 1 of the trial")
    rank_one.send_signal(signal.SIGKILL)
    output = finish(process)
    assert process.returncode != 0, output[-3000:]
    assert [t.state for t in trials(tmp_path)] == [optuna.trial.TrialState.FAIL], output[-3000:]
    (run,) = [r for r in all_runs(tmp_path) if r.data.tags["taylorprune.role"] == "trial"]
    assert run.info.status == "FAILED"
    assert {r.info.status for r in all_runs(tmp_path)} <= {"FINISHED", "FAILED"}, "nothing left RUNNING"


def test_the_data_parallel_launchers_compose() -> None:
    register_schemas()
    with initialize_config_dir(config_dir=str(Path(__file__).parents[2] / "conf"), version_base="1.3"):
        slurm = compose("config", overrides=["hydra/launcher=slurm_ddp"], return_hydra_config=True)
        local = compose(
            "config", overrides=[*TWO_RANKS[:1], "hydra.launcher.tasks_per_node=4"], return_hydra_config=True
        )
    launcher = slurm.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 8 and launcher.nodes == 1
    assert slurm.training.distributed == "auto"
    assert local.hydra.launcher.gpus_per_node == 4, "one GPU per task"
