"""Config errors fail when Hydra composes the config: the pruning and training groups have schemas."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from sweeps.job.config import check_job_config, pruning_options, training_options
from sweeps.job.schemas import register_schemas

CONF = str(Path(__file__).parents[2] / "conf")


def composed(*overrides: str):
    register_schemas()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize(
    "bad,message",
    [
        ("pruning.goal=abc", "Value 'abc' of type 'str' could not be converted to Float"),
        ("pruning.increment=[0.1]", "could not be converted to Float"),
        ("pruning.verify=maybe", "Value 'maybe' is not a valid bool"),
        ("pruning.gaol=0.5", "Key 'gaol' not in 'PruningOptionsSchema'"),
        ("training.max_epochs=1.5", "Value '1.5' of type 'float' could not be converted to Integer"),
        ("training.solverr=adam", "Key 'solverr' not in 'TrainingOptionsSchema'"),
        ("training.distillation.alpah=0.5", "Key 'alpah' not in 'DistillationSchema'"),
        ("training.distillation.alpha=abc", "Value 'abc' of type 'str' could not be converted to Float"),
    ],
)
def test_a_wrong_type_or_unknown_key_fails_at_composition(bad, message):
    with pytest.raises(ConfigCompositionException) as caught:
        composed(bad)
    assert message in str(caught.value.__cause__ or caught.value)


@pytest.mark.parametrize(
    "bad,message",
    [
        ("pruning.increment=0", "pruning: increment must be a number in (0, 1], got 0.0"),
        ("pruning.normalization=l3", "pruning: normalization 'l3' is not supported; use one of ('mean', 'l2', 'none')"),
        (
            "pruning.criterion=taylr",
            "pruning: criterion 'taylr' is not supported; use one of ('taylor', "
            "'taylor-squared', 'taylor-bn', 'taylor-weight', 'l1', 'bn-scale', 'random')",
        ),
        ("training.solver=sgd", "training: solver 'sgd' is not supported"),
        ("training.distillation.alpha=2", "training: distillation.alpha must be a number in [0, 1], got 2.0"),
        ("training.learn_rate_schedule=linear", "training: learn_rate_schedule 'linear' is not supported"),
        ("pruning.final_epochs=-1", "pruning: final_epochs must be an integer >= 0, got -1"),
        ("loss=mse2", "loss: loss 'mse2' is not a known loss name"),
    ],
)
def test_a_value_the_options_refuse_fails_right_after_composition(bad, message):
    cfg = composed(bad)  # the types are right: composition passes, the options dataclasses refuse it
    with pytest.raises(ValueError) as caught:
        check_job_config(cfg)
    assert message in str(caught.value)


def test_the_composed_groups_are_the_options_dataclasses():
    cfg = composed("pruning.goal=0.5", "training.max_epochs=2")
    settings, options = pruning_options(cfg), training_options(cfg)
    assert (settings.goal, settings.increment, settings.criterion) == (0.5, 0.05, "taylor")
    assert (options.max_epochs, options.seed) == (2, cfg.seed)
    assert "loss" not in cfg.pruning and cfg.loss == "crossentropy", "loss is read by base training too"
    assert "constrained" not in cfg.sweep
    assert OmegaConf.to_container(cfg.pruning)["verify"] is True, "every option has its default"


def test_the_fine_tuning_levers_are_keys_a_study_can_set():
    cfg = composed("training.distillation.alpha=0.3", "training.learn_rate_schedule=cosine", "pruning.final_epochs=2")
    options = training_options(cfg)
    assert (options.distillation.alpha, options.distillation.temperature) == (0.3, 4.0)
    assert options.learn_rate_schedule == "cosine" and pruning_options(cfg).final_epochs == 2
    off = training_options(composed())
    assert off.distillation is not None and not off.distillation.active, "alpha 0 by default: no teacher is run"
