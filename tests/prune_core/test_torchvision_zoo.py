"""The reference set: torchvision's classification CNNs are analysed, pruned and stay exact."""

from __future__ import annotations

import pytest
import torch

from tests.support.equivalence import check_surgery
from tests.support.zoos import TORCHVISION_ZOO, torchvision_model

models = pytest.importorskip("torchvision.models")

RENORMALISING = {"convnext_tiny"}  # LayerNorm over channels: exact zero-equivalence does not hold


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION_ZOO)
def test_torchvision_model_prunes_correctly(name):
    model, example = torchvision_model(name)
    result = check_surgery(model, example, fraction=0.3)
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


@pytest.mark.slow
def test_video_swin_whose_wrapped_helper_fills_in_a_list_prunes_correctly():
    # torchvision's 3-D Swin passes its window size, a list, to an fx-wrapped helper that overwrites entries
    torch.manual_seed(0)
    model = models.video.swin3d_t(weights=None, num_classes=10).eval()
    result = check_surgery(model, torch.randn(1, 3, 8, 64, 64), fraction=0.2)
    assert len(result["removed"]) > 0.1 * len(result["graph"].removable_units())
    assert result["params"] == result["predicted_params"]
    assert result["max_error"] <= 1e-4 * max(1.0, result["scale"])
