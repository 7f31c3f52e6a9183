"""``nn.MultiheadAttention`` (torchvision's ViT, ``nn.TransformerEncoderLayer``): whole heads are units, a
pruned one becomes a ``PrunedMultiheadAttention`` that computes what the original computes with those heads
zeroed, for every argument ``nn.MultiheadAttention`` takes; a model built of torch's transformer layers and
an ``nn.Embedding`` loses heads, width and feed-forward units; Taylor scores reach the heads."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from prune_core import (
    ChannelGraph,
    TaylorPrunableNetwork,
    TrainingOptions,
    analyze_compression,
    compress_network,
    remove_units,
)
from prune_core.channels import (
    PrunedMultiheadAttention,
    count_macs,
    load_pruned,
    macs_per_weight,
    out_proj_called,
    save_pruned,
)
from tests.support.equivalence import random_units, removal_equals_zeroing


def small_vit() -> nn.Module:
    """torchvision's ViT: 2 blocks of 4 heads of 16 on 32x32 images (random weights, the head's too: it starts
    at zero)."""
    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10
    )
    nn.init.normal_(model.heads.head.weight)
    return model.eval()


class TextClassifier(nn.Module):
    """Tokens -> embedding -> torch's transformer encoder (padding masked) -> mean -> classes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(50, 32)
        self.position = nn.Parameter(torch.randn(1, 12, 32) * 0.1)
        layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embedding(tokens) + self.position, src_key_padding_mask=tokens == 0).mean(1))


def tokens(batch: int = 4, seed: int = 0) -> torch.Tensor:
    out = torch.randint(1, 50, (batch, 12), generator=torch.Generator().manual_seed(seed))
    out[:, -3:] = 0  # padding
    return out


def test_every_head_is_a_unit_of_its_in_proj_rows_and_out_proj_columns():
    graph = ChannelGraph.build(small_vit(), torch.zeros(2, 3, 32, 32))
    attention = "encoder.layers.encoder_layer_0.self_attention"
    heads = [u for u in graph.removable_units() if u.producers == (attention,)]
    assert len(heads) == 4
    assert heads[1].counts[(f"{attention}.in_proj_weight", 0)] == 3 * 16  # q, k and v rows of a 16-wide head
    assert heads[1].counts[(f"{attention}.out_proj.weight", 1)] == 16
    layers = analyze_compression(small_vit(), torch.zeros(2, 3, 32, 32), verbose=False).layers.set_index("layer")
    assert layers.loc[attention, "prunable_filters"] == 4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_removing_heads_equals_zeroing_their_outputs(seed):
    model, example = small_vit(), torch.randn(3, 3, 32, 32)
    graph = ChannelGraph.build(model, example)
    heads = [u.id for u in graph.removable_units() if u.producers[0].endswith("self_attention")]
    chosen = graph.greedy_removal([head for i, head in enumerate(heads) if (i + seed) % 3])
    pruned = removal_equals_zeroing(model, graph, chosen, example)  # checked there, against zeroed heads
    for layer in pruned.encoder.layers:
        attention = layer.self_attention
        assert isinstance(attention, PrunedMultiheadAttention) and isinstance(attention, nn.MultiheadAttention)
        assert attention.in_proj_weight.shape == (3 * attention.num_heads * 16, 64) and attention.head_dim == 16
        assert attention.out_proj.in_features == attention.num_heads * 16 and attention.embed_dim == 64
    assert all(type(layer.self_attention) is nn.MultiheadAttention for layer in model.encoder.layers)


def _pruned_form(attention: nn.MultiheadAttention) -> nn.MultiheadAttention:
    """The same attention in its pruned form, with nothing removed."""
    other = copy.deepcopy(attention)
    other.__class__ = PrunedMultiheadAttention
    other._qkv_same_embed_dim = False
    return other


CALLS = {
    "batch first, no weights": ({"batch_first": True}, {"need_weights": False}),
    "sequence first, averaged weights": ({}, {}),
    "per-head weights": ({"batch_first": True}, {"average_attn_weights": False}),
    "padding mask": ({"batch_first": True}, {"key_padding_mask": "padding"}),
    "causal bool mask": ({"batch_first": True}, {"attn_mask": "causal", "is_causal": True, "need_weights": False}),
    "per-head float mask": ({"batch_first": True}, {"attn_mask": "per_head"}),
    "no bias": ({"batch_first": True, "bias": False}, {}),
    "unbatched": ({}, {"unbatched": True}),
}


@pytest.mark.parametrize("case", list(CALLS))
def test_the_pruned_form_computes_what_multihead_attention_computes(case):
    settings, call = CALLS[case]
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(16, 4, **settings).eval()
    batch, length = 3, 5
    x = torch.randn(length, 16) if call.pop("unbatched", False) else torch.randn(batch, length, 16)
    masks = {
        "padding": torch.arange(length).expand(batch, length) >= 3,
        "causal": torch.triu(torch.ones(length, length, dtype=torch.bool), 1),
        "per_head": torch.randn(batch * 4, length, length),
    }
    call = {k: masks[v] if isinstance(v, str) else v for k, v in call.items()}
    with torch.no_grad():
        expected = attention(x, x, x, **call)
        got = _pruned_form(attention)(x, x, x, **call)
    for e, g in zip(expected, got):
        assert (e is None) == (g is None)
        if e is not None:
            assert e.shape == g.shape and torch.allclose(e, g, atol=1e-6)


