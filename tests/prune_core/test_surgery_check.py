"""The built-in surgery check catches a wrong coupling rule, and leaves the network as it was."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prune_core import (
    ChannelGraph,
    SurgeryMismatch,
    TaylorPrunableNetwork,
    TrainingOptions,
    compress_network,
    register_module_rule,
    remove_units,
)
from prune_core.channels import check_equivalent, reference_outputs, unregister_module_rule


class Shuffled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.shuffle = nn.ChannelShuffle(2)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.shuffle(self.conv(x).relu())).mean((2, 3))


@pytest.fixture
def wrong_rule():
    """A deliberately wrong coupling rule: channel shuffle treated as channel-wise (it permutes channels)."""
    register_module_rule(nn.ChannelShuffle, "elementwise")
    yield
    unregister_module_rule(nn.ChannelShuffle)


def state(model: nn.Module) -> tuple:
    return copy.deepcopy(model.state_dict()), [repr(m) for m in model.modules()]


def test_a_wrong_rule_is_caught_and_the_model_left_as_it_was(wrong_rule):
    torch.manual_seed(0)
    model, example = Shuffled().eval(), torch.randn(2, 3, 6, 6)
    graph = ChannelGraph.build(model, example)
    before = state(model)
    with pytest.raises(
        SurgeryMismatch,
        match=r"units \[0, 1\] \(filters of `conv`; also shrinking `head`\).*"
        r"left as it was",
    ):
        remove_units(model, graph, [0, 1])
    after = state(model)
    assert after[1] == before[1]
    assert all(torch.equal(after[0][k], v) for k, v in before[0].items())
    with torch.no_grad():
        model(example)  # still runs: nothing half-pruned


def test_without_the_check_the_same_rule_gives_a_silently_wrong_network(wrong_rule):
    torch.manual_seed(0)
    model, example = Shuffled().eval(), torch.randn(2, 3, 6, 6)
    graph = ChannelGraph.build(model, example)
    reference = reference_outputs(model, graph, [0, 1])[0]
    remove_units(model, graph, [0, 1], verify=False)
    with torch.no_grad():
        assert (model(example) - reference).abs().max() > 1e-3


def test_prunable_and_compress_network_refuse_to_return_a_wrong_network(wrong_rule):
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 6, 6), torch.randint(0, 4, (16,))
    prunable = TaylorPrunableNetwork(Shuffled(), x[:2])
    prunable.update_score(x, y)
    units = len(prunable.graph.units)
    with pytest.raises(SurgeryMismatch):
        prunable.prune(3)
    assert len(prunable.graph.units) == units and prunable.model.conv.out_channels == 8
    with pytest.raises(SurgeryMismatch):
        compress_network(Shuffled(), x, y, "crossentropy", TrainingOptions("adam", max_epochs=1), verbosity="off")


def test_the_check_passes_silently_on_a_correct_rule():
    torch.manual_seed(0)
    model, example = Shuffled().eval(), torch.randn(2, 3, 6, 6)
    graph = ChannelGraph.build(model, example)
    assert graph.units[0].counts[("conv.weight", 0)] == 2  # each shuffle group loses the same position
    remove_units(model, graph, [0, 1])
    assert model.conv.out_channels == 4 and model.head.in_channels == 4


def test_a_layer_norm_over_channels_is_checked_exactly():
    from tests.support.architectures import ARCHITECTURES

    model, example = ARCHITECTURES["layernorm_channels"]()
    model.eval()
    graph = ChannelGraph.build(model, example)
    chosen = [u.id for u in graph.removable_units()][:2]
    reference = reference_outputs(model, graph, chosen)
    remove_units(model, graph, chosen)  # exact: the reference normalises over the kept channels
    check_equivalent(model, graph, chosen, reference)
    with torch.no_grad():
        model.norm.weight[0] += 0.5  # a wrong affine entry in the renormalising norm
    with pytest.raises(SurgeryMismatch, match="differs from the original"):
        check_equivalent(model, graph, chosen, reference)


def test_the_check_runs_in_full_precision_under_a_callers_autocast():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 38, 4))
    graph = ChannelGraph.build(net, torch.randn(2, 1, 40))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 fine-tuning around it, say
        assert net(torch.randn(2, 1, 40)).dtype == torch.bfloat16
        (reference,) = reference_outputs(net, graph, [0])
    assert reference.dtype == torch.float32


def test_the_reference_pass_puts_every_zeroed_weight_back_even_when_the_forward_raises():
    """The reference zeroes the removed channels in place for its one pass: whatever happens, the model's tensors
    are the same objects, bit for bit, afterwards (a weight zeroed along two dims included)."""
    torch.manual_seed(0)
    model, example = Shuffled().eval(), torch.randn(2, 3, 6, 6)
    graph = ChannelGraph.build(model, example)
    tensors = {name: (p, p.detach().clone()) for name, p in model.named_parameters()}
    inputs = list(graph.removal_plan([0, 5])[("head.weight", 1)])  # where the shuffle put the two channels
    reference_outputs(model, graph, [0, 5])
    assert all(model.get_parameter(n) is p and torch.equal(p, saved) for n, (p, saved) in tensors.items())

    def refuse(module, args):
        assert not module.weight[:, inputs].any(), "the removed input channels read zero during the pass"
        raise RuntimeError("a forward that fails half-way")

    handle = model.head.register_forward_pre_hook(refuse)
    with pytest.raises(RuntimeError, match="half-way"):
        reference_outputs(model, graph, [0, 5])
    handle.remove()
    assert all(model.get_parameter(n) is p and torch.equal(p, saved) for n, (p, saved) in tensors.items())
