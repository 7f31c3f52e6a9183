"""Falcon (Hugging Face), whose ``FalconLinear`` multiplies by its transposed weight (``x @ weight.T``) instead of
calling ``F.linear``: its layers are linear layers to the analysis. Random weights, built from a config: nothing is
downloaded."""

from __future__ import annotations

import pytest
import torch

from prune_core import ChannelGraph, remove_units

transformers = pytest.importorskip("transformers")


def test_falcons_linear_layers_by_product_are_pruned_under_the_check():
    """Falcon's ``FalconLinear`` multiplies by its transposed weight (``x @ weight.T``) instead of calling
    ``F.linear``: its feed-forward units are pruned, and the surgery passes the built-in check."""
    config = transformers.FalconConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, new_decoder_architecture=False
    )
    torch.manual_seed(0)
    model = transformers.FalconForCausalLM(config).eval()
    graph = ChannelGraph.build(model, {"input_ids": torch.randint(1, 100, (2, 12))})
    hidden = [u.id for u in graph.removable_units() if u.producers == ("transformer.h.1.mlp.dense_h_to_4h",)]
    assert len(hidden) == 4 * 64
    remove_units(model, graph, hidden[::2])
    assert model.transformer.h[1].mlp.dense_h_to_4h.out_features == model.transformer.h[1].mlp.dense_4h_to_h.in_features
    assert model.transformer.h[1].mlp.dense_4h_to_h.in_features == 128
