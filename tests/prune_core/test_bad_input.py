"""Bad input gets a clear error naming the argument, the value and what is allowed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prune_core import ChannelGraph, ExampleInputMismatch, TraceFailure, analyze_compression, remove_units
from tests.support.architectures import ReferenceCNN1d, TinyResNet


def test_not_a_module():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got dict"):
        ChannelGraph.build({"conv": 1}, torch.zeros(1))


def test_example_input_of_the_wrong_shape_names_the_layer():
    expected = r"module `conv1` \(Conv1d\) failed on inputs of shape \[\(4, 3, 40\)\]"
    with pytest.raises(ExampleInputMismatch, match=expected):
        ChannelGraph.build(ReferenceCNN1d(), torch.zeros(4, 3, 40))


def test_example_input_of_the_wrong_shape_for_a_costly_layer_names_it_too():
    # a layer this large runs on the meta device during the analysis: its shape errors are the real layer's
    model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.ReLU(), nn.Conv2d(64, 8, 3))
    expected = (
        r"module `0` \(Conv2d\) failed on inputs of shape \[\(1, 4, 224, 224\)\]: "
        r"RuntimeError: .*to have 3 channels, but got 4"
    )
    with pytest.raises(ExampleInputMismatch, match=expected):
        ChannelGraph.build(model, torch.zeros(1, 4, 224, 224))


def test_example_input_that_is_not_a_tensor():
    with pytest.raises(
        TypeError,
        match=r"example_input must be a tensor, a tuple of positional arguments .* or a "
        r"dict of keyword arguments; example_input\[0\] is \['float'\]",
    ):
        ChannelGraph.build(ReferenceCNN1d(), [[0.0]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device to mismatch")
def test_example_input_on_another_device():
    with pytest.raises(ValueError, match="example_input\\[0\\] is on cuda"):
        ChannelGraph.build(ReferenceCNN1d(), torch.zeros(4, 1, 40, device="cuda"))


def test_meta_device_mismatch_is_reported():
    with pytest.raises(ValueError, match="example_input\\[0\\] is on meta but the model's parameters are on cpu"):
        ChannelGraph.build(ReferenceCNN1d(), torch.zeros(4, 1, 40, device="meta"))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.gate = Gate()

    def forward(self, x):
        return self.gate(self.conv(x))


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # control flow on a tensor value: not traceable
            return x
        return -x


def test_a_branch_on_values_is_recorded_along_the_example_path():
    graph = ChannelGraph.build(DataDependent(), torch.zeros(1, 3, 4, 4))
    assert graph.unsupported == ()  # x.sum() > 0 ran on the example: the gate is a negation there


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        scale = None if x.shape[-1] > 2 else 2.0  # the model's own error on this example, on the next line
        return self.conv(x) * scale


def test_an_error_of_the_models_own_forward_quotes_its_frame():
    expected = (
        r"the model's own forward raised TypeError on the example input at .*test_bad_input.py:\d+ in "
        r"forward: `return self.conv\(x\) \* scale`"
    )
    with pytest.raises(TraceFailure, match=expected):
        ChannelGraph.build(Broken(), torch.zeros(1, 3, 4, 4))


def test_without_an_example_symbolic_tracing_failures_name_the_module():
    from prune_core.channels import trace_model

    with pytest.raises(TraceFailure, match=r"the forward of `gate` \(Gate\) raised .*leaf_modules=\['gate'\]"):
        trace_model(DataDependent())


def test_marking_it_as_a_leaf_leaves_its_channels_unpruned():
    report = analyze_compression(DataDependent(), torch.zeros(1, 3, 4, 4), leaf_modules=["gate"], verbose=False)
    assert not report.groups["prunable"].any()
    assert "unsupported operation `gate (Gate)`" in report.groups["reason"].iloc[0]


def test_unknown_layer_names_list_near_matches():
    expected = r"layer_names entry 'stage1.0.bdy' is not a layer.*did you mean \['stage1.0.body'"
    with pytest.raises(ValueError, match=expected):
        ChannelGraph.build(TinyResNet(), torch.zeros(1, 3, 8, 8), layer_names=["stage1.0.bdy"])


def test_unknown_leaf_module_names():
    with pytest.raises(ValueError, match=r"leaf_modules names \['nope'\]"):
        ChannelGraph.build(TinyResNet(), torch.zeros(1, 3, 8, 8), leaf_modules=["nope"])


def test_removing_every_filter_of_a_layer_is_refused_and_nothing_changes():
    model = ReferenceCNN1d()
    graph = ChannelGraph.build(model, torch.zeros(2, 1, 40))
    conv1_units = [u.id for u in graph.units if u.producers == ("conv1",)]
    before = model.conv1.weight.clone()
    with pytest.raises(ValueError, match="would delete every channel of `conv1`"):
        remove_units(model, graph, conv1_units)
    assert torch.equal(model.conv1.weight, before)


def test_removing_a_blocked_unit_is_refused_with_the_reason():
    model = ReferenceCNN1d()
    graph = ChannelGraph.build(model, torch.zeros(2, 1, 40), layer_names=["conv2"])
    blocked = next(u for u in graph.units if not u.removable)
    with pytest.raises(ValueError, match="cannot be removed: not affected by the requested layer_names"):
        remove_units(model, graph, [blocked.id])
