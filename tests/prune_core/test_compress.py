"""compress_network: every option, input form and stop reason."""

import math

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prune_core import TrainingOptions, compress_network, load_pruned
from prune_core.finetune import Metric, as_source, evaluate, resolve_loss
from tests.support.architectures import wave_cnn, wave_task


@pytest.fixture(scope="module")
def trained():
    x, y = wave_task()
    net = wave_cnn()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(30):
        for xb, yb in zip(x.split(32), y.split(32)):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(xb), yb).backward()
            optimizer.step()
    return net, x, y


def options(**kw) -> TrainingOptions:
    base = dict(solver="adam", max_epochs=1, mini_batch_size=32, metrics=["accuracy"], seed=0)
    return TrainingOptions(**{**base, **kw})


def learnables(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def history_learnables(info, iteration: int) -> int:
    rows = info.pruning_history
    return int(rows.loc[rows["iteration"] == iteration, "learnables"].iloc[0])


def test_goal_reached(trained):
    net, x, y = trained
    pruned, info = compress_network(net, x, y, "crossentropy", options(), goal=0.3, increment=0.1, verbosity="off")
    assert info.stop_reason == "Learnables reduction goal reached."
    assert 0.3 <= info.reduction < 0.45
    assert learnables(pruned) == info.pruning_history["learnables"].iloc[-1]
    assert learnables(net) == info.pruning_history["learnables"].iloc[0], "the input model is left as it was"
    rows = info.pruning_history
    assert rows["iteration"].tolist() == list(range(len(rows)))
    assert (rows["reduction"].diff().dropna() >= 0.1 - 1e-9).all() or rows["reduction"].iloc[-1] >= 0.3
    assert {"channels[0]", "channels[3]", "scoring_s", "surgery_s", "fine_tuning_s", "time_s"} <= set(rows.columns)


def test_maximum_compression(trained):
    net, x, y = trained
    pruned, info = compress_network(net, x, y, "crossentropy", options(), increment=0.3, verbosity="off")
    assert info.stop_reason == "Maximum compression reached."
    assert pruned[0].out_channels == 1 and pruned[3].out_channels == 1
    assert info.pruned_layers == ["0", "1", "3", "4", "8"]


def test_validation_threshold_returns_the_last_network_that_did_not_cross(trained):
    net, x, y = trained
    opts = options(validation_data=wave_task(128, seed=1), objective_metric_name="accuracy", validation_frequency=4)
    pruned, info = compress_network(
        net, x, y, "crossentropy", opts, increment=0.1, validation_threshold=80.0, verbosity="off"
    )
    assert info.stop_reason == "Validation threshold crossed."
    rows = info.pruning_history
    assert rows["validation_accuracy"].iloc[-1] < 80.0 <= rows["validation_accuracy"].iloc[-2]
    assert info.returned_iteration == rows["iteration"].iloc[-2]
    assert learnables(pruned) == history_learnables(info, info.returned_iteration)
    kept = evaluate(
        pruned,
        as_source(wave_task(128, seed=1)),
        resolve_loss("crossentropy"),
        opts.resolved_metrics,
        64,
        torch.device("cpu"),
    )
    assert kept["accuracy"] == pytest.approx(rows["validation_accuracy"].iloc[-2])


@pytest.mark.parametrize("good_calls", [8 + 8 + 3, 8 + 8 + 8 + 3], ids=["while-scoring", "while-fine-tuning"])
def test_divergence_returns_the_last_good_network(trained, good_calls):
    net, x, y = trained
    calls = {"n": 0}

    def loss(out, target):  # becomes NaN in the second pruning iteration (8 scoring + 8 fine-tuning batches each)
        calls["n"] += 1
        value = nn.functional.cross_entropy(out, target)
        return value * math.nan if calls["n"] > good_calls else value

    pruned, info = compress_network(net, x, y, loss, options(), increment=0.1, verbosity="off")
    assert info.stop_reason == "Training loss is not finite."
    assert info.returned_iteration == 1
    assert learnables(pruned) == history_learnables(info, 1)
    assert all(torch.isfinite(p).all() for p in pruned.parameters())


def test_output_fn_and_ctrl_c_return_the_current_network(trained):
    net, x, y = trained
    stop_at_2 = options(output_fn=lambda s: s["pruning_iteration"] == 2)
    pruned, info = compress_network(net, x, y, "crossentropy", stop_at_2, increment=0.1, verbosity="off")
    assert info.stop_reason == "Stopped by output function."
    assert info.returned_iteration == 2 and learnables(pruned) == history_learnables(info, 2)

    def interrupt(state):
        if state["pruning_iteration"] == 3:
            raise KeyboardInterrupt

    pruned, info = compress_network(
        net, x, y, "crossentropy", options(output_fn=interrupt), increment=0.1, verbosity="off"
    )
    assert info.stop_reason == "Stopped manually."
    assert info.returned_iteration == 3 and learnables(pruned) == history_learnables(info, 3) < history_learnables(
        info, 2
    ), "the current (third) pruning is kept"
    assert info.training_history["pruning_iteration"].max() == 3


@pytest.mark.parametrize("form", ["loader", "dataset", "pair", "frame", "positional"])
def test_data_forms(trained, form):
    net, x, y = trained
    data = {
        "loader": DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True),
        "dataset": TensorDataset(x, y),
        "pair": (x, y),
        "frame": pd.DataFrame({"signal": list(x.numpy()), "label": y.numpy()}),
    }
    args = (x, y, "crossentropy", options()) if form == "positional" else (data[form], "crossentropy", options())
    pruned, info = compress_network(net, *args, goal=0.2, increment=0.2, verbosity="off")
    assert pruned.eval()(x).shape == (256, 4)
    assert info.stop_reason == "Learnables reduction goal reached."


