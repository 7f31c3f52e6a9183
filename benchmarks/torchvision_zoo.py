"""Breadth over torchvision's whole catalogue: every model ``torchvision.models.list_models()`` names,
pruned by this project and by Torch-Pruning.

``graph_zoo``, ``model_zoo`` and the tests pick torchvision models by hand; this benchmark takes them
all (121 in torchvision 0.29) but the five over 150 M parameters (``TOO_LARGE``): classifiers,
semantic segmentation, video, optical flow, detection, and the quantizable classifiers in their float
form (``quantize=False``: ``QuantStub``, ``FloatFunctional`` additions). Random weights, nothing
downloaded (``weights=None``, ``weights_backbone=None``), eval mode, the examples of ``example``.

The protocol is ``model_zoo``'s: analyse (the state and modes checked unchanged), remove a random 20% of
every channel group, compare with the original with those channels zeroed; detectors on two images,
compared at the heads' raw predictions (``compare_at``: ``rpn.head`` for the R-CNNs, ``head`` for the
one-stage ones), the post-processed outputs reported beside. Torch-Pruning 1.6 (``MetaPruner``,
random importance, ratio 0.2, output layers protected) on the same model. Each tool on each model in
a process of its own, stopped after ``--limit`` seconds.

Run: ``python -m benchmarks.torchvision_zoo [--models ...] [--limit S]`` (the ``bench`` extra). Writes
``benchmarks/results/torchvision_zoo.csv`` and ``torchvision_zoo.md``.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torchvision import models

from benchmarks import model_zoo

TOO_LARGE = {"vit_h_14", "vit_l_16", "vit_l_32", "regnet_y_128gf", "convnext_large"}  # 198-644 M parameters
# classifiers that need more than 64x64: a fixed patch grid, or pools that 64x64 shrinks to nothing
CLASSIFIER_SIZE = {"inception_v3": 299, "quantized_inception_v3": 299, "maxvit_t": 224}
VIDEO_SIZE = {"mvit_v1_b": (16, 224), "mvit_v2_s": (16, 224), "s3d": (16, 224)}  # (frames, side); else (8, 64)


def catalogue() -> list[str]:
    """Every model torchvision lists, but ``TOO_LARGE``, by kind then name."""
    kinds = [models.detection, models.segmentation, models.video, models.optical_flow, models.quantization]
    special = {name for kind in kinds for name in models.list_models(kind)}
    classifiers = [name for name in models.list_models() if name not in special]
    names = classifiers + [name for kind in kinds for name in models.list_models(kind)]
    return [name for name in names if name not in TOO_LARGE]


def compare_at(name: str) -> list[str]:
    """A detector's heads whose raw predictions the check compares (``model_zoo.COMPARE_AT``'s choice)."""
    if name not in models.list_models(models.detection):
        return []
    return ["rpn.head"] if "rcnn" in name else ["head"]


def example(name: str) -> tuple[nn.Module, tuple]:
    """The model (seeded random weights, eval mode) and its example as positional arguments.

    >>> model, args = example("r3d_18")
    >>> type(model).__name__, tuple(args[0].shape)
    ('VideoResNet', (1, 3, 8, 64, 64))
    """
    torch.manual_seed(0)
    if name in models.list_models(models.detection):
        classes = 2 if name.startswith("keypoint") else 5
        model = models.get_model(name, weights=None, weights_backbone=None, num_classes=classes)
        return model.eval(), ([torch.rand(3, 160, 160), torch.rand(3, 160, 128)],)
    if name in models.list_models(models.segmentation):
        model = models.get_model(name, weights=None, weights_backbone=None, num_classes=10)
        return model.eval(), (torch.rand(2, 3, 96, 96),)
    if name in models.list_models(models.optical_flow):
        return models.get_model(name, weights=None).eval(), (torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128))
    if name in models.list_models(models.video):
        frames, side = VIDEO_SIZE.get(name, (8, 64))
        return models.get_model(name, weights=None, num_classes=10).eval(), (torch.rand(1, 3, frames, side, side),)
    keywords = {"quantize": False} if name in models.list_models(models.quantization) else {}
    model = models.get_model(name, weights=None, num_classes=10, **keywords)
    size = CLASSIFIER_SIZE.get(name, 224 if name.startswith("vit_") else 64)
    return model.eval(), (torch.rand(2, 3, size, size),)


def one(name: str, tool: str) -> None:
    """Measure one model with one tool, in this process (``model_zoo.run_model`` starts it)."""
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    model, args = example(name)
    model_zoo.measure(model, args if len(args) > 1 or compare_at(name) else args[0], tool, compare_at(name))


def main() -> None:
    libraries = ("torchvision", "torch", "torch_pruning")
    model_zoo.zoo_main(
        __doc__.splitlines()[0], "benchmarks.torchvision_zoo", catalogue(), one, libraries, "random weights"
    )


if __name__ == "__main__":
    main()
