"""Model builders for the jobs (any ``nn.Module`` builder works through ``model._target_``).

The project's small networks, and any model of timm or torchvision by name (``timm_model``,
``torchvision_model``): always built with random weights (nothing is downloaded), then loaded
with your trained weights from a local file when one is given (``save_pruned``'s safe format or
a plain ``state_dict``).

>>> import torch
>>> reference_cnn1d()(torch.zeros(2, 1, 40)).shape
torch.Size([2, 10])
>>> deeper_cnn1d()(torch.zeros(2, 1, 40)).shape, small_cnn2d()(torch.zeros(2, 1, 8, 8)).shape
(torch.Size([2, 10]), torch.Size([2, 10]))
>>> small_resnet()(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf
from torch import nn

from sweeps.layout import load_checkpoint


def _block(conv: type[nn.Module], norm: type[nn.Module], cin: int, cout: int, k: int, **kw) -> list[nn.Module]:
    return [conv(cin, cout, k, padding=k // 2, **kw), norm(cout), nn.ReLU()]


def reference_cnn1d(in_channels: int = 1, classes: int = 10, width: int = 32, kernel_size: int = 5) -> nn.Sequential:
    """The reference example's kind of network: two Conv1d+BatchNorm+ReLU blocks, global
    average pooling and a fully connected classifier."""
    return nn.Sequential(
        *_block(nn.Conv1d, nn.BatchNorm1d, in_channels, width, kernel_size),
        *_block(nn.Conv1d, nn.BatchNorm1d, width, 2 * width, kernel_size),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(2 * width, classes),
    )


def deeper_cnn1d(
    in_channels: int = 1, classes: int = 10, width: int = 64, depth: int = 3, kernel_size: int = 5, length: int = 40
) -> nn.Sequential:
    """``depth`` Conv1d(width)+BatchNorm+ReLU blocks, flatten and a linear classifier."""
    layers = []
    for k in range(depth):
        layers += _block(nn.Conv1d, nn.BatchNorm1d, in_channels if k == 0 else width, width, kernel_size)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * length, classes))


def small_cnn2d(in_channels: int = 1, classes: int = 10, width: int = 16) -> nn.Sequential:
    """Two Conv2d blocks with max pooling, global pooling and a classifier (for 8x8 digits and up)."""
    return nn.Sequential(
        *_block(nn.Conv2d, nn.BatchNorm2d, in_channels, width, 3),
        nn.MaxPool2d(2),
        *_block(nn.Conv2d, nn.BatchNorm2d, width, 2 * width, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, classes),
    )


class BasicBlock(nn.Module):
    """A residual block: two 3x3 convs with BatchNorm, a 1x1 projection when the width changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def small_resnet(in_channels: int = 1, classes: int = 10, width: int = 16) -> nn.Sequential:
    """A stem and three residual stages (width, 2x, 4x; stride 2 between stages)."""
    return nn.Sequential(
        *_block(nn.Conv2d, nn.BatchNorm2d, in_channels, width, 3, bias=False),
        BasicBlock(width, width),
        BasicBlock(width, 2 * width, stride=2),
        BasicBlock(2 * width, 4 * width, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, classes),
    )


def _weights(model: nn.Module, path: str | None, argument: str) -> nn.Module:
    if path is None:
        return model
    return load_checkpoint(path, lambda: model, argument)


def timm_model(
    name: str, num_classes: int, in_chans: int = 3, checkpoint: str | None = None, model_kwargs: Mapping | None = None
) -> nn.Module:
    """timm's ``name`` with ``num_classes`` outputs, ``pretrained=False``; ``checkpoint``: your weights file;
    ``model_kwargs``: the model's own arguments, such as a vision transformer's ``img_size`` and
    ``patch_size`` for small images (``+model.model_kwargs.img_size=32``). ``timm.create_model``'s
    own arguments (``pretrained``, ``checkpoint_path``, ...) are refused there: weights come from
    ``checkpoint``, never from a download."""
    try:
        import timm
    except ImportError as exc:
        raise ValueError("model=timm needs timm: pip install 'taylorprune[vision]'") from exc
    if not timm.is_model(name):
        raise ValueError(f"model.name={name!r} is not a timm model; see timm.list_models()")
    extra = dict(OmegaConf.to_container(model_kwargs) if isinstance(model_kwargs, DictConfig) else model_kwargs or {})
    reserved = {"num_classes", "in_chans"} | set(inspect.signature(timm.create_model).parameters) - {"kwargs"}
    if refused := sorted(reserved & set(extra)):
        raise ValueError(
            f"model.model_kwargs={extra} sets {refused}: give num_classes and in_chans as model.num_classes and "
            "model.in_chans, your weights as model.checkpoint; the rest of timm.create_model's own arguments "
            "are not taken"
        )
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **extra)
    return _weights(model, checkpoint, "model.checkpoint")


def torchvision_model(name: str, num_classes: int, weights_path: str | None = None) -> nn.Module:
    """torchvision's ``name`` with ``num_classes`` outputs, ``weights=None``; ``weights_path``: your weights file."""
    import torchvision

    if name not in torchvision.models.list_models():
        raise ValueError(f"model.name={name!r} is not a torchvision model; see torchvision.models.list_models()")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return _weights(model, weights_path, "model.weights_path")