def test_regression_loss_and_custom_metric():
    torch.manual_seed(0)
    x = torch.randn(128, 1, 16)
    target = x.mean((1, 2), keepdim=False).unsqueeze(1) * 3
    net = nn.Sequential(nn.Conv1d(1, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(96, 1))
    within = Metric(
        "within-0.5", lambda out, t: (float(((out - t).abs() < 0.5).sum()), t.numel()), maximize=True, scale=100.0
    )
    opts = options(metrics=["rmse", within], validation_data=(x, target), objective_metric_name="rmse")
    pruned, info = compress_network(net, x, target, "mse", opts, goal=0.3, increment=0.15, verbosity="off")
    assert {"validation_rmse", "validation_within-0.5"} <= set(info.pruning_history.columns)
    assert pruned(x).shape == (128, 1)


def test_checkpoints_every_other_iteration(trained, tmp_path):
    net, x, y = trained
    pruned, info = compress_network(
        net,
        x,
        y,
        "crossentropy",
        options(),
        goal=0.5,
        increment=0.1,
        checkpoint_path=tmp_path,
        checkpoint_frequency=2,
        verbosity="off",
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    expected = [f"pruned_iteration_{k:03d}.pt" for k in range(2, info.pruning_history["iteration"].max() + 1, 2)]
    assert names == expected and [p.name for p in info.checkpoints] == expected
    last = info.pruning_history["iteration"].max()
    if last % 2 == 0:
        reloaded = load_pruned(tmp_path / expected[-1], wave_cnn).eval()
        torch.testing.assert_close(reloaded(x[:8]), pruned.eval()(x[:8]))


def test_layer_names_restrict_pruning(trained):
    net, x, y = trained
    pruned, info = compress_network(
        net, x, y, "crossentropy", options(), goal=0.1, increment=0.1, layer_names=["0"], verbosity="off"
    )
    assert pruned[3].out_channels == 16 and pruned[0].out_channels < 8
    assert info.pruned_layers == ["0", "1", "3"]


def test_nested_layer_names_with_slash():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(8, 8, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(x))

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 8, 3, padding=1), nn.ReLU(), Block(), nn.Flatten(), nn.Linear(8 * 24, 4))
    x, y = wave_task(64)
    pruned, info = compress_network(
        net, x, y, "crossentropy", options(), goal=0.1, layer_names="2/conv", verbosity="off"
    )
    assert pruned[0].out_channels == 8 and pruned[2].conv.out_channels < 8
    assert info.pruned_layers == ["2.conv", "4"]


