"""The public model zoos the tests run on: torchvision's reference set and one timm model per family.

>>> model, example = torchvision_model("resnet18")
>>> tuple(example.shape), model.fc.out_features
((2, 3, 64, 64), 10)
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.timm_zoo import FAMILIES as TIMM_FAMILIES
from benchmarks.timm_zoo import INPUT_SIZE as TIMM_INPUT_SIZE

TORCHVISION_ZOO = [
    "resnet18",
    "vgg11_bn",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "densenet121",
    "resnext50_32x4d",
    "efficientnet_b0",
    "regnet_y_400mf",
    "googlenet",
    "squeezenet1_1",
    "shufflenet_v2_x0_5",
    "mnasnet0_5",
    "convnext_tiny",
]

__all__ = ["TIMM_FAMILIES", "TORCHVISION_ZOO", "timm_model", "torchvision_model"]


def torchvision_model(name: str) -> tuple[nn.Module, torch.Tensor]:
    """A torchvision classifier with random weights, 10 classes, and a 2x3x64x64 example."""
    from torchvision import models

    torch.manual_seed(0)
    kwargs = {"init_weights": True} if name == "googlenet" else {}
    return getattr(models, name)(weights=None, num_classes=10, **kwargs), torch.randn(2, 3, 64, 64)


def timm_model(name: str) -> tuple[nn.Module, torch.Tensor]:
    """A timm model with random weights (nothing downloaded), 10 classes, and its example input."""
    import timm

    torch.manual_seed(0)
    size = TIMM_INPUT_SIZE.get(name, 64)
    return timm.create_model(name, pretrained=False, num_classes=10).eval(), torch.randn(2, 3, size, size)
