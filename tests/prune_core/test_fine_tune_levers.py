"""The levers of fine-tuning: distillation from a teacher, learn-rate schedules per fine-tuning, a final fine-tune."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prune_core import Distillation, TrainingOptions, compress_network, train_network


def blobs(n: int = 192, seed: int = 0):
    """Two features, three well separated classes."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=gen)
    centres = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    return centres[labels] + 0.5 * torch.randn(n, 2, generator=gen), labels


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 3))


def conv_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv1d(1, 16, 3, padding=1),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(16, 3),
    )


def as_signals(x: torch.Tensor) -> torch.Tensor:
    """The blobs as 1-D signals of 8 samples (the class shows in the mean and the slope)."""
    ramp = torch.linspace(-1, 1, 8)
    return (x[:, :1, None] + x[:, 1:, None] * ramp).float()


@pytest.mark.parametrize("shape", [(6, 5), (2, 5, 3, 4)])
def test_the_distillation_term_is_the_tempered_kl_divergence(shape):
    torch.manual_seed(0)
    student, teacher, task = torch.randn(shape), torch.randn(shape), torch.tensor(1.3)
    t = 2.5
    per_position = F.kl_div(
        F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), log_target=True, reduction="none"
    ).sum(dim=1)
    expected = 0.3 * t * t * per_position.mean() + 0.7 * task
    assert torch.allclose(Distillation(alpha=0.3, temperature=t).loss(student, teacher, task), expected)
    with pytest.raises(ValueError, match=r"teacher's first output has shape \(6, 4\), the network's \(6, 5\)"):
        Distillation().loss(torch.randn(6, 5), torch.randn(6, 4), task)


def test_a_student_learns_what_the_teacher_says_not_the_labels():
    x, y = blobs()
    teacher, _ = train_network(mlp(1), (x, y), "crossentropy", TrainingOptions("adam", max_epochs=20, seed=0))
    teacher.train()  # the caller's mode, which train_network must give back
    weights = copy.deepcopy(teacher.state_dict())
    wrong = torch.zeros_like(y)  # labels that say nothing: every example is class 0
    agreement = {}
    for alpha in (0.0, 1.0):
        options = TrainingOptions(
            "adam", max_epochs=30, mini_batch_size=32, seed=0, distillation=Distillation(alpha=alpha, temperature=2.0)
        )
        student, _ = train_network(mlp(2), (x, wrong), "crossentropy", options, teacher=teacher if alpha else None)
        with torch.no_grad():
            agreement[alpha] = (student(x).argmax(1) == teacher(x).argmax(1)).float().mean().item()
    assert agreement[1.0] > 0.9 and agreement[0.0] < 0.5, agreement
    assert teacher.training, "the teacher's mode is given back"
    assert all(torch.equal(weights[k], v) for k, v in teacher.state_dict().items()), "the teacher is never trained"


def test_distillation_needs_a_teacher_and_a_teacher_needs_distillation():
    x, y = blobs(32)
    with pytest.raises(ValueError, match="options.distillation needs a teacher network"):
        train_network(mlp(), (x, y), "crossentropy", TrainingOptions(distillation={"alpha": 0.5}))
    with pytest.raises(ValueError, match="teacher is given, but options.distillation is off"):
        train_network(mlp(), (x, y), "crossentropy", TrainingOptions(), teacher=mlp(1))
    with pytest.raises(TypeError, match="distillation has no field 'weight'"):
        TrainingOptions(distillation={"weight": 0.5})


