"""Save and load pruned models without pickle.

A pruned checkpoint is one file written by ``torch.save`` that holds only plain data: a
JSON spec (format version, the channel attributes of every layer, every layer's class and
constructor attributes, the shape and dtype of every parameter and buffer) and the
``state_dict``. ``load_pruned`` rebuilds the original architecture with ``build_fn``, shrinks
it to the spec, refuses it if any layer's class or attributes (kernel size, padding, ...)
differ from the saved ones, and loads the weights with ``torch.load(weights_only=True)``, so
no code is ever unpickled. Writes go to a temporary
file in the same folder, then are renamed into place.

>>> import tempfile, os, torch, torch.nn as nn
>>> build = lambda: nn.Sequential(nn.Conv1d(1, 8, 3), nn.ReLU(), nn.Conv1d(8, 2, 3))
>>> net = build()
>>> net[0].weight = nn.Parameter(net[0].weight[:5].detach()); net[0].bias = nn.Parameter(net[0].bias[:5].detach())
>>> net[0].out_channels = 5
>>> net[2].weight = nn.Parameter(net[2].weight[:, :5].detach()); net[2].in_channels = 5
>>> path = os.path.join(tempfile.mkdtemp(), "pruned.pt")
>>> save_pruned(net, path)
>>> load_pruned(path, build)[2].in_channels
5
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from prune_core.channels.atomic import atomic_path
from prune_core.channels.attention import PrunedMultiheadAttention, attends_alike, to_pruned_form
from prune_core.channels.sites import replace_tensor, tied_names
from prune_core.channels.surgery import channel_attributes

FORMAT = "taylorprune.pruned-model/1"


def pruned_spec(model: nn.Module) -> dict:
    """The JSON-able description of a (pruned) model's channel structure."""
    tensors = {
        name: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
        for name, t in model.state_dict().items()
    }
    modules = {name: attrs for name, m in model.named_modules() if (attrs := channel_attributes(m))}
    layers = {
        name: {"class": type(m).__qualname__, "attributes": constructor_attributes(m)}
        for name, m in model.named_modules()
    }
    return {"format": FORMAT, "modules": modules, "layers": layers, "tensors": tensors}


def _plain(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (tuple, list)) and all(_plain(v) for v in value)


def constructor_attributes(module: nn.Module) -> dict:
    """A module's plain public attributes (kernel_size, stride, eps, ...), as JSON-able values."""
    return json.loads(
        json.dumps({k: v for k, v in vars(module).items() if not k.startswith("_") and k != "training" and _plain(v)})
    )


def save_pruned(model: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write ``model`` (pruned or not) to ``path`` atomically; ``extra`` is JSON-able metadata."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"path {str(path)!r}: folder {str(path.parent)!r} does not exist")
    spec = pruned_spec(model)
    spec["extra"] = extra or {}
    payload = {"spec": json.dumps(spec), "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_pruned(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """The spec and state_dict of a checkpoint, loaded safely (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path {str(path)!r} does not exist or is not a file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        spec = json.loads(payload["spec"])
        state = payload["state_dict"]
    except Exception as exc:
        raise ValueError(
            f"{str(path)!r} is not a readable pruned-model checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if spec.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} has format {spec.get('format')!r}; expected {FORMAT!r}")
    return spec, state


def load_pruned(path: str | os.PathLike, build_fn: Callable[[], nn.Module]) -> nn.Module:
    """Rebuild the original architecture with ``build_fn()``, shrink it to the checkpoint, load weights."""
    spec, state = read_pruned(path)
    model = build_fn()
    if not isinstance(model, nn.Module):
        raise TypeError(f"build_fn must return a torch.nn.Module, got {type(model).__name__}")
    shrink_to_spec(model, spec, source=str(path))
    check_layers(model, spec, source=str(path))
    model.load_state_dict(state, strict=True)
    return model


def check_layers(model: nn.Module, spec: dict, source: str = "spec") -> None:
    """Refuse ``model`` when a layer's class or a constructor attribute differs from ``spec``'s."""
    layers = spec.get("layers", {})
    if not isinstance(layers, dict):
        raise ValueError(f"{source} has a malformed 'layers' entry ({type(layers).__name__}, expected a mapping)")
    modules = dict(model.named_modules())
    differences = []
    for name, saved in layers.items():
        module = modules.get(name)
        if module is None or not isinstance(saved, dict):
            differences.append(f"`{name}`: in the checkpoint, not in the architecture from build_fn")
            continue
        if saved.get("class") != type(module).__qualname__:
            differences.append(f"`{name}`: class {saved.get('class')} saved, {type(module).__qualname__} built")
            continue
        built = constructor_attributes(module)
        for attr, value in (saved.get("attributes") or {}).items():
            if attr in built and json.dumps(built[attr]) != json.dumps(value):
                differences.append(f"`{name}`.{attr}: {value!r} saved, {built[attr]!r} built")
    if differences:
        raise ValueError(
            f"{source} does not match the architecture from build_fn: {'; '.join(differences[:10])}"
            + (f" (and {len(differences) - 10} more)" if len(differences) > 10 else "")
        )


def shrink_to_spec(model: nn.Module, spec: dict, source: str = "spec") -> None:
    """Resize ``model``'s tensors and channel attributes to ``spec`` (values are left uninitialised)."""
    current = model.state_dict()
    missing = sorted(set(spec["tensors"]) - set(current))
    unexpected = sorted(set(current) - set(spec["tensors"]))
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match the architecture from build_fn: in the checkpoint but not the model "
            f"{missing[:10]}, in the model but not the checkpoint {unexpected[:10]}"
        )
    modules = dict(model.named_modules())
    for name, attrs in spec["modules"].items():
        if name not in modules:
            raise ValueError(f"{source} names layer {name!r}, which the architecture from build_fn lacks")
        for attr, value in attrs.items():
            setattr(modules[name], attr, tuple(value) if isinstance(value, list) else value)
    tied, replaced = tied_names(model), set()
    for name, info in spec["tensors"].items():
        shape = torch.Size(info["shape"])
        if current[name].shape == shape or name in replaced:
            continue
        old = current[name]
        replace_tensor(modules, name, torch.empty(shape, dtype=old.dtype, device=old.device), tied.get(name, ()))
        replaced.update(tied.get(name, ()))
    layers = spec.get("layers")
    for name, layer in layers.items() if isinstance(layers, dict) else ():
        module = modules.get(name)  # an attention the surgery turned into its pruned form
        if isinstance(layer, dict) and layer.get("class") == PrunedMultiheadAttention.__qualname__:
            if type(module) is nn.MultiheadAttention and attends_alike(module):
                to_pruned_form(module)
