"""analysis: Pareto fronts against brute force, choosing a level, and the CLI and notebooks on a real sweep."""

import os
from unittest.mock import patch

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

from analysis import choose, load_choice, load_experiment, pareto_front, run_config, validation_accuracy
from analysis.pareto import fronts_by
from tests.support.app import FAST, FAST_SEARCH, ROOT, run_analysis, run_app


def dominated(a: np.ndarray, b: np.ndarray, i: int) -> bool:
    return bool(np.any((a >= a[i]) & (b >= b[i]) & ((a > a[i]) | (b > b[i]))))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("maximize", [(True, True), (True, False), (False, True), (False, False)])
def test_pareto_front_matches_brute_force(seed, maximize):
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"x": rng.integers(0, 12, 200).astype(float), "y": rng.integers(0, 12, 200).astype(float)})
    a = table["x"].to_numpy() * (1 if maximize[0] else -1)
    b = table["y"].to_numpy() * (1 if maximize[1] else -1)
    expected = {i for i in range(len(table)) if not dominated(a, b, i)}
    front = pareto_front(table, "x", "y", maximize)
    got = set(front.index)
    # among identical points the front keeps one: compare the set of (x, y) values
    assert {tuple(table.loc[i]) for i in got} == {tuple(table.loc[i]) for i in expected}
    assert front["x"].is_monotonic_increasing


def test_fronts_by_and_bad_columns():
    table = pd.DataFrame(
        {"reduction": [0.1, 0.5, 0.2, 0.6], "validation_accuracy": [97, 95, 96, 90], "lr": [1, 1, 2, 2]}
    )
    assert fronts_by(table, "lr").index.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="column 'accuracy' is not in the table"):
        pareto_front(table, y="accuracy")


