"""``python -m sweeps.run`` and ``-m``: single runs, studies, resuming, failures, samplers, MLflow contents."""

import json
import signal
from pathlib import Path

import mlflow
import optuna
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from analysis import choose, load_experiment, pareto_front
from optuna_sweep import front_hypervolume
from tests.support.app import (
    FAST,
    FAST_LOGGING_ALL,
    FAST_SEARCH,
    LONG,
    finish,
    run_app,
    running_trial_runs,
    start_app,
    wait_for,
)

pytestmark = pytest.mark.slow


def store(tmp_path: Path) -> MlflowClient:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return MlflowClient()


def runs(client: MlflowClient, experiment: str = "taylorprune"):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000)


def study(tmp_path: Path, name: str = "taylorprune", storage: str | None = None) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage or f"sqlite:///{tmp_path / 'optuna.db'}")


def test_single_run_logs_everything_and_caches_the_base(tmp_path):
    out = run_app(tmp_path, *FAST_LOGGING_ALL, fresh=True).stdout  # started as a user starts it
    assert "Compressed network has" in out and f"mlflow ui --backend-store-uri sqlite:///{tmp_path}" in out
    client = store(tmp_path)
    (run,) = runs(client)
    run_id = run.info.run_id
    mlflow.set_experiment("taylorprune")
    assert run.info.status == "FINISHED" and run.data.tags["taylorprune.role"] == "single"
    kind = client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"]
    assert kind == "custom_model_development", "the UI opens the experiment on model training"
    assert run.info.run_name == "reference_cnn1d on mnist1d, goal 0.3"
    params = run.data.params
    assert params["pruning.goal"] == "0.3" and params["model._target_"] == "sweeps.builders.models.reference_cnn1d"
    table = mlflow.load_table("tables/pruning_history.json", run_ids=[run_id])
    history = sorted(client.get_metric_history(run_id, "pruning/reduction"), key=lambda m: m.step)
    assert [m.step for m in history] == table["iteration"].tolist() and table["reduction"].iloc[-1] >= 0.3
    stamps = [m.timestamp for m in history]  # logged live, as each iteration happened
    assert stamps == sorted(stamps) and stamps[-1] > stamps[0]
    train_stamps = [m.timestamp for m in client.get_metric_history(run_id, "train/loss")]
    assert max(train_stamps) > min(train_stamps)  # when each step happened, not one time for all
    training = mlflow.load_table("tables/training_history.json", run_ids=[run_id])
    assert len(client.get_metric_history(run_id, "train/loss")) == len(training) > 10
    assert {"validation/accuracy", "pruning/validation_accuracy"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"tables", "hydra", "checkpoints", "model_safe", "pruning_progress.png"} <= artifacts
    checkpoints = client.list_artifacts(run_id, "checkpoints")
    assert len(checkpoints) == len(table) - 1
    (model,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert model.source_run_id == run_id and model.params == params
    returned = int(run.data.tags["taylorprune.returned_iteration"])
    assert [(o.model_id, o.step) for o in run.outputs.model_outputs] == [(model.model_id, returned)]
    own = {(m.key, m.step): m.value for m in model.metrics}  # the returned network's values, nothing else
    assert own[("reduction", 0)] == run.data.metrics["reduction"] == pytest.approx(table["reduction"].iloc[returned])
    assert {key for key, _ in own} == {"validation_accuracy", "reduction", "learnables", "macs", "macs_reduction"} | {
        c for c in table.columns if c.startswith("validation_")
    }
    assert mlflow.models.get_model_info(model.model_uri).run_id == run_id  # in its MLmodel file, too
    logged_tables = json.loads(run.data.tags["mlflow.loggedArtifacts"])
    assert sorted(t["path"] for t in logged_tables) == [
        f"tables/{n}_history.json" for n in ("pruning", "training", "validation")
    ]
    loaded = mlflow.pytorch.load_model(model.model_uri)
    assert loaded(torch.zeros(2, 1, 40)).shape == (2, 10)
    # what MLflow's serving would do with the logged input example (log_model no longer checks it per trial)
    served = mlflow.pyfunc.load_model(model.model_uri)
    example = served.input_example
    assert example.shape[1:] == (1, 40) and served.predict(example).shape == (example.shape[0], 10)
    again = run_app(tmp_path, *FAST, "pruning.goal=0.2").stdout
    assert "Base network: cache" in again and len(runs(client)) == 2


def test_study_resumes_and_continues_trial_numbers(tmp_path):
    args = [*FAST_LOGGING_ALL, *FAST_SEARCH, "hydra.sweeper.n_trials=2"]
    run_app(tmp_path, *args, multirun=True)
    out = run_app(tmp_path, *args, multirun=True).stdout
    assert "#/experiments/1/runs" in out
    trials = study(tmp_path).trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE and len(t.values) == 2 for t in trials)
    all_runs = runs(store(tmp_path))
    parents = [r for r in all_runs if r.data.tags["taylorprune.role"] == "study"]
    children = [r for r in all_runs if r.data.tags["taylorprune.role"] == "trial"]
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)
    for parent in parents:  # the parent run summarises its study
        assert parent.data.params["sampler"] == "optuna.samplers.TPESampler"
        assert parent.data.params["n_trials"] == "2"
        assert parent.data.params["search/training.max_epochs"] == "range(1, 3)"
        plots = {a.path for a in MlflowClient().list_artifacts(parent.info.run_id, "optuna")}
        # an importance plot is skipped (with a warning) where an objective took one value in every trial
        assert "optuna/pareto_front.html" in plots and plots <= {
            "optuna/pareto_front.html",
            "optuna/param_importances_validation_accuracy.html",
            "optuna/param_importances_reduction.html",
        }
        assert "pareto_front.png" in {a.path for a in MlflowClient().list_artifacts(parent.info.run_id)}
    last = max(parents, key=lambda p: p.info.start_time)  # four trials in its study: objectives that vary
    first = min(parents, key=lambda p: p.info.start_time)
    for parent, numbers in ((first, [0, 1]), (last, [2, 3])):  # the study's progress, one point per trial
        history = MlflowClient().get_metric_history(parent.info.run_id, "hypervolume")
        assert sorted(m.step for m in history) == numbers
        volumes = [m.value for m in sorted(history, key=lambda m: m.step)]
        assert volumes == sorted(volumes) and volumes[0] > 0, "a front only grows"
    assert volumes[-1] == pytest.approx(front_hypervolume(study(tmp_path), [0.0, 0.0]))
    assert any(
        a.path.startswith("optuna/param_importances_")
        for a in MlflowClient().list_artifacts(last.info.run_id, "optuna")
    )
    models = mlflow.search_logged_models(experiment_ids=[children[0].info.experiment_id], output_format="list")
    assert sorted(m.name for m in models) == ["trial-0", "trial-1", "trial-2", "trial-3"]
    assert sorted(int(c.data.tags["taylorprune.trial"]) for c in children) == [0, 1, 2, 3]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {p.info.run_id for p in parents}
    assert {c.data.tags["taylorprune.sampler"] for c in children} == {"optuna.samplers.TPESampler"}
    results = sorted((tmp_path / "multirun").rglob("optimization_results.yaml"))
    assert len(results) == 2
    front = yaml.safe_load(results[-1].read_text())["best_trials"]
    assert front and all(set(row) == {"number", "values", "params", "user_attrs"} for row in front)
    assert yaml.safe_load(results[-1].read_text())["metric_names"] == ["validation_accuracy", "reduction"]
    run_ids = {r.info.run_id for r in all_runs}
    assert all(t.user_attrs["mlflow_run_id"] in run_ids for t in trials)
    assert study(tmp_path).metric_names == ["validation_accuracy", "reduction"]
    assert set(front[0]["params"]) == {"pruning.num_importance_score_iterations", "training.max_epochs"}


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path):
    run_app(
        tmp_path,
        *FAST,
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.params=null",
        "hydra.sweeper.n_trials=2",
        "pruning.criterion=choice(taylor,bogus)",
        multirun=True,
    )
    states = {t.params["pruning.criterion"]: t.state for t in study(tmp_path).trials}
    assert states == {"taylor": optuna.trial.TrialState.COMPLETE, "bogus": optuna.trial.TrialState.FAIL}
    statuses = sorted(r.info.status for r in runs(store(tmp_path)) if r.data.tags["taylorprune.role"] == "trial")
    assert statuses == ["FINISHED"], "the bogus criterion failed its configuration check, before any run"
    (parent,) = [r for r in runs(store(tmp_path)) if r.data.tags["taylorprune.role"] == "study"]
    history = MlflowClient().get_metric_history(parent.info.run_id, "hypervolume")
    assert sorted(m.step for m in history) == [0, 1], "the failed trial has its point too"
    assert not MlflowClient().list_artifacts(parent.info.run_id, "optuna"), "tracking.study_plots=false (FAST)"


