"""Breadth over segmentation_models_pytorch: every decoder architecture, and the U-Net over encoders of many
lineages, pruned by this project and by Torch-Pruning.

Each model is built with random weights (``encoder_weights=None``: nothing downloaded), three classes, in
eval mode, and called on two 256x256 images (224x224 for DPT). ``MODELS`` lists them:

- the 12 architectures over a ResNet-34 encoder (Segformer over its own MiT-B0, DPT over a ViT-S/16);
- the U-Net over 16 other encoders: torchvision's and Cadene's CNNs (MobileNet v2, DenseNet, VGG with
  BatchNorm, Xception, Inception v4, DPN, SE-ResNet), ``efficientnet_pytorch``'s EfficientNet (TensorFlow's
  "same" padding: a ``ZeroPad2d``, then ``F.conv2d`` with the layer's own weight), timm's through SMP's
  ``timm-`` and ``tu-`` prefixes (EfficientNet, Res2Net, RegNetY, GERNet, ConvNeXt, MobileNet v3), MobileOne
  and the MiT-B0 transformer.

The protocol is ``model_zoo``'s: analyse (the state and modes checked unchanged), remove a random 20% of every
channel group, compare with the original with those channels zeroed, count the parameters; Torch-Pruning 1.6
(``MetaPruner``, random importance, ratio 0.2, output layers protected, no model-specific settings) on the same
model. Each tool on each model in a process of its own, stopped after ``--limit`` seconds. The maximum
reduction counts every parameter, those of encoder stages a decoder never calls too (PSPNet uses the first
three of the encoder's five).

Run: ``python -m benchmarks.smp_zoo [--models ...] [--limit S]`` (the ``bench`` extra). Writes
``benchmarks/results/smp_zoo.csv`` and ``smp_zoo.md``.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks import model_zoo

ARCHITECTURES = ("Unet", "UnetPlusPlus", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "Linknet", "MAnet", "PAN")
UNET_ENCODERS = (
    "mobilenet_v2",
    "densenet121",
    "vgg11_bn",
    "xception",
    "inceptionv4",
    "dpn68",
    "se_resnet50",
    "efficientnet-b0",
    "timm-efficientnet-b0",
    "timm-res2net50_26w_4s",
    "timm-regnety_002",
    "timm-gernet_s",
    "tu-convnext_atto",
    "tu-mobilenetv3_small_100",
    "mobileone_s0",
    "mit_b0",
)
# name: (architecture, encoder)
MODELS: dict[str, tuple[str, str]] = {
    **{f"{arch}/resnet34": (arch, "resnet34") for arch in ARCHITECTURES},
    "UPerNet/resnet34": ("UPerNet", "resnet34"),
    "Segformer/mit_b0": ("Segformer", "mit_b0"),
    "DPT/vit_small": ("DPT", "tu-vit_small_patch16_224"),
    **{f"Unet/{encoder}": ("Unet", encoder) for encoder in UNET_ENCODERS},
}


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The model (seeded random weights, eval mode) and its example.

    >>> model, example = build("Linknet/resnet34")
    >>> type(model).__name__, tuple(example.shape), tuple(model(example).shape)
    ('Linknet', (2, 3, 256, 256), (2, 3, 256, 256))
    """
    import segmentation_models_pytorch as smp

    architecture, encoder = MODELS[name]
    torch.manual_seed(0)
    model = getattr(smp, architecture)(encoder_name=encoder, encoder_weights=None, classes=3).eval()
    size = 224 if architecture == "DPT" else 256
    return model, torch.rand(2, 3, size, size)


def one(name: str, tool: str) -> None:
    """Measure one model with one tool, in this process (``model_zoo.run_model`` starts it)."""
    model_zoo.measure_built(build, name, tool)


def main() -> None:
    libraries = ("segmentation_models_pytorch", "torch", "torch_pruning")
    model_zoo.zoo_main(
        __doc__.splitlines()[0], "benchmarks.smp_zoo", list(MODELS), one, libraries, "random weights, 3 classes"
    )


if __name__ == "__main__":
    main()
