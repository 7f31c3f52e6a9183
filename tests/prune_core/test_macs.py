"""MACs: counted on the example input, reported by the analysis and the history, and a goal of their own."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch
import torchvision
from mlflow.tracking import MlflowClient
from torch import nn

import prune_core as pc
from prune_core import TaylorPrunableNetwork, TrainingOptions, analyze_compression, compress_network
from prune_core.channels import ChannelGraph, PrunedMacs, count_macs, macs_per_weight, remove_units
from tests.support.app import FAST, FAST_SEARCH, run_app


def two_stage() -> nn.Sequential:
    """Two convs with the same learnables per filter; the first runs on 4x the positions of the second."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(4, 8, 3, padding=1),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.MaxPool1d(4),
        nn.Conv1d(8, 8, 3, padding=1),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (256,), generator=generator)
    x = torch.randn(256, 4, 40, generator=generator) + y[:, None, None] * torch.linspace(-1, 1, 40)
    return x, y


def by_hand(c1: int, c2: int) -> int:
    """MACs per example of ``two_stage`` with c1 and c2 filters left, input length 40."""
    return c1 * 4 * 3 * 40 + c2 * c1 * 3 * 10 + c2 * 4


class Constant(pc.Criterion):
    """Every unit scores the same: only costs can tell them apart."""

    normalized = False

    def scores(self, model):
        return np.ones(len(self.graph.units))


@pytest.fixture
def constant():
    pc.register_criterion("constant", Constant)
    yield
    pc.CRITERIA.unregister("constant")


