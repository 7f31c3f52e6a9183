"""Optuna's pruners: intermediate values per pruning iteration, a PRUNED trial, and the refusals."""

from __future__ import annotations

import mlflow
import optuna
import pytest

from analysis import load_experiment
from tests.support.app import FAST, run_app

# One searched dimension, fixed per invocation, so the pruned trial is known in advance: the first
# invocation removes 30% per iteration, the second 10%, and the median pruner (after one trial)
# stops the second at its first iteration, where its reduction is below the first's.
ONE_TRIAL = [
    "sweep=max_reduction",
    "sweep.constraints={}",
    "hydra.sweeper.params=null",
    "hydra.sweeper.n_trials=1",
    "hydra.sweeper.pruner=median",
    "+hydra.sweeper.pruner_options.n_startup_trials=1",
    "pruning.goal=0.6",
    "training.max_epochs=1",
]


@pytest.mark.slow
def test_a_trial_the_pruner_stops_ends_pruned_with_a_finished_tagged_run_and_usable_checkpoints(tmp_path):
    fast = [o for o in FAST if not o.startswith(("pruning.goal", "pruning.increment"))]
    run_app(tmp_path, *fast, *ONE_TRIAL, "pruning.increment=interval(0.3, 0.3)", multirun=True)
    run_app(tmp_path, *fast, *ONE_TRIAL, "pruning.increment=interval(0.1, 0.1)", multirun=True)
    study = optuna.load_study(study_name="taylorprune", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    first, second = study.trials
    assert first.state == optuna.trial.TrialState.COMPLETE
    assert first.intermediate_values == {0: 0.0, 1: pytest.approx(0.3, abs=0.03), 2: pytest.approx(0.6, abs=0.06)}
    assert second.state == optuna.trial.TrialState.PRUNED
    assert list(second.intermediate_values) == [0, 1] and second.intermediate_values[1] < 0.2
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mlflow.get_run(second.user_attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["taylorprune.pruned"] == "at pruning iteration 1"
    assert run.data.tags["taylorprune.stop_reason"] == "Stopped by output function."
    assert "pruned" not in mlflow.get_run(first.user_attrs["mlflow_run_id"]).data.tags.get("taylorprune.pruned", "")
    table = load_experiment("taylorprune", f"sqlite:///{tmp_path / 'mlflow.db'}").table
    rows = table[table["trial"] == second.number]
    assert rows["pruned"].all() and not table.loc[table["trial"] == first.number, "pruned"].any()
    kept = rows[rows["returned"]]
    assert kept["iteration"].tolist() == [1] and kept["checkpoint"].tolist() == ["checkpoints/pruned_iteration_001.pt"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["hydra.sweeper.pruner=median"],
            "Optuna prunes single-objective studies only, and this study has 2 objectives",
        ),
        (["hydra.sweeper.pruner=medain"], "hydra.sweeper.pruner='medain' is not supported; use one of"),
        (
            ["sweep=max_reduction", "hydra.sweeper.pruner=median", "+hydra.sweeper.pruner_options.n_startup=1"],
            "hydra.sweeper.pruner_options={'n_startup': 1} do not fit MedianPruner",
        ),
    ],
)
def test_a_pruner_the_study_cannot_use_is_refused_before_any_trial(tmp_path, overrides, message):
    result = run_app(
        tmp_path,
        *FAST,
        "hydra.sweeper.params=null",
        "pruning.increment=interval(0.3, 0.3)",
        *overrides,
        multirun=True,
        check=False,
    )
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / ".cache").exists()
