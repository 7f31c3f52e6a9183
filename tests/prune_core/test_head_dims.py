"""Head dims as removal units (``attention_units="head_dims"``): every head keeps the same, smaller head dim, and
the pruned network computes what the original computes with those dims of the queries, keys and values
zeroed, through timm's fused kernel and its plain path alike."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torchvision
from timm.models.swin_transformer import SwinTransformer

from benchmarks.timm_zoo import random_share
from prune_core import PruningOptions, TrainingOptions, analyze_compression, compress_network
from prune_core.channels import ChannelGraph, PrunedMultiheadAttention, load_pruned, remove_units, save_pruned


def small_vit(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=5, pretrained=False, **kw
    ).eval()


def small_swin() -> torch.nn.Module:
    torch.manual_seed(0)
    return SwinTransformer(
        img_size=28, patch_size=2, window_size=7, embed_dim=16, depths=(1, 1), num_heads=(2, 4), num_classes=5
    ).eval()


def both_paths(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The outputs through the fused attention kernel and through the plain path (q * scale @ k)."""
    attentions = [m for m in model.modules() if hasattr(m, "fused_attn") and hasattr(m, "qkv")]
    settings, outputs = [a.fused_attn for a in attentions], []
    for fused in (True, False):
        for attention in attentions:
            attention.fused_attn = fused
        with torch.no_grad():
            outputs.append(model(x))
    for attention, setting in zip(attentions, settings, strict=True):
        attention.fused_attn = setting
    return outputs[0], outputs[1]


def head_dim_units(graph: ChannelGraph, attention: str) -> list:
    return [u for u in graph.units if u.producers == (f"{attention}.qkv",)]


def test_a_head_dim_is_the_same_dim_of_every_head_and_its_removal_is_exact(tmp_path):
    model, x = small_vit(), torch.randn(2, 3, 32, 32)
    attention = model.blocks[0].attn
    heads, head_dim = attention.num_heads, attention.head_dim
    graph = ChannelGraph.build(model, x, attention_units="head_dims")
    units = head_dim_units(graph, "blocks.0.attn")
    assert len(units) == head_dim and all(u.removable for u in units)
    assert units[0].counts[("blocks.0.attn.qkv.weight", 0)] == 3 * heads  # its q, k and v rows in every head
    assert units[0].counts[("blocks.0.attn.proj.weight", 1)] == heads

    reference = both_paths(model, x)[0]
    gone = [u.id for u in units[::4]]  # the surgery check compares with those dims zeroed
    remove_units(model, graph, gone)
    assert (attention.num_heads, attention.head_dim) == (heads, head_dim - len(gone))
    assert attention.attn_dim == heads * attention.head_dim and attention.scale == attention.head_dim**-0.5
    fused, plain = both_paths(model, x)
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-4)
    assert fused.shape == reference.shape

    save_pruned(model, tmp_path / "pruned.pt")
    loaded = load_pruned(tmp_path / "pruned.pt", small_vit)
    assert loaded.blocks[0].attn.scale == attention.scale
    torch.testing.assert_close(both_paths(loaded, x)[1], plain)


def test_the_heads_stay_whole_by_default_and_queries_normalised_over_head_dims_keep_them():
    x = torch.randn(2, 3, 32, 32)
    by_heads = ChannelGraph.build(small_vit(), x)
    assert len(head_dim_units(by_heads, "blocks.0.attn")) == small_vit().blocks[0].attn.num_heads
    normalised = ChannelGraph.build(small_vit(qk_norm=True), x, attention_units="head_dims")
    units = head_dim_units(normalised, "blocks.0.attn")
    assert units and not any(u.removable for u in units)
    assert "normalises its queries and keys over the head dims" in " ".join(units[0].reasons)
    with pytest.raises(ValueError, match="attention_units 'dims' is not supported; use one of"):
        analyze_compression(small_vit(), x, attention_units="dims", verbose=False)