def test_num_importance_score_iterations(trained, monkeypatch):
    from prune_core import TaylorPrunableNetwork

    net, x, y = trained
    counted = []
    original = TaylorPrunableNetwork.score_batch
    monkeypatch.setattr(TaylorPrunableNetwork, "score_batch", lambda self, *a: counted.append(1) or original(self, *a))
    compress_network(
        net,
        x,
        y,
        "crossentropy",
        options(),
        goal=0.05,
        increment=0.05,
        num_importance_score_iterations=3,
        verbosity="off",
    )
    assert len(counted) == 3
    counted.clear()
    compress_network(net, x, y, "crossentropy", options(), goal=0.05, increment=0.05, verbosity="off")
    assert len(counted) == 8, "'auto' uses min(100, batches in the data)"


@pytest.mark.parametrize("criterion", ["l1", "random"])
def test_baseline_criteria_and_selection_levers(trained, criterion):
    net, x, y = trained
    pruned, info = compress_network(
        net,
        x,
        y,
        "crossentropy",
        options(),
        goal=0.4,
        increment=0.2,
        criterion=criterion,
        normalization="none",
        per_learnable=True,
        min_filter_fraction=0.5,
        verbosity="off",
    )
    assert pruned[0].out_channels >= 4 and pruned[3].out_channels >= 8
    assert info.seconds["scoring"] == 0.0, "the baselines need no scoring passes"


def test_uniform_allocation_takes_the_same_share_from_every_layer(trained):
    net, x, y = trained
    pruned, info = compress_network(
        net, x, y, "crossentropy", options(), goal=0.5, increment=0.25, allocation="uniform", verbosity="off"
    )
    rows = info.pruning_history
    shares = rows["channels[0]"] / 8, rows["channels[3]"] / 16
    assert (abs(shares[0] - shares[1]) <= 1 / 8).all() and rows["reduction"].iloc[-1] >= 0.5
    with pytest.raises(ValueError, match="allocation 'local' is not supported; use one of \\('global', 'uniform'\\)"):
        compress_network(net, x, y, "crossentropy", options(), allocation="local")


def test_verbosity_and_plots(trained, capsys, tmp_path):
    net, x, y = trained
    compress_network(net, x, y, "crossentropy", options(), goal=0.2, increment=0.1, verbosity="off")
    assert capsys.readouterr().out == ""
    _, info = compress_network(net, x, y, "crossentropy", options(), goal=0.2, increment=0.1)
    out = capsys.readouterr().out
    assert out.startswith("Compressed network has ") and "fewer learnable parameters.\nPruning compressed 5" in out
    assert out.strip() == info.summary
    _, info = compress_network(
        net,
        x,
        y,
        "crossentropy",
        options(),
        goal=0.2,
        increment=0.1,
        verbosity="pruning",
        plots="pruning-progress",
        plots_path=tmp_path / "progress.png",
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["iteration", "learnables", "reduction"]
    assert len(lines) == 1 + len(info.pruning_history) + 3
    assert info.figure is not None and len(info.figure.axes) == 3
    assert (tmp_path / "progress.png").stat().st_size > 10_000
    _, info = compress_network(net, x, y, "crossentropy", options(verbose_frequency=4), goal=0.1, verbosity="training")
    captured = capsys.readouterr()
    assert "fine-tuning after pruning iteration 1" in captured.err
    assert "  iteration 4 (epoch 1): loss " in captured.out and "  iteration 8 (epoch 1)" in captured.out


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"goal": 0}, "goal must be a number in \\(0, 1\\], got 0"),
        ({"goal": 1.5}, "goal must be a number in \\(0, 1\\], got 1.5"),
        ({"increment": -0.1}, "increment must be a number in \\(0, 1\\], got -0.1"),
        ({"validation_threshold": 0.5}, "validation_threshold needs validation data"),
        ({"checkpoint_path": "/no/such/folder"}, "checkpoint_path '/no/such/folder' is not an existing folder"),
        (
            {"num_importance_score_iterations": 0},
            "num_importance_score_iterations must be 'auto' or a positive integer",
        ),
        ({"num_importance_score_iterations": "all"}, "must be 'auto' or a positive integer, got 'all'"),
        ({"verbosity": "loud"}, "verbosity 'loud' is not supported"),
        ({"plots": "training-progress"}, "plots 'training-progress' is not supported"),
        ({"layer_names": ["conv9"]}, "layer_names entry 'conv9' is not a layer of the model"),
    ],
)
def test_bad_arguments(trained, kwargs, message, tmp_path):
    net, x, y = trained
    with pytest.raises(ValueError, match=message):
        compress_network(
            net, x, y, "crossentropy", options(), **{"checkpoint_path": tmp_path, "verbosity": "off", **kwargs}
        )
    assert list(tmp_path.iterdir()) == []


