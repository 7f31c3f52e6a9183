"""One timm model per convolutional family: analysis leaves it as it was, and 20% of every group prunes exactly.

The same families as ``benchmarks/timm_zoo.py``. Each is analysed (its ``state_dict``, modes and
flags must stay bit-identical), then a random 20% of every group's units is removed with the
built-in surgery check on (it raises if the pruned network is not the original with those
channels zeroed) and the parameter count must equal the analysis' prediction. The families
the analysis refuses are listed with the reason, so that a change in either direction shows.
"""

from __future__ import annotations

import copy

import pytest

from benchmarks.timm_zoo import random_share
from prune_core import ChannelGraph, remove_units
from tests.support.state import assert_unchanged, snapshot
from tests.support.zoos import TIMM_FAMILIES, timm_model

pytest.importorskip("timm")

# family: an operation the analysis does not understand there. NF-ResNet's ScaledStdConv2d standardises
# its weight in forward and calls F.conv2d: a functional convolution, whose input channels could not be
# removed exactly anyway (the standardisation statistics would change).
REFUSED = {"nfnet": "torch.conv2d"}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(TIMM_FAMILIES))
def test_timm_family_is_left_as_it_was_and_prunes_exactly(family):
    model, example = timm_model(TIMM_FAMILIES[family])
    before = snapshot(model)
    graph = ChannelGraph.build(model, example)
    assert_unchanged(model, before)
    chosen = random_share(graph, 0.2)
    if family in REFUSED:
        assert not chosen
        assert any(REFUSED[family] in what for what in graph.unsupported)
        return
    assert len(chosen) > 0.1 * len(graph.removable_units())
    pruned = copy.deepcopy(model)
    remove_units(pruned, graph, chosen)  # the surgery check raises on any difference
    assert sum(p.numel() for p in pruned.parameters()) == graph.total_learnables - graph.learnables_removed(chosen)
    assert_unchanged(model, before)