def test_max_failure_rate_stops_a_broken_study(tmp_path):
    result = run_app(
        tmp_path,
        *FAST,
        "hydra.sweeper.params=null",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.max_failure_rate=0.5",
        "pruning.criterion=choice(bogus,wrong)",
        multirun=True,
        check=False,
    )
    assert result.returncode != 0
    assert "more than hydra.sweeper.max_failure_rate=0.5" in result.stderr
    assert [t.state for t in study(tmp_path).trials] == [optuna.trial.TrialState.FAIL]


def test_constrained_single_objective_with_other_samplers_and_journal_storage(tmp_path):
    run_app(
        tmp_path,
        *FAST,
        *FAST_SEARCH,
        "sweep=max_reduction",
        "sweep.constraints.validation_accuracy=15",
        "hydra/sweeper/sampler=nsgaii",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.storage=journal:./journal.log",
        "hydra.sweeper.study_name=constrained",
        multirun=True,
    )
    trials = study(
        tmp_path,
        "constrained",
        optuna.storages.journal.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))
        ),
    ).trials
    assert len(trials) == 2 and all(len(t.values) == 1 and t.values[0] > 0.29 for t in trials)
    assert all(t.user_attrs["constraints"][0] < 0 for t in trials), "accuracy stays above the 15% floor"
    for sampler in ("random", "gp"):
        run_app(
            tmp_path,
            *FAST,
            *FAST_SEARCH,
            f"hydra/sweeper/sampler={sampler}",
            "hydra.sweeper.n_trials=1",
            f"hydra.sweeper.study_name={sampler}",
            "hydra.sweeper.sampler.seed=3",
            multirun=True,
        )
        assert study(tmp_path, sampler).trials[0].state == optuna.trial.TrialState.COMPLETE


