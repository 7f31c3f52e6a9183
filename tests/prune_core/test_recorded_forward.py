"""Models whose forward is ordinary Python that torch.fx proxies cannot run are analysed from a
recording of the forward as it runs, and their surgery is exact.

Each model below fails symbolic tracing for one of the reasons met on public models (iterating
a ``chunk``, ``len``/``int``/``math`` on sizes, a helper returning ``None``, a dataclass output,
a list of images, keyword arguments). For each: the analysis runs, some filters are removable,
and removing a random share of them gives exactly the original with those channels zeroed.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prune_core import ChannelGraph, TaylorPrunableNetwork, remove_units
from prune_core.channels import TraceFailure, trace_model
from tests.support.equivalence import check_surgery


def conv_bn(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class SplitLoop(nn.Module):
    """A C2f block (YOLOv8): split in two, run a chain on the last part, concatenate every part."""

    def __init__(self, c: int = 8, n: int = 2) -> None:
        super().__init__()
        self.cv1 = conv_bn(3, 2 * c, 1)
        self.m = nn.ModuleList(conv_bn(c, c) for _ in range(n))
        self.cv2 = conv_bn((2 + n) * c, c, 1)
        self.head = nn.Linear(c, 4)

    def forward(self, x):
        ys = list(self.cv1(x).chunk(2, 1))
        ys.extend(m(ys[-1]) for m in self.m)
        y = self.cv2(torch.cat(ys, 1))
        return self.head(y.mean((2, 3)))


class SizeMath(nn.Module):
    """``len``, ``int`` and ``math.ceil`` on sizes, a pad to a multiple of the patch size."""

    def __init__(self, patch: int = 4) -> None:
        super().__init__()
        self.patch = patch
        self.stem = conv_bn(3, 8)
        self.body = conv_bn(8, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        if len(x.shape) == 3:
            x = x.unsqueeze(0)
        h = int(x.shape[-2] / self.patch)
        pad = math.ceil(x.shape[-1] / self.patch) * self.patch - x.shape[-1]
        x = F.pad(self.stem(x), (0, pad))
        x = F.adaptive_avg_pool2d(self.body(x), (h, h))
        return self.head(x.flatten(2).mean(2))


class Optional(nn.Module):
    """A helper that returns ``None`` on one path and reads an attribute of its input."""

    def __init__(self) -> None:
        super().__init__()
        self.a = conv_bn(3, 8)
        self.b = conv_bn(8, 8)
        self.out = nn.Conv2d(8, 2, 1)

    @staticmethod
    def skip(x):
        return None if x.dtype != torch.float32 else x

    def forward(self, x):
        y = self.a(x)
        s = self.skip(y)
        z = self.b(y)
        return self.out(z + s if s is not None else z)


@dataclass
class Output:
    logits: torch.Tensor
    features: list


class DataclassOut(nn.Module):
    """A dataclass output holding a list of feature maps: every tensor in it is a network output."""

    def __init__(self) -> None:
        super().__init__()
        self.a = conv_bn(3, 8)
        self.b = conv_bn(8, 16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x) -> Output:
        f1 = self.a(x)
        f2 = self.b(f1)
        return Output(self.fc(f2.mean((2, 3))), [f2.amax((2, 3))])


class ImageList(nn.Module):
    """A detector-style input: a list of images of different sizes, resized and batched inside."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(conv_bn(3, 8), conv_bn(8, 16))
        self.cls = nn.Conv2d(16, 3, 1)

    def forward(self, images: list[torch.Tensor]):
        batch = torch.stack([F.interpolate(im[None], size=(12, 12), mode="bilinear")[0] for im in images])
        return {"logits": self.cls(self.backbone(batch))}


class TimeConditioned(nn.Module):
    """Keyword inputs (``x`` and a timestep ``t``) and a feature map scaled by the timestep."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv_bn(3, 8)
        self.conv2 = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x, t):
        if len(t.shape) == 1:
            t = t[:, None]
        h = self.conv1(x) * (1 + t[:, :, None, None])
        return self.conv2(h)


CASES = {
    "split-loop": (SplitLoop, lambda: torch.randn(2, 3, 8, 8)),
    "size-math": (SizeMath, lambda: torch.randn(2, 3, 10, 10)),
    "optional": (Optional, lambda: torch.randn(2, 3, 6, 6)),
    "dataclass-output": (DataclassOut, lambda: torch.randn(2, 3, 6, 6)),
    "image-list": (ImageList, lambda: ([torch.randn(3, 10, 12), torch.randn(3, 14, 9)],)),
    "keyword-inputs": (TimeConditioned, lambda: {"x": torch.randn(2, 3, 6, 6), "t": torch.rand(2)}),
}


@pytest.mark.parametrize("name", ["split-loop", "size-math"])
def test_symbolic_tracing_refuses_them(name):
    with pytest.raises(TraceFailure):
        trace_model(CASES[name][0]())


@pytest.mark.parametrize("name", list(CASES))
def test_recorded_forward_prunes_exactly(name):
    model_type, make_example = CASES[name]
    torch.manual_seed(0)
    result = check_surgery(model_type(), make_example(), fraction=0.4)
    assert result["removed"], f"{name}: nothing prunable"
    assert result["params"] == result["predicted_params"]
    assert result["max_error"] < 1e-4
    assert result["effect"] > 1e-3  # the removal mattered


def test_outputs_are_never_pruned():
    model = DataclassOut().eval()
    graph = ChannelGraph.build(model, torch.randn(2, 3, 6, 6))
    assert all("b" not in u.producers for u in graph.removable_units())  # f2 reaches the output through amax


def test_the_recording_leaves_the_model_as_it_was():
    model = SplitLoop().eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ChannelGraph.build(model, torch.randn(2, 3, 8, 8))
    assert not model.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert set(vars(model)) == set(vars(SplitLoop()))


def test_keyword_and_list_inputs_score_and_prune_in_a_custom_loop():
    model = TimeConditioned()
    example = {"x": torch.randn(4, 3, 6, 6), "t": torch.rand(4)}
    prunable = TaylorPrunableNetwork(model, example)
    out = prunable.model(**example)
    prunable.model.zero_grad()
    with prunable.scoring():
        prunable.model(**example).square().mean().backward()
    before = prunable.num_prunables
    prunable.prune(max_to_prune=2)
    assert prunable.num_prunables == before - 2
    assert prunable.model(**example).shape == out.shape


def _public_models():
    from torchvision.models import detection, optical_flow

    return {
        # iterative refinement in a Python loop; a number among the positional arguments
        "raft_small": (optical_flow.raft_small, (torch.randn(1, 3, 128, 128), torch.randn(1, 3, 128, 128), 2)),
        # a detector in eval mode: a list of images in, a list of dicts out
        "ssdlite320": (
            lambda: detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5),
            ([torch.rand(3, 320, 320)],),
        ),
    }


@pytest.mark.parametrize("name", ["raft_small", "ssdlite320"])
def test_public_models_fx_cannot_trace_are_analysed_and_pruned(name):
    make, example = _public_models()[name]
    torch.manual_seed(0)
    model = make().eval()
    graph = ChannelGraph.build(model, example)
    rng = np.random.default_rng(0)
    chosen = graph.greedy_removal([u.id for u in graph.removable_units() if rng.random() < 0.2])
    assert len(chosen) > 100
    pruned = copy.deepcopy(model)
    remove_units(pruned, graph, chosen)  # the built-in surgery check runs on the example input
    assert sum(p.numel() for p in pruned.parameters()) == graph.total_learnables - graph.learnables_removed(chosen)