def test_bad_input_forms(trained):
    net, x, y = trained
    with pytest.raises(ValueError, match="validation_frequency=500 is too large: each fine-tuning runs only 8"):
        compress_network(
            net,
            x,
            y,
            "crossentropy",
            options(validation_data=(x, y), validation_frequency=500),
            validation_threshold=1.0,
        )
    with pytest.raises(ValueError, match="loss 'cross-entropy' is not a known loss name; use one of"):
        compress_network(net, x, y, "cross-entropy", options())
    with pytest.raises(ValueError, match="predictors have 256, targets have 10"):
        compress_network(net, x, y[:10], "crossentropy", options())
    with pytest.raises(ValueError, match="data is empty"):
        compress_network(net, x[:0], y[:0], "crossentropy", options())
    with pytest.raises(TypeError, match="options must be a prune_core.TrainingOptions, got dict"):
        compress_network(net, x, y, "crossentropy", {"max_epochs": 1})
    flat = nn.Sequential(nn.Flatten(), nn.LayerNorm(24))  # no layer with filters or hidden units at all
    with pytest.raises(ValueError, match="model has nothing to prune: it has no convolution filters or hidden units"):
        compress_network(flat, x, y, "crossentropy", options())
    last = nn.Sequential(nn.Conv1d(1, 4, 3), nn.AdaptiveAvgPool1d(1), nn.Flatten())
    with pytest.raises(ValueError, match="model has nothing to prune: its only filters are the network's outputs"):
        compress_network(last, x, y, "crossentropy", options())


@pytest.mark.parametrize("budget,column", [("learnables", "reduction"), ("macs", "macs_reduction")])
def test_iteration_k_removes_k_increments_in_all_so_overshoots_do_not_add_up(budget, column):
    net, (x, y) = wave_cnn(width=32), wave_task()  # filters of 1-2% of the learnables each
    _, info = compress_network(
        net, x, y, "crossentropy", options(), goal=0.6, increment=0.075, budget=budget, verbosity="off"
    )
    reductions = info.pruning_history[column].tolist()[1:]
    assert len(reductions) == math.ceil(0.6 / 0.075), reductions  # "up to 1/increment iterations"
    for k, reduction in enumerate(reductions[:-1], start=1):
        assert k * 0.075 - 1e-9 <= reduction < (k + 0.5) * 0.075, (k, reductions)
    assert reductions[-1] >= 0.6


def test_a_threshold_crossed_by_the_first_iteration_returns_the_input_network_as_a_copy(trained):
    net, x, y = trained
    before = {name: value.clone() for name, value in net.state_dict().items()}
    opts = options(validation_data=wave_task(128, seed=1), objective_metric_name="accuracy", validation_frequency=4)
    returned, info = compress_network(
        net, x, y, "crossentropy", opts, increment=0.9, validation_threshold=80.0, verbosity="off"
    )
    assert info.stop_reason == "Validation threshold crossed." and info.returned_iteration == 0
    assert returned is not net and returned.training == net.training
    assert returned.state_dict().keys() == before.keys()
    assert all(torch.equal(returned.state_dict()[name], value) for name, value in before.items())
    assert all(torch.equal(net.state_dict()[name], value) for name, value in before.items()), "the input is unchanged"
