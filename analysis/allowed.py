"""Instantiating a logged config without running whatever it names: an allow-list for ``_target_``.

A run's ``hydra/config.yaml`` is read back from the artifact store, and anyone who can write
there could name any callable as a ``_target_`` (``torch.load`` of a planted pickle, say). So
the analysis instantiates only:

- this project's own builders: ``sweeps.builders.models.<name>`` and ``sweeps.builders.datasets.<name>``
  (named ``sweeps.models.<name>`` and ``sweeps.datasets.<name>`` in runs logged before the app's
  modules moved: those are read as the builders' current names);
- torchvision's model constructors (``torchvision.models.<name>``) and ``timm.create_model``;
- the dotted names the caller passes in ``allowed`` (their own ``my_project.nets.build``).

Every ``_target_`` in the subtree is checked (Hydra instantiates nested ones too) before
anything is called; anything else is refused with the target and the way to allow it named.

>>> from omegaconf import OmegaConf
>>> instantiate_allowed(OmegaConf.create({"_target_": "sweeps.models.small_cnn2d"}), "model").__class__.__name__
'Sequential'
>>> instantiate_allowed(OmegaConf.create({"_target_": "torch.load", "f": "evil.pt"}), "model")  # doctest: +ELLIPSIS
Traceback (most recent call last):
ValueError: model._target_='torch.load' is not an allowed builder: ... pass allowed=['torch.load'] if you trust it
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterable

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

_BUILDERS = re.compile(
    r"(sweeps\.builders\.models|sweeps\.builders\.datasets|torchvision\.models)\.[a-z][a-z0-9_]*|timm\.create_model"
)
MOVED = {"sweeps.models.": "sweeps.builders.models.", "sweeps.datasets.": "sweeps.builders.datasets."}


def current_name(target: str) -> str:
    """A builder's name today, for a ``_target_`` logged under the app's former module names (see above)."""
    for old, new in MOVED.items():
        if target.startswith(old):
            return new + target.removeprefix(old)
    return target


def _is_builder(target: str) -> bool:
    """A public function defined in one of the allowed modules (not something they merely import)."""
    target = current_name(target)
    if not _BUILDERS.fullmatch(target):
        return False
    module, _, name = target.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return inspect.isfunction(found) and found.__module__.startswith(module)


def _targets(node, path: str):
    """Every ``(path, _target_)`` inside a config subtree."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            value = node._get_node(key)
            if key == "_target_":
                yield path, value._value() if hasattr(value, "_value") else value
            else:
                yield from _targets(value, f"{path}.{key}")
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            yield from _targets(node._get_node(i), f"{path}[{i}]")


def check_targets(config: DictConfig, path: str, allowed: Iterable[str] = ()) -> None:
    """Raise ValueError unless ``config`` is a mapping whose every ``_target_`` is allowed (see above)."""
    if not isinstance(config, DictConfig):
        raise ValueError(f"{path} is not a mapping in the logged config: {str(config)[:200]!r}")
    extra = set(allowed)
    for where, target in _targets(config, path):
        if not isinstance(target, str) or not (target in extra or _is_builder(target)):
            raise ValueError(
                f"{where}._target_={target!r} is not an allowed builder: the analysis instantiates only this "
                "project's builders (sweeps.builders.models.*, sweeps.builders.datasets.*), torchvision.models.* "
                f"constructors and timm.create_model; pass allowed=[{target!r}] if you trust it"
            )


def instantiate_allowed(config: DictConfig, path: str, allowed: Iterable[str] = ()):
    """``hydra.utils.instantiate(config)`` once every ``_target_`` in it passed ``check_targets``."""
    check_targets(config, path, allowed)
    renamed = config.copy()
    for where, target in _targets(config, path):
        if isinstance(target, str) and current_name(target) != target:
            OmegaConf.update(renamed, f"{where.removeprefix(path)}._target_".lstrip("."), current_name(target))
    return instantiate(renamed)