def test_swin_window_attention_loses_head_dims_and_keeps_its_scores():
    model, x = small_swin(), torch.randn(2, 3, 28, 28)
    graph = ChannelGraph.build(model, x, attention_units="head_dims")
    attention = model.layers[0].blocks[0].attn
    units = head_dim_units(graph, "layers.0.blocks.0.attn")
    assert len(units) == 8 and all(u.removable for u in units)
    remove_units(model, graph, [u.id for u in units[:3]])  # checked against the zeroed original
    assert attention.qkv.out_features == 3 * 2 * 5 and attention.scale == 5**-0.5
    fused, plain = both_paths(model, x)
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-4)


def test_compress_network_prunes_head_dims_when_asked():
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 5, (32,))
    options = TrainingOptions("adam", max_epochs=1, mini_batch_size=16, seed=0)
    pruned, info = compress_network(
        small_vit(), x, y, "crossentropy", options, goal=0.3, increment=0.15, attention_units="head_dims",
        verbosity="off",
    )  # fmt: skip
    attentions = [block.attn for block in pruned.blocks]
    assert all(a.num_heads == 3 for a in attentions) and min(a.head_dim for a in attentions) < 64
    assert info.pruning_history["reduction"].iloc[-1] >= 0.3
    with pytest.raises(ValueError, match="attention_units 'dim' is not supported"):
        PruningOptions(attention_units="dim")


def small_torchvision_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=5
    ).eval()


def test_multihead_attention_loses_head_dims_and_keeps_its_scale(tmp_path):
    model, x = small_torchvision_vit(), torch.randn(2, 3, 32, 32)
    graph = ChannelGraph.build(model, x, attention_units="head_dims")
    name = "encoder.layers.encoder_layer_0.self_attention"
    units = [u for u in graph.units if u.producers == (name,)]
    assert len(units) == 8 and units[0].counts[(f"{name}.in_proj_weight", 0)] == 3 * 4
    remove_units(model, graph, [u.id for u in units[:3]])  # checked against the zeroed original
    attention = model.get_submodule(name)
    assert isinstance(attention, PrunedMultiheadAttention) and (attention.num_heads, attention.head_dim) == (4, 5)
    tokens = torch.randn(2, 5, 32)
    with torch.no_grad():  # the fused kernel and the path that returns the weights agree
        fused, _ = attention(tokens, tokens, tokens, need_weights=False)
        plain, _ = attention(tokens, tokens, tokens, need_weights=True)
        expected = model(x)
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-4)
    save_pruned(model, tmp_path / "pruned.pt")
    with torch.no_grad():
        torch.testing.assert_close(load_pruned(tmp_path / "pruned.pt", small_torchvision_vit).eval()(x), expected)


@pytest.mark.parametrize("name", ["pit_ti_224", "mobilevit_xxs"])
def test_head_dims_prune_exactly_in_other_timm_families(name):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    size = model.pretrained_cfg["input_size"][-1]
    example = torch.randn(2, 3, size, size)
    graph = ChannelGraph.build(model, example, attention_units="head_dims")
    dims = [
        u for u in graph.removable_units() if any(("head_dim", 0) == (k[0].rpartition(".")[2], k[1]) for k in u.counts)
    ]
    assert dims, "head dims are units"
    chosen = random_share(graph, 0.2)
    pruned = copy.deepcopy(model)
    remove_units(pruned, graph, chosen)  # the surgery check raises on any difference
    assert sum(p.numel() for p in pruned.parameters()) == graph.total_learnables - graph.learnables_removed(chosen)


def test_removing_whole_heads_leaves_a_custom_scale_and_the_queries_alone():
    model, x = small_vit(), torch.randn(2, 3, 32, 32)
    attention = model.blocks[0].attn
    attention.scale = 0.3  # not head_dim ** -0.5: only whole heads go, so nothing may be folded
    dim = attention.head_dim
    queries_of_heads_1_2 = attention.qkv.weight.detach()[dim : 3 * dim].clone()
    graph = ChannelGraph.build(model, x)
    heads = [u for u in graph.units if u.producers == ("blocks.0.attn.qkv",)]
    remove_units(model, graph, [heads[0].id])
    assert attention.scale == 0.3 and (attention.num_heads, attention.head_dim) == (2, dim)
    torch.testing.assert_close(attention.qkv.weight[: 2 * dim], queries_of_heads_1_2, rtol=0, atol=0)
