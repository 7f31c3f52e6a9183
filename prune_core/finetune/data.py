"""Data in any of the forms the reference accepts, as mini-batches of ``(inputs, targets)``.

``as_source(data)`` or ``as_source(predictors, targets)`` accepts

- a ``torch.utils.data.DataLoader`` (used as it is: its own batch size and shuffling);
- a ``Dataset`` whose items are ``(x, y)``, ``(x1, ..., xn, y)`` or ``((x1, ..., xn), (y1, ...))``;
- ``(predictors, targets)``: tensors or NumPy arrays with the examples along dim 0;
- a pandas ``DataFrame``: every column but the last holds predictors (numbers, or one
  column of arrays), the last holds the targets (numbers or categories, as codes).

Every batch comes out as ``(inputs, targets)``, two tuples of tensors. A Dataset is read through
a DataLoader with the batch size asked for and ``loader_options`` (``num_workers``,
``pin_memory``, ``persistent_workers``): one loader per batch size, whose sampler takes each
pass's order, so persistent workers live across epochs. Nothing is loaded whole into memory.

>>> import torch
>>> source = as_source(torch.randn(10, 1, 8), torch.arange(10) % 2)
>>> [tuple(x[0].shape) for x, _ in source.batches(batch_size=4, order="never")]
[(4, 1, 8), (4, 1, 8), (2, 1, 8)]
>>> as_source(torch.randn(10, 3), torch.zeros(9))
Traceback (most recent call last):
...
ValueError: predictors and targets must have the same number of examples: predictors have 10, targets have 9
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from prune_core.finetune.ranks import Ranks

Batch = tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]
SHUFFLE_CHOICES = ("once", "every-epoch", "never")


def _tensor(value: object, argument: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value
    else:
        try:
            tensor = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{argument} must be a tensor or a numeric array, got {type(value).__name__}") from exc
    if tensor.is_floating_point() and tensor.dtype == torch.float64:
        tensor = tensor.float()
    return tensor


def split_batch(batch: Any) -> Batch:
    """``(inputs, targets)`` tuples from a batch ``(x, y)``, ``(x1, .., xn, y)`` or ``((xs), (ys))``."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        size = f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""
        raise TypeError(f"each batch must be a tuple (inputs..., targets), got {type(batch).__name__}{size}")
    if len(batch) == 2 and isinstance(batch[0], (tuple, list)):
        inputs, targets = tuple(batch[0]), batch[1]
    else:
        inputs, targets = tuple(batch[:-1]), batch[-1]
    targets = tuple(targets) if isinstance(targets, (tuple, list)) else (targets,)
    return inputs, targets


class _OrderSampler(Sampler[int]):
    """Yields the indices of the current pass's order (set before each pass)."""

    def __init__(self) -> None:
        self.order: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class DataSource:
    """Mini-batches of ``(inputs, targets)``; build with ``as_source``."""

    def __init__(
        self, tensors: Batch | None = None, dataset: Dataset[Any] | None = None, loader: DataLoader[Any] | None = None
    ) -> None:
        self.tensors, self.dataset, self.loader = tensors, dataset, loader
        self._once: torch.Tensor | None = None
        self._passes = 0  # passes over a user's DataLoader in a data-parallel run (its sampler's epoch)
        self._loaders: dict[tuple[Any, ...], tuple[DataLoader[Any], _OrderSampler]] = {}

    def _dataset_loader(self, batch_size: int, loader_options: dict[str, Any]) -> tuple[DataLoader[Any], _OrderSampler]:
        assert self.dataset is not None
        key = (batch_size, *sorted(loader_options.items()))
        if key not in self._loaders:
            sampler = _OrderSampler()
            options = dict(loader_options)
            if not options.get("num_workers"):
                options.pop("persistent_workers", None)  # only meaningful with worker processes
            self._loaders[key] = DataLoader(self.dataset, batch_size=batch_size, sampler=sampler, **options), sampler
        return self._loaders[key]

    def __len__(self) -> int:
        if self.tensors is not None:
            return len(self.tensors[1][0])
        dataset = self.dataset if self.dataset is not None else self.loader.dataset  # type: ignore[union-attr]
        return len(dataset)  # type: ignore[arg-type]

    def num_batches(self, batch_size: int, ranks: Ranks | None = None) -> int:
        """Mini-batches in one pass (each rank's count where ``ranks`` is given: they all take as many)."""
        if self.loader is not None:
            return len(self.loader)
        if ranks is None or not ranks.distributed:
            return math.ceil(len(self) / batch_size)
        return math.ceil(math.ceil(len(self) / ranks.world) / ranks.local_batch_size(batch_size))

    def _order(self, order: str, generator: torch.Generator | None) -> torch.Tensor:
        n = len(self)
        if order == "never":
            return torch.arange(n)
        if order == "once":
            if self._once is None:
                self._once = torch.randperm(n, generator=generator)
            return self._once
        return torch.randperm(n, generator=generator)

    def batches(
        self,
        batch_size: int,
        order: str = "never",
        generator: torch.Generator | None = None,
        limit: int | None = None,
        loader_options: dict[str, Any] | None = None,
        ranks: Ranks | None = None,
        padded: bool = True,
    ) -> Iterator[Batch]:
        """One pass: ``order`` is "never", "once" (the same shuffle every pass) or "every-epoch"; at most
        ``limit`` batches. ``loader_options`` go to the DataLoader that reads a Dataset.

        With ``ranks`` of a data-parallel run, this rank's share of every batch (``Ranks.shard``; ``padded``
        so that every rank takes as many steps, or not, so that an evaluation counts each example once);
        a DataLoader's ``DistributedSampler`` is moved to the next epoch instead."""
        ranks = ranks if ranks is not None and ranks.distributed else None  # None: the whole of every batch
        if ranks is not None:
            batch_size = ranks.local_batch_size(batch_size)
        if self.loader is not None:
            if ranks is not None:
                self._passes += 1
                self.loader.sampler.set_epoch(self._passes)  # type: ignore[attr-defined]  # checked by shardable
            source = (split_batch(b) for b in self.loader)
        elif self.tensors is not None:
            inputs, targets = self.tensors
            index = self._order(order, generator)
            if ranks is not None:
                index = ranks.shard(index, padded)
            source = (
                (tuple(t[i] for t in inputs), tuple(t[i] for t in targets)) for i in torch.split(index, batch_size)
            )
        else:
            loader, sampler = self._dataset_loader(batch_size, loader_options or {})
            index = self._order(order, generator)
            sampler.order = (index if ranks is None else ranks.shard(index, padded)).tolist()
            source = (split_batch(b) for b in loader)
        for k, batch in enumerate(source):
            if limit is not None and k >= limit:
                return
            yield batch

    def check_shardable(self, ranks: Ranks, argument: str = "data") -> None:
        """Refuse a DataLoader that a data-parallel run could not split among ``ranks``."""
        if ranks.distributed and self.loader is not None and not isinstance(self.loader.sampler, DistributedSampler):
            raise ValueError(
                f"{argument}: a DataLoader read by {ranks.world} processes needs a "
                f"torch.utils.data.DistributedSampler (got {type(self.loader.sampler).__name__}); "
                "or pass its Dataset, which each process then reads its share of"
            )

    def first_inputs(self, count: int = 2) -> tuple[torch.Tensor, ...]:
        """The first ``count`` examples' inputs, e.g. as the example input of a channel analysis."""
        inputs, _ = next(iter(self.batches(batch_size=count)))
        return tuple(x[:count] for x in inputs)


