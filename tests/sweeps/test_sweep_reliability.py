"""Studies that fail, get killed or run side by side: nothing left RUNNING, nothing lost, failures that fail.

Every wait here is on an event (a line of output, a run in the store, a process gone), with a
generous deadline that only a hung process reaches.
"""

import signal
import subprocess
import time

import mlflow
import optuna
import pytest
from optuna.distributions import IntDistribution

from optuna_sweep import is_gone
from prune_core import read_pruned
from sweeps.tracking.reaping import read_worker_tag
from tests.support.app import (
    FAST,
    FAST_SEARCH,
    LONG,
    all_runs,
    client,
    finish,
    run_app,
    running_trial_runs,
    start_app,
    trials,
    wait_for,
)

pytestmark = pytest.mark.slow


def test_a_killed_study_run_again_leaves_nothing_running(tmp_path):
    process = start_app(tmp_path, *LONG, "hydra.sweeper.n_trials=3")
    wait_for(lambda: running_trial_runs(tmp_path, 1), "a trial run to start")
    process.send_signal(signal.SIGKILL)
    finish(process)
    assert [t.state for t in trials(tmp_path)] == [optuna.trial.TrialState.RUNNING]  # what SIGKILL leaves
    again = run_app(tmp_path, *FAST, *FAST_SEARCH, "hydra.sweeper.n_trials=1", multirun=True)
    assert "its worker (pid" in again.stdout + again.stderr
    states = [t.state for t in trials(tmp_path)]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    statuses = sorted((r.data.tags["taylorprune.role"], r.info.status) for r in all_runs(tmp_path))
    assert statuses == [("study", "FINISHED"), ("study", "KILLED"), ("trial", "FINISHED"), ("trial", "KILLED")]