def test_counts_match_the_layer_arithmetic_and_leave_the_model_as_it_was():
    net = two_stage().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert count_macs(net, torch.randn(3, 4, 40)) == by_hand(8, 8)
    assert macs_per_weight(net, torch.randn(3, 4, 40)) == {"0.weight": 40.0, "4.weight": 10.0, "9.weight": 1.0}
    assert net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def encoder() -> nn.Module:
    """Attention products are MACs no weight holds: pruned versions are counted again."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True)
    layers = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    return nn.Sequential(nn.Linear(6, 16), layers, nn.Linear(16, 3))


@pytest.mark.parametrize(
    "build, example, worked_out",
    [
        (lambda: torchvision.models.mobilenet_v3_small(num_classes=10), torch.randn(2, 3, 64, 64), True),
        (lambda: torchvision.models.resnet18(num_classes=10), torch.randn(2, 3, 32, 32), True),
        (encoder, torch.randn(2, 5, 6), False),
    ],
    ids=["mobilenet_v3_small", "resnet18", "transformer_encoder"],
)
def test_pruned_macs_are_what_a_count_of_the_pruned_network_gives(build, example, worked_out):
    model = build().eval()
    macs = PrunedMacs(model, example)
    assert macs.original == count_macs(model, example)
    assert macs.worked_out is worked_out
    for _ in range(2):  # two surgeries, the second on an already pruned network
        graph = ChannelGraph.build(model, example)
        remove_units(model, graph, graph.max_removal()[::7])
        assert macs(model) == count_macs(model, example) < macs.original


def test_analyze_compression_reports_macs():
    report = analyze_compression(two_stage(), torch.zeros(2, 4, 40), verbose=False)
    assert report.total_macs == by_hand(8, 8)
    assert report.max_removable_macs == by_hand(8, 8) - by_hand(1, 1)
    prunable = report.groups[report.groups["prunable"]]
    assert prunable["macs_per_channel"].tolist() == [4 * 3 * 40 + 8 * 3 * 10, 8 * 3 * 10 + 4]
    assert "MACs per example" in str(report)


def test_every_history_row_holds_the_macs_of_its_network(tmp_path):
    x, y = data()
    options = TrainingOptions("adam", max_epochs=1, mini_batch_size=32, seed=0)
    pruned, info = compress_network(
        two_stage(), x, y, "crossentropy", options, goal=0.6, increment=0.2, verbosity="off", checkpoint_path=tmp_path
    )
    rows = info.pruning_history
    assert rows["macs"].iloc[0] == by_hand(8, 8)
    assert rows["macs"].iloc[-1] == count_macs(pruned, x[:1]) == by_hand(pruned[0].out_channels, pruned[4].out_channels)
    np.testing.assert_allclose(rows["macs_reduction"], 1 - rows["macs"] / by_hand(8, 8))
    assert rows["macs"].is_monotonic_decreasing and info.macs_reduction == rows["macs_reduction"].iloc[-1]


def test_a_macs_goal_prunes_in_macs_steps_and_stops_on_it():
    x, y = data()
    options = TrainingOptions("adam", max_epochs=1, mini_batch_size=32, seed=0)
    _, info = compress_network(
        two_stage(), x, y, "crossentropy", options, goal=0.5, increment=0.1, budget="macs", verbosity="off"
    )
    rows = info.pruning_history
    assert info.stop_reason == pc.StopReason.MACS_GOAL == "MACs reduction goal reached."
    assert rows["macs_reduction"].iloc[-1] >= 0.5 > rows["macs_reduction"].iloc[-2]
    assert (rows["macs_reduction"].diff().dropna() >= 0.1 - 1e-9).iloc[:-1].all(), "every step but the last"
    with pytest.raises(ValueError, match="budget 'flops' is not supported; use one of \\('learnables', 'macs'\\)"):
        pc.PruningOptions(budget="flops")
    with pytest.raises(ValueError, match="flops_weight must be a number >= 0, got -1"):
        pc.PruningOptions(flops_weight=-1)


def test_ranking_per_mac_and_the_flops_penalty_take_the_costly_filters_first(constant):
    example = torch.zeros(2, 4, 40)
    # Equal scores: per learnable, the second conv's filters are the cheaper to keep (fewer learnables:
    # 8*3+... vs 4*3+...); per MAC the first conv's are far costlier (40 positions against 10)
    by_macs = TaylorPrunableNetwork(two_stage(), example, criterion="constant", budget="macs", per_learnable=True)
    chosen = by_macs.choose(max_units=3)
    assert {by_macs.graph.units[u].producers for u in chosen} == {("0",)}
    penalised = TaylorPrunableNetwork(two_stage(), example, criterion="constant", flops_weight=0.5)
    assert {penalised.graph.units[u].producers for u in penalised.choose(max_units=3)} == {("0",)}
    plain = TaylorPrunableNetwork(two_stage(), example, criterion="constant")
    assert [plain.graph.units[u].producers for u in plain.choose(max_units=3)] == [("0",)] * 3, (
        "stable order: the first units first (the same layer, by chance of order)"
    )
    # a MACs budget: the exact MACs the units remove reach it
    budget = 2000
    chosen = by_macs.choose(learnables=budget)
    removed = by_macs.graph.learnables_removed(chosen, by_macs.macs_per_weight)
    assert removed >= budget
    assert by_macs.graph.learnables_removed(chosen[:-1], by_macs.macs_per_weight) < budget


@pytest.mark.slow
def test_macs_reduction_as_a_study_objective_and_constraint(tmp_path):
    """With the Taylor-FO-BN criterion and the FLOPs penalty: item 4's levers from the command line too."""
    run_app(
        tmp_path,
        *FAST,
        *FAST_SEARCH,
        "pruning.budget=macs",
        "pruning.criterion=taylor-bn",
        "pruning.flops_weight=0.05",
        "sweep.objectives=[validation_accuracy,macs_reduction]",
        "sweep.directions=[maximize,maximize]",
        "+sweep.constraints.macs_reduction=0.25",
        "hydra.sweeper.n_trials=2",
        multirun=True,
    )
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    study = optuna.load_study(study_name="taylorprune", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.trials) == 2
    for trial in study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        macs = run.data.metrics["macs_reduction"]
        assert trial.values[1] == pytest.approx(macs)
        assert trial.user_attrs["constraints"] == [pytest.approx(0.25 - macs)]
        assert macs >= 0.3 and run.data.tags["taylorprune.stop_reason"] == "MACs reduction goal reached."
        assert run.data.params["pruning.criterion"] == "taylor-bn" and run.data.params["pruning.flops_weight"] == "0.05"
        history = client.get_metric_history(run.info.run_id, "pruning/macs")
        assert [m.step for m in history] == list(range(len(history))) and history[0].value > history[-1].value