def _from_frame(frame: pd.DataFrame, argument: str) -> Batch:
    if frame.shape[1] < 2:
        raise ValueError(
            f"{argument}: a DataFrame needs predictor columns and a last target column, "
            f"got columns {list(frame.columns)}"
        )
    predictors, target = frame.iloc[:, :-1], frame.iloc[:, -1]
    if predictors.shape[1] == 1 and predictors.iloc[:, 0].dtype == object:
        x = np.stack([np.asarray(v, dtype=np.float32) for v in predictors.iloc[:, 0]])
    else:
        numeric = predictors.select_dtypes("number")
        if numeric.shape[1] != predictors.shape[1]:
            bad = [c for c in predictors.columns if c not in numeric.columns]
            raise TypeError(f"{argument}: predictor columns must be numeric, got non-numeric {bad}")
        x = numeric.to_numpy(np.float32, copy=True)
    if isinstance(target.dtype, pd.CategoricalDtype) or target.dtype == object or pd.api.types.is_string_dtype(target):
        y = target.astype("category").cat.codes.to_numpy(np.int64)
    else:
        y = target.to_numpy(copy=True)
    return (torch.as_tensor(x),), (_tensor(y, f"{argument} targets"),)


def as_source(data: Any, targets: Any = None, argument: str = "data") -> DataSource:
    """A ``DataSource`` for ``data`` (or ``predictors, targets``); see the module docstring."""
    if targets is not None:
        x = data if isinstance(data, (tuple, list)) else (data,)
        y = targets if isinstance(targets, (tuple, list)) else (targets,)
        tensors = (tuple(_tensor(v, "predictors") for v in x), tuple(_tensor(v, "targets") for v in y))
    elif isinstance(data, DataLoader):
        return _checked(DataSource(loader=data), argument)
    elif isinstance(data, Dataset):
        return _checked(DataSource(dataset=data), argument)
    elif isinstance(data, pd.DataFrame):
        tensors = _from_frame(data, argument)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        return as_source(data[0], data[1], argument)
    else:
        raise TypeError(
            f"{argument} must be a DataLoader, a Dataset, a (predictors, targets) pair or a DataFrame, "
            f"got {type(data).__name__}"
        )
    lengths = [len(t) for t in tensors[0]], [len(t) for t in tensors[1]]
    if len(set(lengths[0] + lengths[1])) > 1:
        raise ValueError(
            f"predictors and targets must have the same number of examples: "
            f"predictors have {_counts(lengths[0])}, targets have {_counts(lengths[1])}"
        )
    return _checked(DataSource(tensors=tensors), argument)


def _counts(lengths: Sequence[int]) -> str:
    return ", ".join(map(str, lengths))


def _checked(source: DataSource, argument: str) -> DataSource:
    if len(source) == 0:
        raise ValueError(f"{argument} is empty: it holds no examples")
    return source