def test_sigterm_stops_the_study_and_its_joblib_workers(tmp_path):
    process = start_app(tmp_path, *LONG, "hydra/launcher=joblib", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2")
    started = wait_for(lambda: running_trial_runs(tmp_path, 2), "two trial runs to start")
    workers = [read_worker_tag(r.data.tags["taylorprune.worker"]) for r in started]
    assert {w["pid"] for w in workers} != {process.pid}, "the trials run in the launcher's worker processes"
    process.send_signal(signal.SIGTERM)
    output = finish(process)
    assert process.returncode != 0, output[-3000:]
    wait_for(lambda: all(is_gone(w) for w in workers), "the launcher's workers to end")
    assert [t.state for t in trials(tmp_path)] == [optuna.trial.TrialState.FAIL] * 2
    statuses = sorted((r.data.tags["taylorprune.role"], r.info.status) for r in all_runs(tmp_path))
    assert statuses == [("study", "KILLED"), ("trial", "KILLED"), ("trial", "KILLED")]


def test_a_trial_of_a_dead_worker_on_another_host_is_failed_by_heartbeats_and_retried(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the experiment made here keeps its artifacts in ./mlruns, as the app's would
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_interval=1)
    study = optuna.create_study(study_name="taylorprune", storage=storage, directions=["maximize", "maximize"])
    lost = study.ask(
        {
            "pruning.num_importance_score_iterations": IntDistribution(2, 10),
            "training.max_epochs": IntDistribution(1, 2),
        }
    )
    lost.set_user_attr("worker", {"host": "another-host", "pid": 1, "started": 0.0})
    storage.record_heartbeat(lost._trial_id)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("taylorprune")
    orphan = mlflow.start_run(
        run_name="trial 0",
        tags={"taylorprune.role": "trial", "taylorprune.study": "taylorprune", "taylorprune.trial": "0"},
    )
    mlflow.end_run("RUNNING")  # the other host's process died: nothing will end this run
    time.sleep(2.5)  # the heartbeat grows older than the grace period (2 x 1 s)
    run_app(
        tmp_path,
        *FAST,
        *FAST_SEARCH,
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.retry_failed_trials=1",
        multirun=True,
    )
    done = trials(tmp_path)
    assert [t.state for t in done] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert done[1].params == lost.params, "the reaped trial is run again with its parameters"
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(done[1]) == 0
    assert client(tmp_path).get_run(orphan.info.run_id).info.status == "KILLED"


RESUMABLE = [
    *FAST,
    "hydra.sweeper.params=null",
    "pruning.num_importance_score_iterations=int(interval(8, 10))",
    "data.num_samples=2000",
    "pruning.goal=0.6",
    "pruning.increment=0.1",
    "training.max_epochs=3",
    "hydra.sweeper.n_trials=1",
    "hydra.sweeper.heartbeat_interval=1",
    "hydra.sweeper.retry_failed_trials=1",
]


def logged_checkpoint(folder, iteration: int):
    """The RUNNING trial run, once it has logged the checkpoint of pruning ``iteration``."""
    for run in running_trial_runs(folder, 1) or []:
        if f"checkpoints/pruned_iteration_{iteration:03d}.pt" in {
            a.path for a in client(folder).list_artifacts(run.info.run_id, "checkpoints")
        }:
            return run
    return None


@pytest.mark.parametrize(
    "stop, left",
    [
        (signal.SIGKILL, [optuna.trial.TrialState.RUNNING]),  # killed in the middle: reaped when the study starts
        (signal.SIGTERM, [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]),  # pre-empted: asked again
    ],
)
def test_a_retried_trial_goes_on_from_the_last_checkpoint_of_its_killed_worker(tmp_path, stop, left):
    process = start_app(tmp_path, *RESUMABLE)
    killed = wait_for(lambda: logged_checkpoint(tmp_path, 2), "the trial's checkpoint of pruning iteration 2")
    process.send_signal(stop)
    finish(process)
    assert [t.state for t in trials(tmp_path)] == left
    again = run_app(tmp_path, *RESUMABLE, multirun=True)
    assert "Trial 0 goes on from its checkpoint of pruning iteration" in again.stdout + again.stderr
    done = trials(tmp_path)
    assert [t.state for t in done] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert done[1].params == done[0].params
    (run,) = [r for r in all_runs(tmp_path) if r.data.tags["taylorprune.role"] == "trial"]
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED", "the same run goes on"
    assert run.data.tags["taylorprune.trial"] == "1" and run.data.tags["taylorprune.resumed"].endswith("of trial 0")
    assert done[1].user_attrs["mlflow_run_id"] == run.info.run_id
    steps = [m.step for m in client(tmp_path).get_metric_history(run.info.run_id, "pruning/reduction")]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("taylorprune")
    table = mlflow.load_table("tables/pruning_history.json", run_ids=[run.info.run_id])
    assert sorted(steps) == table["iteration"].tolist() == list(range(len(table))), "every iteration exactly once"
    assert table["reduction"].iloc[-1] >= 0.6
    validations = [m.step for m in client(tmp_path).get_metric_history(run.info.run_id, "validation/loss")]
    assert len(set(validations)) == len(validations), "every validation once, the killed process's included"
    assert set(table["end_iteration"]) <= set(validations), "the validation ending every pruning iteration"


def test_two_studies_started_together_keep_their_trials_apart(tmp_path):
    processes = [start_app(tmp_path, *FAST, *FAST_SEARCH, "hydra.sweeper.n_trials=2") for _ in range(2)]
    outputs = [finish(p) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert [t.state for t in trials(tmp_path)] == [optuna.trial.TrialState.COMPLETE] * 4
    found = all_runs(tmp_path)
    parents = {r.info.run_id for r in found if r.data.tags["taylorprune.role"] == "study"}
    children = [r for r in found if r.data.tags["taylorprune.role"] == "trial"]
    assert len(parents) == 2 and [r.info.status for r in found] == ["FINISHED"] * 6
    assert sorted(int(r.data.tags["taylorprune.trial"]) for r in children) == [0, 1, 2, 3]
    by_parent = [sum(r.data.tags["mlflow.parentRunId"] == p for r in children) for p in parents]
    assert by_parent == [2, 2]
    assert len(list((tmp_path / "multirun").glob("*/*/optimization_results.yaml"))) == 2


def test_unreachable_tracking_server_fails_the_study_before_training(tmp_path):
    result = run_app(tmp_path, *FAST, *FAST_SEARCH, "tracking.uri=http://127.0.0.1:9", multirun=True, check=False)
    assert result.returncode != 0
    assert "Error: tracking.uri='http://127.0.0.1:9' cannot be reached" in result.stderr
    assert not (tmp_path / ".cache").exists() and not (tmp_path / "optuna.db").exists()


@pytest.mark.parametrize(
    "bad,message",
    [
        ("pruning.increment=0", "Error: pruning: increment must be a number in (0, 1], got 0"),
        ("training.mini_batch_size=-1", "Error: training: mini_batch_size must be a positive integer, got -1"),
        ("pruning.criterion=bogus", "Error: pruning: criterion 'bogus' is not supported"),
        (
            "pruning.normalization=l3",
            "Error: pruning: normalization 'l3' is not supported; use one of ('mean', 'l2', 'none')",
        ),
        ("pruning.goal=abc", "Value 'abc' of type 'str' could not be converted to Float\n    full_key: pruning.goal"),
        ("loss=cross-entropy", "Error: loss: loss 'cross-entropy' is not a known loss name"),
    ],
)
def test_a_bad_config_value_fails_before_any_work_and_leaves_nothing(tmp_path, bad, message):
    result = run_app(tmp_path, *FAST, *FAST_SEARCH, bad, multirun=True, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "no store, study, cache or run folder"


def test_a_searched_bad_value_fails_its_trial_before_loading_data(tmp_path):
    run_app(
        tmp_path,
        *FAST,
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.params=null",
        "hydra.sweeper.n_trials=2",
        "pruning.increment=choice(0.15,0)",
        multirun=True,
    )
    states = {t.params["pruning.increment"]: t.state for t in trials(tmp_path)}
    assert states == {0.15: optuna.trial.TrialState.COMPLETE, 0: optuna.trial.TrialState.FAIL}
    assert [r.data.tags["taylorprune.role"] for r in all_runs(tmp_path)].count("trial") == 1, "no run for it"


def test_a_study_whose_every_trial_failed_exits_non_zero_and_its_run_failed(tmp_path):
    result = run_app(
        tmp_path,
        *FAST,
        *FAST_SEARCH,
        "hydra.sweeper.n_trials=2",
        "base.checkpoint=/no/such/file.pt",
        multirun=True,
        check=False,
    )
    assert result.returncode != 0 and "every one of the 2 trials of this run failed" in result.stderr
    statuses = sorted((r.data.tags["taylorprune.role"], r.info.status) for r in all_runs(tmp_path))
    assert statuses == [("study", "FAILED")], "no trial run: each failed before it started"


def test_resumed_and_second_workers_get_new_parameters_with_a_fixed_seed(tmp_path):
    args = [
        *FAST,
        *FAST_SEARCH,
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.n_trials=1",
    ]
    run_app(tmp_path, *args, multirun=True)
    run_app(tmp_path, *args, multirun=True)  # resumed: 1 trial in the study at its start
    params = [tuple(sorted(t.params.items())) for t in trials(tmp_path)]
    assert len(params) == 2 and params[0] != params[1]
    for folder, worker in ((tmp_path / "w0", 0), (tmp_path / "w1", 1)):
        folder.mkdir()
        run_app(folder, *args, f"hydra.sweeper.worker_id={worker}", multirun=True)
    first = {f: [t.params for t in trials(tmp_path / f)] for f in ("w0", "w1")}
    assert first["w0"] != first["w1"], "workers with their own ids start apart"
    # the first run above had no worker id (worker 0) and an empty study, like w0: the same suggestion
    assert first["w0"] == [trials(tmp_path)[0].params], "the same seed, trial count and worker id reproduce it"


def test_non_finite_data_is_refused_before_training(tmp_path):
    result = run_app(
        tmp_path, "data=custom", "data._target_=tests.support.app.waves_with_nan", "model.classes=4", check=False
    )
    assert result.returncode != 0
    assert "x_train[5] holds a non-finite value" in result.stderr
    assert not (tmp_path / ".cache").exists()


def test_a_diverged_base_network_is_never_cached(tmp_path):
    result = run_app(tmp_path, *FAST, "base.training.initial_learn_rate=1e30", check=False)
    assert result.returncode != 0 and "the base network trained to non-finite weights" in result.stderr
    assert not list(tmp_path.glob(".cache/base_models/*.pt"))


def test_a_corrupt_cache_file_is_rebuilt(tmp_path):
    run_app(tmp_path, *FAST)
    (cached,) = tmp_path.glob(".cache/base_models/*.pt")
    cached.write_bytes(b"not a checkpoint")
    result = run_app(tmp_path, *FAST)
    assert "cannot be read" in result.stderr + result.stdout and "training it again" in result.stderr + result.stdout
    assert read_pruned(cached)[1], "a readable network replaced the corrupt file"
    assert [r.info.status for r in all_runs(tmp_path)] == ["FINISHED", "FINISHED"]


def test_a_study_whose_disk_fills_says_so_in_one_line_and_resumes_once_there_is_room(small_disk):
    disk = small_disk(3)  # room for the stores and about one trial
    failed = run_app(disk, *FAST, *FAST_SEARCH, "hydra.sweeper.n_trials=8", multirun=True, check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0, output[-3000:]
    said = f"No space left on device while writing {disk}/"
    raised = [line for line in failed.stderr.splitlines() if line.startswith(f"RuntimeError: {said}")]
    assert raised and "run the same command again to resume it" in raised[0], failed.stderr[-3000:]  # the study's error
    logged = [line for line in output.splitlines() if line.startswith("[") and said in line]
    assert logged, output[-3000:]  # a log line of its own, before the stores' long messages
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    run_app(disk, *FAST, *FAST_SEARCH, "hydra.sweeper.n_trials=1", multirun=True)
    states = [t.state for t in trials(disk)]
    assert optuna.trial.TrialState.RUNNING not in states and states[-1] == optuna.trial.TrialState.COMPLETE, states
    assert "RUNNING" not in {r.info.status for r in all_runs(disk)}