def test_user_dataset_and_model_through_target(tmp_path):
    run_app(
        tmp_path,
        "data=custom",
        "data._target_=tests.support.app.waves",
        "model=deeper_cnn1d",
        "model.width=8",
        "model.depth=2",
        "model.classes=4",
        "base.training.max_epochs=5",
        "pruning.goal=0.3",
        "pruning.increment=0.15",
        "export.latency=false",
    )
    (run,) = runs(store(tmp_path))
    assert run.data.params["data._target_"] == "tests.support.app.waves"
    assert run.data.metrics["pruning/reduction"] >= 0.3


@pytest.mark.parametrize(
    "args,multirun,message",
    [
        (["model=nonexistent"], False, "Could not find 'model/nonexistent'"),
        (["tracking.uri=http://127.0.0.1:9"], False, "tracking.uri='http://127.0.0.1:9' cannot be reached"),
        (
            ["hydra.sweeper.params={pruning.increment: '0.1'}"],
            True,
            "hydra.sweeper.params must hold sweeps, but 'pruning.increment=0.1' is a single value",
        ),
        (["pruning.increment=0.1"], True, "pruning.increment is both fixed on the command line"),
        (
            ["hydra.sweeper.storage=sqlite:////no/such/dir/o.db"],
            True,
            "hydra.sweeper.storage='sqlite:////no/such/dir/o.db' cannot be opened",
        ),
        (
            ["data=custom", "data._target_=tests.support.app.train_only", "pruning.validation_threshold=80"],
            False,
            "pruning.validation_threshold=80 needs validation data",
        ),
        (
            ["data=custom", "data._target_=tests.support.app.train_only"],
            False,
            "sweep objectives/constraints ['validation_accuracy'] need validation data",
        ),
        (
            [
                "hydra.sweeper.params={pruning.validation_threshold: 'interval(80, 90)'}",
                "data=custom",
                "data._target_=tests.support.app.train_only",
                "hydra.sweeper.n_trials=1",
            ],
            True,
            "needs validation data",
        ),
    ],
)
def test_bad_input(tmp_path, args, multirun, message):
    result = run_app(tmp_path, *args, multirun=multirun, check=False)
    assert message in result.stderr + result.stdout
    assert not (tmp_path / ".cache").exists(), "nothing was trained"


@pytest.mark.parametrize("moment", ["first iteration", "later"])
def test_ctrl_c_stops_the_study_and_leaves_it_consistent(tmp_path, moment):
    # trials long enough (about 20 s) to be interrupted in the middle of one; the first iteration is
    # where an interrupt once came out of the job as a plain failure, and the study went on
    process = start_app(tmp_path, *LONG, "hydra.sweeper.n_trials=3")
    (run,) = wait_for(lambda: running_trial_runs(tmp_path, 1), "a trial run to start")
    if moment == "later":
        wait_for(
            lambda: len(store(tmp_path).get_metric_history(run.info.run_id, "pruning/reduction")) >= 3,
            "two pruning iterations",
        )
    process.send_signal(signal.SIGINT)
    output = finish(process)
    assert process.returncode != 0, output[-3000:]
    states = [t.state for t in study(tmp_path).trials]
    assert states == [optuna.trial.TrialState.FAIL], "the study stopped at once: no further trial"
    statuses = {r.data.tags["taylorprune.role"]: r.info.status for r in runs(store(tmp_path))}
    assert statuses == {"trial": "KILLED", "study": "KILLED"}


