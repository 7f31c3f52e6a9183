"""Transformers: timm's fused-qkv ``Attention`` (ViT, DeiT, ...) and Swin's ``WindowAttention`` lose whole
heads, their ``num_heads``, ``attn_dim`` and per-head bias columns follow, and the pruned network computes what
the original computes with those heads' outputs zeroed; the embedding width (the residual stream: patch
embedding, class token, position embedding, every norm and block, through Swin's shifted windows) is one
coupled group."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prune_core import ChannelGraph, TrainingOptions, analyze_compression, compress_network, remove_units
from prune_core.channels import count_macs, load_pruned, macs_per_weight, save_pruned
from tests.support.equivalence import check_surgery, outputs, random_units, removal_equals_zeroing, zeroed_reference

timm = pytest.importorskip("timm")


def small_vit(**overrides) -> nn.Module:
    """A two-block ViT of 4 heads on 16x16 images (timm, random weights)."""
    torch.manual_seed(0)
    settings = {"img_size": 16, "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 4, "num_classes": 3}
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **settings | overrides).eval()


def test_every_head_is_a_unit_of_its_q_k_v_rows_and_proj_columns():
    graph = ChannelGraph.build(small_vit(), torch.zeros(2, 3, 16, 16))
    heads = [u for u in graph.removable_units() if u.producers == ("blocks.0.attn.qkv",)]
    assert len(heads) == 4
    head = heads[1]
    assert head.counts[("blocks.0.attn.qkv.weight", 0)] == 3 * 12  # q, k and v rows of a 12-wide head
    assert head.counts[("blocks.0.attn.proj.weight", 1)] == 12
    layers = analyze_compression(small_vit(), torch.zeros(2, 3, 16, 16), verbose=False).layers.set_index("layer")
    assert layers.loc["blocks.1.attn.qkv", "prunable_filters"] == 4  # heads


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_removing_heads_equals_zeroing_their_outputs(seed):
    model, example = small_vit(), torch.randn(4, 3, 16, 16)
    graph = ChannelGraph.build(model, example)
    heads = [u for u in graph.removable_units() if u.producers[0].endswith(".attn.qkv")]
    chosen = graph.greedy_removal(
        [u.id for u in heads if torch.rand(1, generator=torch.Generator().manual_seed(seed + u.id)) < 0.5]
    )
    pruned = removal_equals_zeroing(model, graph, chosen, example)  # checked there, against zeroed heads
    for block in pruned.blocks:
        attn = block.attn
        assert attn.qkv.out_features == 3 * attn.num_heads * attn.head_dim and attn.head_dim == 12
        assert attn.proj.in_features == attn.attn_dim == attn.num_heads * 12
        assert attn.scale == 12**-0.5, "the scale is the original network's"


def test_the_embedding_width_is_one_group_through_every_block():
    model, example = small_vit(), torch.randn(4, 3, 16, 16)
    graph = ChannelGraph.build(model, example)
    (stream,) = {u.producers for u in graph.removable_units() if "patch_embed.proj" in u.producers}
    assert stream == (
        "blocks.0.attn.proj",
        "blocks.0.mlp.fc2",
        "blocks.1.attn.proj",
        "blocks.1.mlp.fc2",
        "patch_embed.proj",
    )
    width = [u for u in graph.removable_units() if u.producers == stream]
    assert len(width) == 48
    assert {"norm", "blocks.0.norm1", "blocks.1.mlp.fc1", "head"} <= set(width[0].members)
    assert {("cls_token", 2), ("pos_embed", 2), ("blocks.0.attn.qkv.weight", 1)} <= set(width[0].counts)
    for seed in range(3):  # the built-in check: LayerNorms over the stream normalise over the kept channels
        pruned = copy.deepcopy(model)
        remove_units(pruned, graph, random_units(graph, 0.4, seed))
        kept = pruned.patch_embed.proj.out_channels
        assert kept < 48 and pruned.cls_token.shape[-1] == pruned.pos_embed.shape[-1] == pruned.head.in_features == kept
        assert pruned.norm.normalized_shape == (kept,) and pruned.blocks[1].mlp.fc1.in_features == kept


def test_macs_per_weight_counts_a_heads_macs_attention_products_included():
    model, example = small_vit(), torch.zeros(2, 3, 16, 16)
    graph = ChannelGraph.build(model, example)
    head = next(u.id for u in graph.removable_units() if u.producers == ("blocks.1.attn.qkv",))
    estimate = graph.learnables_removed([head], macs_per_weight(model, example))
    pruned = copy.deepcopy(model)
    remove_units(pruned, graph, [head])
    assert estimate == pytest.approx(count_macs(model, example) - count_macs(pruned, example), rel=1e-9)


def test_a_vision_transformer_can_lose_nearly_everything_but_its_outputs():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    report = analyze_compression(model, torch.zeros(2, 3, 224, 224), verbose=False)
    assert report.max_reduction > 0.95  # heads, MLP units and the embedding width (64.1% with MLP units only)


def test_one_head_is_always_kept_and_the_pruned_network_saves_and_loads(tmp_path):
    model, example = small_vit(), torch.randn(2, 3, 16, 16)
    graph = ChannelGraph.build(model, example)
    every_head = [u.id for u in graph.removable_units() if u.producers[0].endswith(".attn.qkv")]
    remove_units(model, graph, graph.greedy_removal(every_head))
    assert [block.attn.num_heads for block in model.blocks] == [1, 1]
    save_pruned(model, tmp_path / "vit.pt")
    loaded = load_pruned(tmp_path / "vit.pt", small_vit)
    assert [block.attn.num_heads for block in loaded.blocks] == [1, 1]
    assert torch.allclose(loaded(example), model(example), atol=1e-6)


def test_heads_gated_or_normalised_together_are_kept_with_the_reason():
    from timm.layers.attention import Attention

    gated = nn.Sequential(nn.Linear(8, 16), Attention(16, num_heads=4, gated=True), nn.Flatten(), nn.Linear(48, 2))
    graph = ChannelGraph.build(gated, torch.zeros(2, 3, 8))
    (heads,) = {u.reasons for u in graph.units if u.producers == ("1.qkv",)}
    assert heads == ("`1` gates or normalises its heads' outputs together: its heads are kept",)
    result = check_surgery(gated, torch.randn(4, 3, 8), fraction=0.5)  # the first layer's units: qkv and gate inputs
    assert result["effect"] > 1e-4 and result["max_error"] <= 1e-5 * max(1.0, result["scale"])
    assert result["pruned"][1].gate.in_features == result["pruned"][1].qkv.in_features < 16


def test_compress_network_removes_heads_by_their_taylor_scores():
    model = small_vit()
    x, y = torch.randn(128, 3, 16, 16), torch.randint(0, 3, (128,))
    options = TrainingOptions("adam", max_epochs=1, mini_batch_size=32, seed=0)
    heads = ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]  # the heads alone, not the MLPs or the width
    pruned, info = compress_network(
        model, x, y, "crossentropy", options, goal=0.2, increment=0.05, layer_names=heads, verbosity="off"
    )
    assert info.reduction >= 0.2 and sum(block.attn.num_heads for block in pruned.blocks) < 8
    assert [block.attn.num_heads for block in model.blocks] == [4, 4], "the caller's network is left as it was"


def small_swin() -> nn.Module:
    """A two-stage Swin of 2 and 4 heads, shifted windows of 4x4 tokens, on 32x32 images (timm, random weights)."""
    torch.manual_seed(0)
    settings = {"img_size": 32, "window_size": 4, "embed_dim": 16, "depths": (2, 2), "num_heads": (2, 4)}
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=3, **settings).eval()


def test_swin_loses_heads_with_their_bias_columns_and_its_width_through_shifted_windows():
    model, example = small_swin(), torch.randn(2, 3, 32, 32)
    graph = ChannelGraph.build(model, example)
    heads = [u for u in graph.removable_units() if u.producers == ("layers.1.blocks.1.attn.qkv",)]
    assert len(heads) == 4 and heads[0].counts[("layers.1.blocks.1.attn.relative_position_bias_table", 1)] == 1
    every_head = graph.greedy_removal([u.id for u in graph.removable_units() if u.producers[0].endswith(".qkv")])
    pruned = copy.deepcopy(model)
    remove_units(pruned, graph, every_head, verify=False)  # checked here, against zeroed heads
    (expected,), (got,), (original,) = (
        outputs(m, example) for m in (zeroed_reference(model, graph, every_head), pruned, model)
    )
    assert (expected - original).abs().max() > 1e-4 and torch.allclose(got, expected, atol=1e-5)
    assert [b.attn.num_heads for layer in pruned.layers for b in layer.blocks] == [1, 1, 1, 1]
    widths = [u.id for u in graph.removable_units() if not any(p.endswith(".qkv") for p in u.producers)]
    assert not any(graph.units[i].reasons for i in widths) and len(widths) > 100, "stochastic depth, roll and pad"
    for seed in range(2):  # the built-in check: LayerNorms over the stream normalise over the kept channels
        pruned = copy.deepcopy(model)
        remove_units(pruned, graph, random_units(graph, 0.4, seed))
        attention = pruned.layers[1].blocks[1].attn
        assert attention.relative_position_bias_table.shape[1] == attention.num_heads
        assert attention.qkv.out_features == 3 * attention.num_heads * 8 == 3 * attention.proj.in_features
        assert pruned.patch_embed.proj.out_channels < 16
    assert analyze_compression(model, example, verbose=False).max_reduction > 0.95
