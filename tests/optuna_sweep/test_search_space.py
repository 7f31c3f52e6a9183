"""Hydra's sweep grammar mapped to Optuna distributions; the sweeper's own checks."""

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from optuna_sweep import as_override, check_resumable, grid, open_storage, search_space, split_result


@pytest.mark.parametrize(
    "expression,expected",
    [
        ("interval(0.05, 0.2)", FloatDistribution(0.05, 0.2)),
        ("int(interval(5, 60))", IntDistribution(5, 60)),
        ("tag(log, interval(1e-4, 1e-1))", FloatDistribution(1e-4, 1e-1, log=True)),
        ("tag(log, int(interval(1, 64)))", IntDistribution(1, 64, log=True)),
        ("range(1, 4)", IntDistribution(1, 3)),  # Hydra's stop is exclusive
        ("range(0, 10, 3)", IntDistribution(0, 9, step=3)),
        ("range(0.0, 1.0, 0.25)", FloatDistribution(0.0, 0.75, step=0.25)),
        ("choice(adam, sgdm)", CategoricalDistribution(["adam", "sgdm"])),
        ("1,2,5", CategoricalDistribution([1, 2, 5])),
    ],
)
def test_grammar_maps_to_optuna_distributions(expression, expected):
    space, fixed = search_space([f"training.x={expression}"])
    assert space == {"training.x": expected} and fixed == []


def test_fixed_overrides_pass_through_and_grid_values():
    space, fixed = search_space(["a=range(1,4)", "b=choice(x,y)", "c=0.5", "+d=new"])
    assert fixed == ["c=0.5", "+d=new"]
    assert grid(space) == {"a": [1, 2, 3], "b": ["x", "y"]}
    with pytest.raises(ValueError, match="the grid sampler needs choice\\(\\) or range\\(\\) values"):
        grid(search_space(["a=interval(0,1)"])[0])


def test_bad_expressions():
    with pytest.raises(ValueError, match="range\\(3, 3, 1\\) is empty"):
        search_space(["a=range(3,3)"])
    with pytest.raises(ValueError, match="tag\\(log, ...\\) applies to range\\(\\) and interval\\(\\)"):
        search_space(["a=tag(log, choice(1,2))"])


def test_overrides_round_trip_through_hydra():
    for value in (3, 0.125, "adam", "a b", None, True):
        line = as_override("k", value)
        space, fixed = search_space([line])
        assert fixed == [line]


def test_results_and_storage():
    assert split_result([1, 2.5], 2) == ([1.0, 2.5], None, {}, False)
    assert split_result({"values": [3], "constraints": [-1]}, 1) == ([3.0], [-1.0], {}, False)
    assert split_result({"values": [3], "pruned": True}, 1).pruned
    attributes = {"mlflow_run_id": "abc"}
    assert split_result({"values": [3], "user_attrs": attributes}, 1).user_attrs == attributes
    with pytest.raises(ValueError, match="the job returned 1 objective values, but hydra.sweeper.direction has 2"):
        split_result(0.5, 2)
    assert isinstance(open_storage("journal:/tmp/journal.log"), optuna.storages.journal.JournalStorage)
    with pytest.raises(ValueError, match="folder '/no/such' does not exist"):
        open_storage("journal:/no/such/journal.log")
    with pytest.raises(ValueError, match="hydra.sweeper.storage='sqlite:////no/such/dir/x.db' cannot be opened"):
        open_storage("sqlite:////no/such/dir/x.db")


def test_a_resumed_study_must_search_each_parameter_as_it_did(tmp_path):
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    before, _ = search_space(["pruning.increment=choice(0.1, 0.2)", "training.max_epochs=range(1, 4)"])
    study.tell(study.ask(before), 1.0)
    trials = study.get_trials()
    check_resumable(search_space(["training.max_epochs=range(2, 6)"])[0], trials, "s")  # a range may move
    check_resumable(search_space(["other=choice(a, b)"])[0], trials, "s")  # a new parameter may come
    with pytest.raises(ValueError) as caught:
        check_resumable(search_space(["pruning.increment=choice(0.3)"])[0], trials, "s")
    assert str(caught.value).startswith(
        "pruning.increment: study 's' searched it as choice(0.1, 0.2), this run asks for choice(0.3)"
    )
    assert "Use another hydra.sweeper.study_name, or search it as before" in str(caught.value)
    with pytest.raises(
        ValueError, match="searched it as int\\(interval\\(1, 3\\)\\), this run asks for interval\\(0.1, 0.9\\)"
    ):
        check_resumable(search_space(["training.max_epochs=interval(0.1, 0.9)"])[0], trials, "s")
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.COMPLETE], "nothing was asked"
