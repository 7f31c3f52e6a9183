"""A job's data, in whichever form ``data._target_`` returns it, checked before any training.

``load_data(cfg)`` instantiates the data group and accepts

- a dict of tensors ``{"x_train", "y_train"[, "x_val", "y_val"]}`` (the in-memory builders);
- a dict ``{"train": ..., "validation": ..., "classes": [...]}`` whose splits are Datasets,
  DataLoaders or ``(inputs, targets)`` pairs (``image_folder``, ``torchvision_dataset``, yours);
- a Dataset or DataLoader alone (training data, no validation).

Datasets are read batch by batch (``prune_core.finetune``: the batch size and loader workers
come from ``training`` and ``base.training``); nothing is loaded whole. Tensors holding NaN or
inf, a validation threshold or objective without validation data, and a ``model.num_classes``
(``model.classes`` for this project's networks) that disagrees with the data's classes, or that
is smaller than the largest integer label of a tensor split, are refused before anything trains.

>>> import torch
>>> data = job_data({"x_train": torch.zeros(4, 1, 8), "y_train": torch.zeros(4, dtype=torch.long)}, "t")
>>> data.validation is None, tuple(data.example().shape)
(True, (2, 1, 8))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from prune_core import is_number
from prune_core.finetune import as_source

TENSOR_KEYS, VALIDATION_KEYS = ("x_train", "y_train"), ("x_val", "y_val")


@dataclass
class JobData:
    """``train`` and ``validation`` (None, or) in any form ``compress_network`` takes; ``classes`` when known."""

    train: Any
    validation: Any = None
    classes: list | None = None

    def example(self) -> torch.Tensor:
        """The first two training inputs (the example input of the analysis, and of the logged model)."""
        return as_source(self.train).first_inputs(2)[0]


def _finite(tensor: Any, where: str, key: str) -> None:
    if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(tensor.isfinite().all()):
        index = int((~tensor.isfinite()).flatten(1).any(1).nonzero()[0])
        raise ValueError(
            f"{where}: {key}[{index}] holds a non-finite value (NaN or inf); clean the data before pruning"
        )


def job_data(data: Any, where: str) -> JobData:
    """``JobData`` from what a data builder returned (see the module docstring); ``where`` names it in errors."""
    forms = (
        'a dict {"x_train", "y_train", "x_val", "y_val"} of tensors, a dict {"train", "validation"} of '
        "Datasets, DataLoaders or (inputs, targets) pairs, or a Dataset or DataLoader"
    )
    if isinstance(data, (Dataset, DataLoader)):
        return JobData(data)
    if not isinstance(data, dict):
        raise ValueError(f"{where} must return {forms}; got {type(data).__name__}")
    if "train" in data:
        unknown = sorted(set(data) - {"train", "validation", "classes"})
        if unknown:
            raise ValueError(f"{where} returned unknown keys {unknown}; use train, validation and classes")
        return JobData(data["train"], data.get("validation"), data.get("classes"))
    missing = [k for k in TENSOR_KEYS if k not in data]
    if missing:
        raise ValueError(f"{where} must return {forms}; its dict misses {missing}")
    for key in ("x_train", "x_val"):
        _finite(data.get(key), where, key)
    validation = (data["x_val"], data["y_val"]) if all(k in data for k in VALIDATION_KEYS) else None
    return JobData((data["x_train"], data["y_train"]), validation)


def _count(num_classes: Any) -> int | None:
    return num_classes if is_number(num_classes, integer=True) else None


def load_data(cfg: DictConfig) -> JobData:
    """The data group's ``JobData``, checked against the rest of the config (see the module docstring)."""
    where = f"data._target_={cfg.data.get('_target_')!r}"
    data = job_data(instantiate(cfg.data), where)
    if data.validation is None:
        needs = [n for n in [*cfg.sweep.objectives, *cfg.sweep.constraints] if n.startswith("validation_")]
        if cfg.pruning.validation_threshold is not None:
            raise ValueError(
                f"pruning.validation_threshold={cfg.pruning.validation_threshold:g} needs validation "
                f"data, but {where} returns no {list(VALIDATION_KEYS)}"
            )
        if needs:
            raise ValueError(
                f"sweep objectives/constraints {needs} need validation data, but {where} returns no "
                f"{list(VALIDATION_KEYS)}"
            )
    key = next((k for k in ("num_classes", "classes") if k in cfg.model), None)  # timm/torchvision, this project's
    expected = _count(cfg.model.get(key)) if key else None
    if expected is not None and data.classes is not None and expected != len(data.classes):
        raise ValueError(
            f"model.{key}={expected}, but the data has {len(data.classes)} classes "
            f"({', '.join(map(str, data.classes[:5]))}{', ...' if len(data.classes) > 5 else ''}); "
            f"set model.{key}={len(data.classes)}"
        )
    if expected is not None:
        _labels_fit(data, expected, f"model.{key}")
    return data


def _labels_fit(data: JobData, classes: int, key: str) -> None:
    """Refuse integer labels of the tensor splits that are not among ``classes`` (0 to classes - 1)."""
    splits = [("y_train", data.train), ("y_val", data.validation)]
    for name, split in splits:
        if not (isinstance(split, tuple) and isinstance(split[1], torch.Tensor)):
            continue
        labels = split[1]
        if labels.is_floating_point() or labels.dtype == torch.bool or labels.numel() == 0:
            continue
        low, high = (int(v) for v in torch.aminmax(labels))
        if low < 0 or high >= classes:
            raise ValueError(
                f"{key}={classes}, but {name} holds label {low if low < 0 else high} (the labels must be 0 to "
                f"{classes - 1}); set {key}={high + 1}, or relabel the data"
            )
