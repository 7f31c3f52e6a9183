"""Hugging Face's self-attention (separate ``query``, ``key`` and ``value`` linears; BERT, ViT, ...): whole heads
are units, removing them equals zeroing their outputs where the output projection reads them, the head counts
follow, and a BERT classifier loses heads, width and feed-forward units under the built-in check and saves and
loads. Random weights, built from configs: nothing is downloaded."""

from __future__ import annotations

import copy

import pytest
import torch

from prune_core import ChannelGraph, analyze_compression, remove_units
from prune_core.channels import load_pruned, save_pruned
from tests.support.equivalence import outputs, random_units, removal_equals_zeroing

transformers = pytest.importorskip("transformers")


def small_bert(attention: str = "sdpa"):
    """A two-layer BERT classifier of 4 heads of 16 (random weights)."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        num_labels=3,
        attn_implementation=attention,
    )
    return transformers.BertForSequenceClassification(config).eval()


def tokens(batch: int = 3) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 100, (batch, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[:, -3:] = 0  # padding
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_every_head_is_a_unit_of_its_query_key_and_value_rows(attention):
    graph = ChannelGraph.build(small_bert(attention), tokens())
    layer = "bert.encoder.layer.1.attention"
    heads = [u for u in graph.removable_units() if u.producers == (f"{layer}.self.query",)]
    assert len(heads) == 4
    assert {(f"{layer}.self.{name}.weight", 0) for name in ("query", "key", "value")} <= set(heads[2].counts)
    assert heads[2].counts[(f"{layer}.self.value.weight", 0)] == 16
    assert heads[2].counts[(f"{layer}.output.dense.weight", 1)] == 16


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_removing_heads_equals_zeroing_their_outputs(seed):
    model, example = small_bert(), tokens()
    graph = ChannelGraph.build(model, example)
    heads = [u.id for u in graph.removable_units() if u.producers[0].endswith("self.query")]
    pruned = removal_equals_zeroing(model, graph, [h for i, h in enumerate(heads) if (i + seed) % 3], example)
    for layer in pruned.bert.encoder.layer:
        attention = layer.attention.self
        assert attention.all_head_size == attention.num_attention_heads * 16 == attention.query.out_features
        assert layer.attention.output.dense.in_features == attention.all_head_size


def test_a_bert_classifier_loses_heads_width_and_feed_forward_units_and_saves_and_loads(tmp_path):
    model, example = small_bert(), tokens()
    report = analyze_compression(model, example, verbose=False)
    assert report.max_reduction > 0.95
    graph = ChannelGraph.build(model, example)
    pruned = copy.deepcopy(model)
    remove_units(pruned, graph, random_units(graph, 0.5, 0))  # the built-in check, LayerNorms renormalised
    assert pruned.bert.embeddings.word_embeddings.embedding_dim < 64
    assert sum(layer.attention.self.num_attention_heads for layer in pruned.bert.encoder.layer) < 8
    save_pruned(pruned, tmp_path / "bert.pt")
    loaded = load_pruned(tmp_path / "bert.pt", small_bert)
    (expected,), (got,) = outputs(pruned, example), outputs(loaded, example)
    assert torch.allclose(got, expected, atol=1e-6)


def test_vit_heads_of_hugging_face_are_units_too():
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96
    )
    model, example = transformers.ViTForImageClassification(config).eval(), torch.randn(2, 3, 32, 32)
    graph = ChannelGraph.build(model, example)
    heads = [u.id for u in graph.removable_units() if u.producers[0].endswith("attention.query")]
    assert len(heads) == 8
    pruned = removal_equals_zeroing(model, graph, heads[1::2], example)
    assert [layer.attention.attention.num_attention_heads for layer in pruned.vit.encoder.layer] == [2, 2]


def test_heads_given_a_head_mask_are_kept():
    model, example = small_bert(), tokens() | {"head_mask": torch.ones(2, 4)}
    graph = ChannelGraph.build(model, example)
    assert not [u for u in graph.removable_units() if u.producers[0].endswith("self.query")]
    assert any(u.removable for u in graph.units), "the rest of the network is still pruned"


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_head_dims_of_bert_go_with_its_scale_kept(attention, tmp_path):
    model, example = small_bert(attention), tokens()
    with torch.no_grad():
        before = model(**example).logits
    graph = ChannelGraph.build(model, example, attention_units="head_dims")
    name = "bert.encoder.layer.0.attention.self"
    dims = [u for u in graph.units if u.producers == (f"{name}.query",)]
    assert len(dims) == 16 and all(u.removable for u in dims) and dims[0].counts[(f"{name}.key.weight", 0)] == 4
    remove_units(model, graph, [u.id for u in dims[:6]])  # checked against the zeroed original
    attention_module = model.get_submodule(name)
    assert (attention_module.num_attention_heads, attention_module.attention_head_size) == (4, 10)
    assert attention_module.all_head_size == 40
    save_pruned(model, tmp_path / "pruned.pt")
    loaded = load_pruned(tmp_path / "pruned.pt", lambda: small_bert(attention))
    with torch.no_grad():
        torch.testing.assert_close(loaded(**example).logits, model(**example).logits)
        assert model(**example).logits.shape == before.shape


def test_head_dims_of_hugging_face_vit_keep_the_scaling_it_holds():
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=1, num_attention_heads=4, intermediate_size=96
    )
    model, example = transformers.ViTForImageClassification(config).eval(), torch.randn(2, 3, 32, 32)
    attention = model.vit.encoder.layer[0].attention.attention
    scaling, query = attention.scaling, attention.query.weight.detach().clone()
    graph = ChannelGraph.build(model, example, attention_units="head_dims")
    dims = [u.id for u in graph.units if u.producers[0].endswith("attention.query")]
    remove_units(model, graph, dims[:4])  # checked against the zeroed original
    assert attention.attention_head_size == 8 and attention.scaling == scaling
    kept = [k for k in range(48) if k % 12 >= 4]  # dims 4..11 of each head of 12
    torch.testing.assert_close(attention.query.weight, query[kept])  # nothing folded: it holds its scaling


def test_an_attention_that_holds_its_own_projection_and_norm_is_not_taken_for_bare_heads():
    # ALBERT's attention module has query, key and value, and also the output projection, the residual
    # addition and the norm: it returns the residual stream, whose channels are not its heads
    torch.manual_seed(0)
    config = transformers.AlbertConfig(
        vocab_size=100, embedding_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, num_labels=3,
    )  # fmt: skip
    model, example = transformers.AlbertForSequenceClassification(config).eval(), tokens()
    graph = ChannelGraph.build(model, example)
    mapping = "albert.encoder.embedding_hidden_mapping_in"
    stream = {p for u in graph.units if mapping in u.producers for p in u.producers}
    assert stream and not any(p.endswith(".attention.query") for p in stream)
    chosen = random_units(graph, 0.2, seed=0)
    pruned = copy.deepcopy(model)
    remove_units(pruned, graph, chosen)  # checked against the original with those units zeroed
    assert sum(p.numel() for p in pruned.parameters()) == graph.total_learnables - graph.learnables_removed(chosen)


def test_an_attention_with_a_per_head_table_of_its_own_is_not_taken_for_bare_heads():
    # Swin's self-attention adds a relative position bias from a table with a column per head, a parameter
    # of the module itself, which removing heads would have to cut as well
    torch.manual_seed(0)
    config = transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4, num_labels=3
    )
    model, example = transformers.SwinForImageClassification(config).eval(), torch.randn(2, 3, 32, 32)
    graph = ChannelGraph.build(model, example)
    assert not any(name.endswith(".num_attention_heads") for name, _ in graph.sites), "its heads are not units"
    chosen = random_units(graph, 0.2, seed=0)
    pruned = copy.deepcopy(model)
    remove_units(pruned, graph, chosen)  # checked against the original with those units zeroed
    assert sum(p.numel() for p in pruned.parameters()) == graph.total_learnables - graph.learnables_removed(chosen)
