"""``front_hypervolume``: the feasible front's volume above a reference point, in the study's directions."""

import optuna
import pytest
from omegaconf import OmegaConf

from optuna_sweep import front_hypervolume
from sweeps.tracking.study_progress import HypervolumeLog

optuna.logging.set_verbosity(optuna.logging.WARNING)


def study_of(directions, *trials):
    study = optuna.create_study(directions=directions)
    for values, constraints in trials:
        attrs = {} if constraints is None else {"constraints": constraints}
        study.add_trial(optuna.trial.create_trial(values=values, user_attrs=attrs))
    return study


def test_only_feasible_trials_better_than_the_reference_count():
    study = study_of(
        ["maximize", "maximize"],
        ([90.0, 0.5], None),
        ([95.0, 0.9], [1.0]),  # infeasible: its constraint is above 0
        ([-5.0, 0.99], None),  # worse than the reference in accuracy
    )
    assert front_hypervolume(study, [0.0, 0.0]) == pytest.approx(45.0)
    assert front_hypervolume(study, [50.0, 0.0]) == pytest.approx(20.0)
    assert front_hypervolume(study, [95.0, 0.0]) == 0.0, "nothing above the reference point"


def test_minimised_objectives_count_below_the_reference():
    study = study_of(["maximize", "minimize"], ([80.0, 2.0], None), ([90.0, 4.0], None))
    assert front_hypervolume(study, [0.0, 10.0]) == pytest.approx(80 * 8 + 10 * 6)
    single = study_of(["minimize"], ([3.0], None), ([5.0], None))
    assert front_hypervolume(single, [10.0]) == pytest.approx(7.0)


def test_a_reference_point_that_does_not_fit_the_study_is_refused():
    study = study_of(["maximize", "maximize"], ([1.0, 1.0], None))
    with pytest.raises(ValueError, match=r"reference_point=\[0.0\] must hold one finite number per objective"):
        front_hypervolume(study, [0.0])
    tracking = OmegaConf.create({"uri": "sqlite:///unused.db"})
    with pytest.raises(ValueError, match=r"sweep.reference_point=\[0, nan\] must hold one finite number"):
        HypervolumeLog(tracking, [0, float("nan")], ["maximize", "maximize"])
    assert HypervolumeLog(tracking, None, ["maximize"] * 2).reference_point == [0.0, 0.0]
    assert HypervolumeLog(tracking, None, ["maximize", "minimize"]).reference_point is None, "latency has no worst"
