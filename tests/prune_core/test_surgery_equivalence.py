"""Pruned output == original output with the removed channels zeroed at the group boundary."""

from __future__ import annotations

import pytest
import torch

from tests.support.architectures import ARCHITECTURES
from tests.support.equivalence import check_surgery

EXACT = [name for name in ARCHITECTURES if name != "layernorm_channels"]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", EXACT)
def test_pruned_equals_zeroed_reference(name, seed):
    model, example = ARCHITECTURES[name]()
    result = check_surgery(model, example, fraction=0.4, seed=seed)
    assert result["removed"], "the random choice removed nothing"
    assert result["params"] == result["predicted_params"]
    assert result["effect"] > 1e-4, "zeroing the removed channels changed nothing: the check would be vacuous"
    assert result["max_error"] <= 1e-5 * max(1.0, result["scale"])


def test_pruned_model_stays_trainable_and_scriptable():
    model, example = ARCHITECTURES["residual"]()
    pruned = check_surgery(model, example, fraction=0.5)["pruned"].train()
    loss = pruned(example).square().mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in pruned.parameters())
    scripted = torch.jit.script(pruned.eval())
    with torch.no_grad():
        assert torch.allclose(scripted(example), pruned(example))


def test_layernorm_over_channels_renormalises_the_kept_channels():
    # LayerNorm mixes channels, so zeroing is not equivalent; the pruned LayerNorm must hold exactly
    # the kept channels' affine parameters and normalise over them.
    model, example = ARCHITECTURES["layernorm_channels"]()
    result = check_surgery(model, example, fraction=0.4)
    graph, pruned = result["graph"], result["pruned"]
    assert "norm" in graph.renormalizing
    assert result["params"] == result["predicted_params"]
    kept = pruned.conv.out_channels
    assert pruned.norm.normalized_shape == (kept,) and pruned.norm.weight.shape == (kept,)
    assert pruned.mlp.in_features == kept
    x = pruned.conv(example).permute(0, 2, 3, 1)
    manual = torch.nn.functional.layer_norm(x, (kept,), pruned.norm.weight, pruned.norm.bias, pruned.norm.eps)
    assert torch.allclose(pruned.norm(x), manual)
