"""The surgery check on post-processed outputs: ``compare_at`` compares the tensors before post-processing."""

import pytest
import torch
from torch import nn

from benchmarks.timm_zoo import random_share
from prune_core import ChannelGraph, TaylorPrunableNetwork, remove_units
from prune_core.channels import SurgeryMismatch, check_equivalent, reference_outputs


class Scored(nn.Module):
    """Features and a head, then a post-processing output that a right surgery changes (here: how many
    filters the first layer has), as a detector's top-k and NMS may pick other boxes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU())
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        scores = self.head(self.backbone(x))
        return {"scores": scores, "post-processed": torch.tensor(float(self.backbone[0].out_channels))}


def some_units(graph: ChannelGraph) -> list[int]:
    return [u.id for u in graph.removable_units()][::3]


def test_the_check_compares_the_outputs_of_compare_at_instead_of_the_networks():
    x = torch.randn(2, 3, 12, 12)
    outputs = ChannelGraph.build(Scored().eval(), x)
    with pytest.raises(SurgeryMismatch, match="at tensor 1 of the output,"):
        remove_units(Scored().eval(), outputs, some_units(outputs))
    before = ChannelGraph.build(Scored().eval(), x, compare_at=["head"])
    assert before.compare_at == ("head",)
    pruned = Scored().eval()
    remove_units(pruned, before, some_units(before))  # the head's outputs are equal: accepted
    assert pruned.backbone[0].out_channels < 16


def test_a_wrong_surgery_is_caught_where_compare_at_compares():
    graph = ChannelGraph.build(Scored().eval(), torch.randn(2, 3, 12, 12), compare_at=["head"])
    model, chosen = Scored().eval(), some_units(graph)
    reference = reference_outputs(model, graph, chosen)
    remove_units(model, graph, chosen, verify=False)
    with torch.no_grad():
        model.head.bias += 1.0
    with pytest.raises(SurgeryMismatch, match="at tensor 0 of the outputs of `head` \\(compare_at\\)"):
        check_equivalent(model, graph, chosen, reference)


def test_compare_at_names_modules_of_the_model():
    with pytest.raises(ValueError, match=r"compare_at names \['neck'\], which are not submodules"):
        ChannelGraph.build(Scored(), torch.randn(1, 3, 12, 12), compare_at=["neck"])
    wrapped = TaylorPrunableNetwork(Scored().eval(), torch.randn(2, 3, 12, 12), compare_at="head")
    assert wrapped.graph.compare_at == ("head",)


@pytest.mark.slow
def test_a_torchvision_detector_is_pruned_with_the_check_before_post_processing():
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    torch.manual_seed(0)
    detector = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, num_classes=5).eval()
    images = ([torch.rand(3, 128, 128), torch.rand(3, 128, 96)],)  # a list of images, as detectors take
    graph = ChannelGraph.build(detector, images, compare_at=["rpn.head"])
    before = sum(p.numel() for p in detector.parameters())
    remove_units(detector, graph, random_share(graph, 0.2))  # the built-in check, on the RPN head's predictions
    assert sum(p.numel() for p in detector.parameters()) < before
    with torch.no_grad():
        detections = detector(*images)
    assert [sorted(d) for d in detections] == [["boxes", "labels", "scores"]] * 2