def test_compress_network_distils_from_the_input_network():
    """With labels that say nothing, only the teacher (the input network) can keep the pruned one right."""
    x, y = blobs()
    signals = as_signals(x)
    net, _ = train_network(conv_net(), (signals, y), "crossentropy", TrainingOptions("adam", max_epochs=25, seed=0))
    net.eval()
    with torch.no_grad():
        taught = net(signals).argmax(1)
    agreement = {}
    for alpha in (0.0, 1.0):
        options = TrainingOptions(
            "adam",
            initial_learn_rate=0.01,
            max_epochs=3,
            mini_batch_size=32,
            seed=0,
            distillation={"alpha": alpha, "temperature": 2.0},
        )
        pruned, _ = compress_network(
            net, signals, torch.zeros_like(y), "crossentropy", options, goal=0.5, increment=0.25, verbosity="off"
        )
        pruned.eval()
        with torch.no_grad():
            agreement[alpha] = (pruned(signals).argmax(1) == taught).float().mean().item()
    assert agreement[1.0] > 0.9 and agreement[0.0] < 0.5, agreement
    assert not net.training, "the caller's network keeps its mode"


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_a_schedule_runs_over_each_fine_tuning_and_restarts_after_every_surgery(schedule):
    x, y = blobs(64)
    options = TrainingOptions("adam", max_epochs=2, mini_batch_size=16, learn_rate_schedule=schedule, seed=0)
    _, info = compress_network(
        conv_net(), as_signals(x), y, "crossentropy", options, goal=0.5, increment=0.25, verbosity="off"
    )
    history = info.training_history
    steps = 2 * 4
    assert history.groupby("pruning_iteration").size().eq(steps).all()
    for _, rows in history.groupby("pruning_iteration"):
        rates = list(rows["learn_rate"])
        if schedule == "cosine":
            expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * k / steps)) for k in range(steps)]
        else:  # up from lr/25 to lr over 30% of the steps, then down
            assert rates[0] == pytest.approx(1e-3 / 25) and max(rates) == pytest.approx(rates[2], rel=0.05)
            expected = rates  # the shape was checked; OneCycleLR computes the values
        assert rates == pytest.approx(expected)
    assert history["pruning_iteration"].nunique() >= 2, "more than one fine-tuning, each restarted"


def test_the_piecewise_schedule_drops_per_epoch_as_before():
    x, y = blobs(64)
    options = TrainingOptions(
        "sgdm", max_epochs=4, mini_batch_size=32, learn_rate_schedule="piecewise", learn_rate_drop_period=2
    )
    _, info = train_network(mlp(), (x, y), "crossentropy", options)
    rates = info.training_history.groupby("epoch")["learn_rate"].unique()
    assert [[round(rate, 12) for rate in r] for r in rates] == [[0.01], [0.01], [0.001], [0.001]]


def test_a_final_fine_tune_is_a_history_row_of_its_own():
    x, y = blobs()
    x = as_signals(x)
    options = TrainingOptions(
        "adam", max_epochs=1, mini_batch_size=32, seed=0, validation_data=(x, y), metrics=["accuracy"]
    )
    _, plain = compress_network(conv_net(), x, y, "crossentropy", options, goal=0.5, increment=0.25, verbosity="off")
    pruned, info = compress_network(
        conv_net(), x, y, "crossentropy", options, goal=0.5, increment=0.25, final_epochs=3, verbosity="off"
    )
    history = info.pruning_history
    last, final = history.iloc[-2], history.iloc[-1]
    assert len(history) == len(plain.pruning_history) + 1
    assert info.final_iteration == info.returned_iteration == final["iteration"] == last["iteration"] + 1
    assert (
        final["filters_removed"] == 0 and final["learnables"] == last["learnables"] == plain.returned_row["learnables"]
    )
    assert final["macs"] == last["macs"]
    assert info.stop_reason == plain.stop_reason
    training = info.training_history
    assert (training["pruning_iteration"] == final["iteration"]).sum() == 3 * 6, "3 epochs of 6 batches"
    assert info.validation_history["pruning_iteration"].iloc[-1] == final["iteration"]
    assert plain.final_iteration is None


def test_the_final_fine_tune_trains_the_network_kept_before_a_crossed_threshold():
    x, y = blobs()
    x = as_signals(x)
    options = TrainingOptions(
        "adam",
        max_epochs=1,
        mini_batch_size=32,
        seed=0,
        validation_data=(x, y),
        metrics=["accuracy"],
        objective_metric_name="accuracy",
        validation_frequency=6,
    )
    _, info = compress_network(
        conv_net(),
        x,
        y,
        "crossentropy",
        options,
        increment=0.3,
        validation_threshold=101.0,
        final_epochs=1,
        verbosity="off",
    )
    history = info.pruning_history.set_index("iteration")
    assert info.stop_reason == "Validation threshold crossed."
    final = history.loc[info.final_iteration]
    assert final["learnables"] == history.loc[0, "learnables"], "the kept network is the input network"
