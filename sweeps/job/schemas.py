"""Hydra schemas of the ``pruning`` and ``training`` config groups, made from prune_core's option dataclasses.

``register_schemas()`` stores ``pruning/schema`` (from ``prune_core.PruningOptions``) and
``training/schema`` (from ``prune_core.TrainingOptions``) in Hydra's ConfigStore; the group's
YAML files name ``schema`` first in their defaults lists. The schema has every field of the
dataclass that a config can hold, with its default and its type where OmegaConf can check it
(numbers, strings, booleans, nested dataclasses such as ``Distillation``, optional ones);
anything else is ``Any``. So Hydra itself refuses
a value of the wrong type (``pruning.goal=abc``) or an unknown key (``pruning.gaol=0.5``) when
it composes the config, before the app runs. Values of the right type that are not allowed
(``pruning.increment=0``, ``pruning.normalization=l3``) are refused by the dataclass itself,
which ``sweeps.job.config`` builds first thing.

Fields the app fills in itself are left out: the folders, callbacks, validation data and seed.
The ``training`` group has a key of the app's too, ``distributed`` (``sweeps.process.distributed``).

>>> from omegaconf import OmegaConf
>>> schema = config_schema(PruningOptions, exclude=PRUNING_RUNTIME)
>>> OmegaConf.structured(schema).goal
1.0
>>> OmegaConf.merge(OmegaConf.structured(schema), {"goal": "abc"})
Traceback (most recent call last):
...
omegaconf.errors.ValidationError: Value 'abc' of type 'str' could not be converted to Float
    full_key: goal
    object_type=PruningOptionsSchema
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from prune_core import PruningOptions, TrainingOptions

PRUNING_RUNTIME = ("checkpoint_path", "checkpoint_fn", "plots_path", "iteration_fn", "resume_from")
TRAINING_RUNTIME = ("validation_data", "seed", "output_fn")
TRAINING_APP = {"distributed": "auto"}  # the app's own keys of the training group (sweeps.process.distributed)
_CHECKED = (int, float, bool, str)


def _config_type(hint: Any) -> Any:
    """The type OmegaConf checks for a dataclass annotation: itself, Optional of it, or Any."""
    if hint in _CHECKED:
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        others = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(others) == 1 and len(typing.get_args(hint)) == 2:
            if others[0] in _CHECKED:
                return Optional[others[0]]  # noqa: UP045 (OmegaConf reads typing.Optional)
            if dataclasses.is_dataclass(others[0]):  # its schema: OmegaConf makes a frozen one read-only
                return Optional[config_schema(others[0])]  # noqa: UP045
    return Any


def _default(field: dataclasses.Field) -> dataclasses.Field:
    value = field.default
    if isinstance(value, (tuple, list)):
        return dataclasses.field(default_factory=lambda value=value: list(value))
    return dataclasses.field(default=value)


def config_schema(options: type, exclude: tuple[str, ...] = (), app: dict[str, Any] | None = None) -> type:
    """A structured-config dataclass with the config-holdable fields of dataclass ``options``, and the
    app's own keys of the group (``app``: name -> default)."""
    hints = typing.get_type_hints(options)
    fields = [
        (f.name, _config_type(hints[f.name]), _default(f))
        for f in dataclasses.fields(options)
        if f.init and f.name not in exclude
    ]
    fields += [(name, type(value), dataclasses.field(default=value)) for name, value in (app or {}).items()]
    return dataclasses.make_dataclass(f"{options.__name__}Schema", fields)


def register_schemas() -> None:
    """Store the schemas of the ``pruning`` and ``training`` groups (see the module docstring)."""
    store = ConfigStore.instance()
    store.store(group="pruning", name="schema", node=config_schema(PruningOptions, PRUNING_RUNTIME))
    training = config_schema(TrainingOptions, TRAINING_RUNTIME, TRAINING_APP)
    store.store(group="training", name="schema", node=training)
