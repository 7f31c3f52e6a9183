"""Tied weights (a language model's output layer holding its token embedding's tensor) stay one tensor through
surgery and checkpoints, lose the same entries under every name, and count once; Hugging Face's causal
language models (GPT-2's transposed ``Conv1D`` layers, BLOOM's tied head, Llama's cache) prune equivalently."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prune_core import ChannelGraph, remove_units
from prune_core.channels import load_pruned, save_pruned


class TinyLM(nn.Module):
    """Token embedding, a residual MLP, a norm-free head tied to the embedding."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 8)
        self.up, self.down = nn.Linear(8, 16), nn.Linear(16, 8)
        self.head = nn.Linear(8, 20, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        x = self.embed(ids)
        x = x + self.down(torch.relu(self.up(x)))
        return self.head(x)


def test_a_tied_embedding_and_head_lose_the_same_columns_and_stay_tied(tmp_path):
    model, ids = TinyLM(), torch.randint(0, 20, (2, 5))
    graph = ChannelGraph.build(model, ids)
    width = [u.id for u in graph.removable_units() if "embed" in u.producers]
    assert len(width) == 8, "the residual width: the embedding's columns, which the head reads too"
    chosen = width[:3] + [u.id for u in graph.removable_units() if u.producers == ("up",)][:5]
    pruned = copy.deepcopy(model)
    remove_units(pruned, graph, chosen)  # the surgery check runs: equal to the original with those columns zeroed
    assert pruned.head.weight is pruned.embed.weight and pruned.embed.weight.shape == (20, 5)
    assert sum(p.numel() for p in pruned.parameters()) == graph.total_learnables - graph.learnables_removed(chosen)
    save_pruned(pruned, tmp_path / "lm.pt")
    loaded = load_pruned(tmp_path / "lm.pt", TinyLM)
    assert loaded.head.weight is loaded.embed.weight
    torch.testing.assert_close(loaded(ids), pruned(ids))


transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize(
    "build",
    [
        lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=64, n_head=4, vocab_size=100)),
        lambda: transformers.BloomForCausalLM(
            transformers.BloomConfig(n_layer=1, hidden_size=64, n_head=4, vocab_size=100)
        ),
        lambda: transformers.LlamaForCausalLM(
            transformers.LlamaConfig(
                num_hidden_layers=1, hidden_size=64, intermediate_size=128, num_attention_heads=4, vocab_size=100
            )
        ),
    ],
    ids=["gpt2", "bloom", "llama"],
)
def test_hugging_face_causal_language_models_prune_their_mlps_equivalently(build):
    torch.manual_seed(0)
    model, ids = build().eval(), torch.randint(0, 100, (2, 6))
    graph = ChannelGraph.build(model, {"input_ids": ids})
    mlp = [u.id for u in graph.removable_units() if any("mlp" in p for p in u.producers)]
    assert mlp, "the MLP's hidden units are removable"
    chosen = graph.greedy_removal(mlp[::3])
    pruned = copy.deepcopy(model)
    remove_units(pruned, graph, chosen)  # checked against the original with those units zeroed
    assert sum(p.numel() for p in pruned.parameters()) == graph.total_learnables - graph.learnables_removed(chosen)
    assert pruned(input_ids=ids).logits.shape == (2, 6, 100)
