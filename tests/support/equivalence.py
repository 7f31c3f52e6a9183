"""The surgery correctness check shared by the tests.

Removing a unit must give exactly the network in which that unit's channels are forced to
zero where they enter the layers that consume them (the group's boundary): the consuming
layers' input weights for those channels are zeroed in a copy of the original model.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from prune_core import ChannelGraph, remove_units
from prune_core.channels import ExampleInput, tensors_in


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so the check is not vacuous."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            for p in (getattr(m, "weight", None), getattr(m, "bias", None)):
                if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)) and p is not None:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + (1.0 if p is m.weight else 0.0))
    return model


def zeroed_reference(model: nn.Module, graph: ChannelGraph, unit_ids: list[int]) -> nn.Module:
    """A copy of ``model`` with the units' channels zeroed at every consuming layer's input."""
    reference = copy.deepcopy(model)
    params = dict(reference.named_parameters())
    with torch.no_grad():
        for (name, dim), idx in graph.removal_plan(unit_ids).items():
            if graph.sites[(name, dim)].role == "input":
                params[name].index_fill_(dim, torch.as_tensor(idx), 0.0)
    return reference


def removal_equals_zeroing(model: nn.Module, graph: ChannelGraph, chosen: list[int], example) -> nn.Module:
    """Remove ``chosen`` from a copy of ``model`` without the built-in check, and check it here: it computes
    what ``zeroed_reference`` computes, the removal matters, and exactly the graph's learnables went. Returns
    the pruned copy."""
    pruned = copy.deepcopy(model)
    remove_units(pruned, graph, chosen, verify=False)
    (expected,), (got,), (original,) = (
        outputs(m, example) for m in (zeroed_reference(model, graph, chosen), pruned, model)
    )
    assert chosen and (expected - original).abs().max() > 1e-4 and torch.allclose(got, expected, atol=1e-5)
    assert sum(p.numel() for p in pruned.parameters()) == graph.total_learnables - graph.learnables_removed(chosen)
    return pruned


def outputs(model: nn.Module, example) -> list[torch.Tensor]:
    """Every output tensor of ``model`` on ``example`` (any form ``ExampleInput`` takes)."""
    with torch.no_grad():
        return tensors_in(ExampleInput.of(example).call(model))


def random_units(graph: ChannelGraph, fraction: float, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    candidates = [u.id for u in graph.removable_units() if rng.random() < fraction]
    return graph.greedy_removal(candidates)


def check_surgery(model: nn.Module, example, fraction: float = 0.3, seed: int = 0, exact: bool = True) -> dict:
    """Prune a random ``fraction`` of units from a copy of ``model`` and compare with the reference.

    Returns figures for the caller's assertions: ``max_error`` (pruned vs zeroed reference),
    ``effect`` (zeroed reference vs original: the removal must matter), parameter counts.
    """
    model = randomize_norms(model.eval(), seed)
    graph = ChannelGraph.build(model, example)
    chosen = random_units(graph, fraction, seed)
    reference = zeroed_reference(model, graph, chosen)
    pruned = copy.deepcopy(model)
    remove_units(pruned, graph, chosen)
    original_out, reference_out, pruned_out = (
        outputs(model, example),
        outputs(reference, example),
        outputs(pruned, example),
    )
    assert [o.shape for o in pruned_out] == [o.shape for o in original_out]
    return {
        "graph": graph,
        "pruned": pruned,
        "removed": chosen,
        "max_error": max((a - b).abs().max().item() for a, b in zip(reference_out, pruned_out)),
        "scale": max(a.abs().max().item() for a in reference_out),
        "effect": max((a - b).abs().max().item() for a, b in zip(reference_out, original_out)),
        "predicted_params": graph.total_learnables - graph.learnables_removed(chosen),
        "params": sum(p.numel() for p in pruned.parameters()),
    }