def test_parallel_trials_through_the_joblib_launcher_in_slots_that_never_wait(tmp_path):
    """Three trials of clearly different lengths (1, 4 and 12 fine-tuning epochs), two at a time: the third
    starts as soon as the shorter of the first two ends, while the longer still runs (a batch would wait)."""
    run_app(
        tmp_path,
        *FAST,
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.params=null",
        "training.max_epochs=choice(1,4,12)",
        "hydra/launcher=joblib",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=3",
        multirun=True,
    )
    first, second, third = sorted(study(tmp_path).trials, key=lambda t: t.datetime_start)
    assert [t.state for t in (first, second, third)] == [optuna.trial.TrialState.COMPLETE] * 3
    assert third.datetime_start < max(first.datetime_complete, second.datetime_complete)
    trials = [r for r in runs(store(tmp_path)) if r.data.tags["taylorprune.role"] == "trial"]
    assert sorted(r.data.tags["taylorprune.trial"] for r in trials) == ["0", "1", "2"]


@pytest.mark.parametrize("form", ["safe", "state_dict"])
def test_base_checkpoint_from_the_user(tmp_path, form):
    from prune_core import save_pruned
    from sweeps.builders.models import small_cnn2d

    torch.manual_seed(0)
    net = small_cnn2d(width=8)
    path = tmp_path / f"mine_{form}.pt"
    if form == "safe":
        save_pruned(net, path)
    else:
        torch.save(net.state_dict(), path)
    out = run_app(
        tmp_path,
        "data=digits",
        "model=small_cnn2d",
        "model.width=8",
        f"base.checkpoint={path}",
        "pruning.goal=0.2",
        "pruning.increment=0.2",
        "export.latency=false",
    ).stdout
    assert f"Base network: checkpoint {path}" in out and not (tmp_path / ".cache").exists()
    (run,) = runs(store(tmp_path))
    mlflow.set_experiment("taylorprune")
    history = mlflow.load_table("tables/pruning_history.json", run_ids=[run.info.run_id])
    assert history["learnables"].iloc[0] == sum(p.numel() for p in net.parameters())


def test_digits_with_the_small_resnet_preset(tmp_path):
    out = run_app(
        tmp_path,
        "+experiment=digits_resnet",
        "base.training.max_epochs=2",
        "pruning.goal=0.2",
        "pruning.increment=0.2",
        "export.latency=false",  # measured in test_onnx_export; the preset's ONNX export is checked here
    ).stdout
    assert "Compressed network has" in out
    (run,) = runs(store(tmp_path), "taylorprune-digits-resnet")
    assert run.data.params["model._target_"] == "sweeps.builders.models.small_resnet"


def test_the_run_table_shows_the_returned_network_when_trials_cross_their_threshold(tmp_path):
    # accuracy must stay above 99.9%: every trial crosses at its first pruning iteration and returns the unpruned one
    run_app(
        tmp_path, *FAST, *FAST_SEARCH, "hydra.sweeper.n_trials=2", "pruning.validation_threshold=99.9", multirun=True
    )
    trials = {t.number: t for t in study(tmp_path).trials}
    client = store(tmp_path)
    checked = 0
    for run in runs(client):
        if run.data.tags["taylorprune.role"] != "trial":
            continue
        trial = trials[int(run.data.tags["taylorprune.trial"])]
        metrics = run.data.metrics  # what the MLflow UI's run table and compare view show
        assert run.data.tags["taylorprune.returned_iteration"] == "0"
        assert (metrics["validation_accuracy"], metrics["reduction"]) == pytest.approx(tuple(trial.values))
        assert metrics["reduction"] == 0.0 < metrics["pruning/reduction"]  # the latest step is the rejected network
        checked += 1
    assert checked == 2
    table = load_experiment("taylorprune", f"sqlite:///{tmp_path / 'mlflow.db'}").table
    assert table.loc[table["iteration"] == 1, "rejected"].all() and not table.loc[table["returned"], "rejected"].any()
    assert not pareto_front(table)["rejected"].any()
    assert pareto_front(table, include_rejected=True)["rejected"].any()
    with pytest.raises(ValueError, match="no row with a checkpoint reaches a reduction of 0.1"):
        choose(table, min_reduction=0.1)


def test_a_diverged_run_shows_the_network_it_returned(tmp_path):
    run_app(tmp_path, *FAST, "training.solver=sgdm", "training.initial_learn_rate=1e6")
    (run,) = runs(store(tmp_path))
    assert run.data.tags["taylorprune.stop_reason"] == "Training loss is not finite."
    returned = int(run.data.tags["taylorprune.returned_iteration"])
    mlflow.set_experiment("taylorprune")
    table = mlflow.load_table("tables/pruning_history.json", run_ids=[run.info.run_id])
    row = table.loc[table["iteration"] == returned].iloc[0]
    assert run.data.metrics["reduction"] == pytest.approx(row["reduction"])  # what Optuna would record
    assert run.data.metrics["pruning/reduction"] > run.data.metrics["reduction"]  # the diverged step
