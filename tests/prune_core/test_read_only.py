"""Analysis is read-only: the caller's parameters, buffers, requires_grad flags and modes stay bit-identical.

Checked on every model of every zoo the tests use (the small architectures and torchvision's
reference set here; timm's families in ``test_timm_zoo``), for everything that looks at a model
without being asked to shrink it: ``ChannelGraph.build``, ``analyze_compression``,
``TaylorPrunableNetwork`` set-up, scoring, and the surgery check's reference pass.
"""

from __future__ import annotations

import pytest
import torch

from prune_core import ChannelGraph, TaylorPrunableNetwork, analyze_compression
from prune_core.channels import reference_outputs
from tests.support.architectures import ARCHITECTURES
from tests.support.state import assert_unchanged, snapshot
from tests.support.zoos import TORCHVISION_ZOO, timm_model, torchvision_model


def mixed_state(model: torch.nn.Module, train: bool) -> torch.nn.Module:
    """Train or eval mode with one frozen parameter, so modes and flags have something to lose."""
    model.train(train)
    first = next(model.parameters(), None)
    if first is not None:
        first.requires_grad_(False)
    return model


def check_read_only(model: torch.nn.Module, example) -> None:
    before = snapshot(model)
    graph = ChannelGraph.build(model, example)
    assert_unchanged(model, before)
    analyze_compression(model, example, verbose=False)
    assert_unchanged(model, before)
    if graph.removable_units():
        TaylorPrunableNetwork(model, example)
        assert_unchanged(model, before)
        reference_outputs(model, graph, graph.greedy_removal([u.id for u in graph.removable_units()][:3]))
        assert_unchanged(model, before)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_small_architectures_are_left_as_they_were(name, train):
    model, example = ARCHITECTURES[name]()
    check_read_only(mixed_state(model, train), example)


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION_ZOO)
def test_torchvision_models_are_left_as_they_were(name):
    model, example = torchvision_model(name)
    check_read_only(mixed_state(model, train=False), example)


class TensorConstant(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(x) + torch.tensor([1.0])  # fx stores this constant on the traced module


def test_tracing_leaves_no_attribute_behind():
    model = TensorConstant()
    before = snapshot(model)
    ChannelGraph.build(model, torch.randn(1, 3, 4, 4))
    assert_unchanged(model, before)


def test_scoring_leaves_buffers_and_modes_alone():
    model, example = timm_model("regnety_002")  # BatchNormAct2d: traced through, F.batch_norm(training=True)
    prunable = TaylorPrunableNetwork(mixed_state(model, train=False), example)
    before = snapshot(model)
    prunable.update_score(torch.randn(4, 3, 64, 64), torch.randint(0, 10, (4,)))
    assert_unchanged(model, before)
    assert all(p.grad is None for p in model.parameters())