def test_torch_transformer_layers_lose_heads_width_and_feed_forward_units():
    model, example = TextClassifier().eval(), tokens()
    report = analyze_compression(model, example, verbose=False)
    layers = report.layers.set_index("layer")
    assert layers.loc["embedding", "prunable_filters"] == 32
    assert layers.loc["encoder.layers.0.self_attn", "prunable_filters"] == 4
    assert layers.loc["encoder.layers.1.linear1", "prunable_filters"] == 64
    assert report.max_reduction > 0.95
    graph = ChannelGraph.build(model, example)
    for seed in range(3):  # the built-in check (LayerNorms renormalised) runs it in eval mode without gradients
        pruned = copy.deepcopy(model)
        remove_units(pruned, graph, random_units(graph, 0.5, seed))
        attention = pruned.encoder.layers[0].self_attn
        assert pruned.embedding.embedding_dim == attention.embed_dim == pruned.head.in_features < 32


def test_heads_of_a_per_head_mask_and_separate_key_widths_are_kept_with_the_reason():
    class PerHeadMask(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = nn.MultiheadAttention(16, 4, batch_first=True)
            self.bias = nn.Parameter(torch.zeros(4, 5, 5))

        def forward(self, x):
            return self.attention(x, x, x, attn_mask=self.bias.repeat(x.shape[0], 1, 1))[0]

    graph = ChannelGraph.build(PerHeadMask(), torch.zeros(2, 5, 16))
    (reasons,) = {u.reasons for u in graph.units if u.producers == ("attention",)}
    assert reasons == ("`attention` is given a per-head attention mask: its heads are kept",)

    class Cross(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = nn.MultiheadAttention(16, 4, kdim=8, vdim=8, batch_first=True)

        def forward(self, x, memory):
            return self.attention(x, memory, memory)[0]

    report = analyze_compression(Cross(), (torch.zeros(2, 5, 16), torch.zeros(2, 3, 8)), verbose=False)
    assert report.max_removable_learnables == 0 and "MultiheadAttention" in str(report.graph.unsupported)
    others = nn.ModuleList([Cross().attention, nn.MultiheadAttention(16, 4, add_bias_kv=True)])
    with out_proj_called(others):  # attend does not compute what these do: they keep their own forward
        assert all("forward" not in vars(m) for m in others)


def test_taylor_scores_reach_the_heads_and_the_forward_is_put_back():
    model = small_vit().train()
    prunable = TaylorPrunableNetwork(model, torch.zeros(2, 3, 32, 32))
    prunable.update_score(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    scores = prunable.scores()
    heads = [u.id for u in prunable.graph.units if u.producers[0].endswith("self_attention")]
    assert len(heads) == 8 and (scores[heads] > 0).all() and np.isfinite(scores[heads]).all()
    assert all("forward" not in vars(m) for m in model.modules())
    with out_proj_called(model):
        assert all("forward" in vars(layer.self_attention) for layer in model.encoder.layers)


def test_macs_per_weight_counts_a_heads_macs_exactly():
    model, example = small_vit(), torch.zeros(2, 3, 32, 32)
    graph = ChannelGraph.build(model, example)
    head = next(u.id for u in graph.units if u.producers[0].endswith("encoder_layer_1.self_attention"))
    estimate = graph.learnables_removed([head], macs_per_weight(model, example))
    pruned = copy.deepcopy(model)
    remove_units(pruned, graph, [head])
    assert estimate == pytest.approx(count_macs(model, example) - count_macs(pruned, example), rel=1e-9)


def test_compress_network_prunes_torch_transformer_layers_and_the_result_saves_and_loads(tmp_path):
    model = TextClassifier()
    x, y = tokens(96, seed=1), torch.randint(0, 3, (96,))
    options = TrainingOptions("adam", max_epochs=1, mini_batch_size=32, seed=0)
    pruned, info = compress_network(model, x, y, "crossentropy", options, goal=0.4, increment=0.1, verbosity="off")
    assert info.reduction >= 0.4
    assert type(model.encoder.layers[0].self_attn) is nn.MultiheadAttention, "the caller's network is left as it was"
    save_pruned(pruned, tmp_path / "text.pt")
    loaded = load_pruned(tmp_path / "text.pt", TextClassifier).eval()
    pruned.eval()
    assert torch.allclose(loaded(tokens()), pruned(tokens()), atol=1e-6)
    assert torch.allclose(pickle.loads(pickle.dumps(pruned))(tokens()), pruned(tokens()), atol=1e-6)
