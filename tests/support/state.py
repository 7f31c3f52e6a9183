"""What a test keeps of a model to prove that a call left it as it was: its tensors, modes, flags
and attributes.

>>> import torch
>>> net = torch.nn.Linear(2, 2)
>>> before = snapshot(net)
>>> assert_unchanged(net, before)
"""

import copy

import torch


def snapshot(model: torch.nn.Module) -> tuple:
    return (
        copy.deepcopy(model.state_dict()),
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [sorted(vars(m)) for m in model.modules()],
    )


def assert_unchanged(model: torch.nn.Module, before: tuple) -> None:
    state, modes, flags, attributes = before
    assert [sorted(vars(m)) for m in model.modules()] == attributes, "attributes were added or removed"
    now = model.state_dict()
    changed = [k for k, v in state.items() if not torch.equal(now[k], v)]
    assert not changed, f"{len(changed)} tensors changed, e.g. {changed[:3]}"
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