def test_choose_rules():
    table = pd.DataFrame(
        {
            "run_id": ["a"] * 4 + ["b"] * 3,
            "trial": [0] * 4 + [1] * 3,
            "iteration": [0, 1, 2, 3, 0, 1, 2],
            "reduction": [0, 0.3, 0.6, 0.9, 0, 0.5, 0.7],
            "validation_accuracy": [97.0, 97.2, 96.5, 90.0, 96.0, 95.5, 94.0],
            "checkpoint": [None, "c", "c", "c", None, "c", "c"],
        }
    )
    assert choose(table, max_drop=1.0)[["run_id", "iteration"]].tolist() == ["a", 2]
    assert choose(table, max_drop=2.5)[["run_id", "iteration"]].tolist() == ["b", 2]
    assert choose(table, min_reduction=0.5)[["run_id", "iteration"]].tolist() == ["a", 2]
    with pytest.raises(ValueError, match="give exactly one rule"):
        choose(table)
    with pytest.raises(
        ValueError, match="metric 'validation_f1' is not logged; logged metrics: \\['validation_accuracy'\\]"
    ):
        choose(table, max_drop=1.0, metric="validation_f1")
    with pytest.raises(ValueError, match="no row with a checkpoint reaches a reduction of 0.95"):
        choose(table, min_reduction=0.95)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real study in a scratch folder: 2 trials, resumed for 1 more, plus a failing trial of another study."""
    folder = tmp_path_factory.mktemp("analysis_sweep")
    for trials in (2, 1):
        run_app(
            folder,
            *FAST,
            *FAST_SEARCH,
            f"hydra.sweeper.n_trials={trials}",
            "hydra.sweeper.sampler.seed=1",
            multirun=True,
        )
    failed = run_app(
        folder,
        *FAST,
        "hydra.sweeper.params=null",
        "hydra.sweeper.study_name=broken",
        "pruning.layer_names=choice(no_such_layer)",
        "hydra.sweeper.n_trials=1",
        multirun=True,
        check=False,
    )
    assert failed.returncode != 0, "a study whose every trial failed fails"
    return folder, f"sqlite:///{folder / 'mlflow.db'}"


@pytest.mark.slow
def test_load_experiment_one_row_per_trial_and_iteration(sweep):
    folder, uri = sweep
    experiment = load_experiment("taylorprune", uri)
    table = experiment.table
    assert sorted(table["trial"].unique()) == [0, 1, 2], "three finished trials over two invocations"
    assert experiment.unfinished == {"FAILED": 1}
    searched = {"pruning.num_importance_score_iterations", "training.max_epochs"}
    assert "pruning.num_importance_score_iterations" in experiment.hyperparameters
    assert set(experiment.hyperparameters) <= searched, "only what differs between runs"
    for name in experiment.hyperparameters:
        assert pd.api.types.is_numeric_dtype(table[name]), name
    per_run = table.groupby("run_id")["iteration"].agg(list)
    assert all(steps == list(range(len(steps))) for steps in per_run)
    assert table.loc[table["iteration"] > 0, "checkpoint"].notna().all()
    assert table.groupby("run_id")["returned"].sum().eq(1).all()
    assert {"validation_accuracy", "validation_loss"} <= set(experiment.metrics)


@pytest.mark.slow
def test_chosen_checkpoint_loads_and_scores_as_logged(sweep):
    folder, uri = sweep
    table = load_experiment("taylorprune", uri).table
    row = choose(table, max_drop=50.0)
    model = load_choice(row, uri)
    assert sum(p.numel() for p in model.parameters()) == row["learnables"]
    assert validation_accuracy(model, run_config(row["run_id"], uri)) == pytest.approx(row["validation_accuracy"])


@pytest.mark.slow
def test_cli_writes_figures_tables_and_the_choice(sweep, tmp_path):
    folder, uri = sweep
    out = tmp_path / "out"
    result = run_analysis(
        tmp_path, "--experiment", "taylorprune", "--tracking-uri", uri, "--out", str(out), "--max-drop", "50"
    )
    assert result.returncode == 0, result.stderr
    assert "Chosen (at most 50.0 points below the unpruned network): trial" in result.stdout
    assert {p.name for p in out.iterdir()} == {
        "table.csv",
        "pareto_front.csv",
        "front.png",
        "trajectories.png",
        "hyperparameters.png",
        "progress.png",
    }
    assert all((out / name).stat().st_size > 10_000 for name in ("front.png", "trajectories.png"))
    assert len(pd.read_csv(out / "table.csv")) == len(load_experiment("taylorprune", uri).table)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,message",
    [
        (["--experiment", "nope"], "experiment 'nope' does not exist at sqlite:///"),
        (["--experiment", "taylorprune", "--metric", "validation_f1"], "metric 'validation_f1' is not logged"),
        (
            ["--experiment", "taylorprune", "--tracking-uri", "http://127.0.0.1:9"],
            "tracking URI 'http://127.0.0.1:9' cannot be reached",
        ),
        (["--experiment", "taylorprune", "--tracking-uri", "sqlite:////no/such/mlflow.db"], "there is no MLflow store"),
    ],
)
def test_cli_bad_input(sweep, args, message, tmp_path):
    folder, uri = sweep
    if "--tracking-uri" not in args:
        args = [*args, "--tracking-uri", uri]
    result = run_analysis(tmp_path, *args)
    assert result.returncode == 2 and message in result.stderr
    if args[1] == "nope":
        assert "experiments there: " in result.stderr and "'taylorprune'" in result.stderr


@pytest.mark.slow
def test_experiment_without_finished_trials(sweep, tmp_path):
    folder, _ = sweep
    scratch = tmp_path / "only_failures"
    scratch.mkdir()
    run_app(
        scratch,
        *FAST,
        "hydra.sweeper.params=null",
        "pruning.layer_names=choice(no_such_layer)",
        "hydra.sweeper.n_trials=1",
        multirun=True,
        check=False,
    )
    with pytest.raises(ValueError, match="experiment 'taylorprune' has no finished trials .*FAILED"):
        load_experiment("taylorprune", f"sqlite:///{scratch / 'mlflow.db'}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pareto_front.ipynb", "sweep_insights.ipynb"])
def test_notebooks_run_end_to_end(sweep, name):
    folder, uri = sweep
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "stored with outputs"
    env = {
        "TAYLORPRUNE_EXPERIMENT": "taylorprune",
        "MLFLOW_TRACKING_URI": uri,
        "TAYLORPRUNE_OPTUNA_STORAGE": f"sqlite:///{folder / 'optuna.db'}",
        "PYTHONPATH": str(ROOT),
    }
    with patch.dict(os.environ, env):  # the kernel inherits this environment
        NotebookClient(
            notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
        ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the figures are drawn"
    if name == "sweep_insights.ipynb":  # importances per objective, under the study's metric names
        importances = next(o["data"]["text/plain"] for o in notebook.cells[4]["outputs"] if "data" in o)
        assert "'validation_accuracy': {" in importances and "'reduction': {" in importances
