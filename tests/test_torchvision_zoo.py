"""The reference set: torchvision's classification CNNs are analysed, pruned and stay exact."""

from __future__ import annotations

import pytest
import torch

from tests.equivalence import check_surgery

models = pytest.importorskip("torchvision.models")

ZOO = [
    "resnet18", "vgg11_bn", "mobilenet_v2", "mobilenet_v3_small", "densenet121", "resnext50_32x4d",
    "efficientnet_b0", "regnet_y_400mf", "googlenet", "squeezenet1_1", "shufflenet_v2_x0_5", "mnasnet0_5",
    "convnext_tiny",
]
RENORMALISING = {"convnext_tiny"}  # LayerNorm over channels: exact zero-equivalence does not hold


@pytest.mark.parametrize("name", ZOO)
def test_torchvision_model_prunes_correctly(name):
    torch.manual_seed(0)
    kwargs = {"init_weights": True} if name == "googlenet" else {}
    model = getattr(models, name)(weights=None, num_classes=10, **kwargs)
    result = check_surgery(model, torch.randn(2, 3, 64, 64), fraction=0.3)
    assert len(result["removed"]) > 0.2 * len(result["graph"].removable_units())
    assert result["params"] == result["predicted_params"]
    if name not in RENORMALISING:
        assert result["effect"] > 1e-6
        assert result["max_error"] <= 1e-4 * max(1.0, result["scale"])
    # the classifier's outputs are never pruned
    out = result["pruned"](torch.randn(1, 3, 64, 64))
    logits = out.logits if hasattr(out, "logits") else out
    assert logits.shape[-1] == 10


def test_googlenet_auxiliary_heads_stay_consistent_in_training_mode():
    model = models.googlenet(weights=None, num_classes=10, aux_logits=True, init_weights=True)
    result = check_surgery(model, torch.randn(2, 3, 64, 64), fraction=0.3)
    pruned = result["pruned"].train()
    out = pruned(torch.randn(2, 3, 64, 64))
    assert out.logits.shape == out.aux_logits1.shape == (2, 10)
