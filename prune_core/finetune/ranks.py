"""``Ranks``: the processes one run is spread over, when it runs data-parallel under ``torch.distributed``.

``compress_network`` and ``train_network`` read ``Ranks.current()``: inside a process group of more
than one process (``torchrun``, SLURM's ``srun`` with one task per GPU, ``torch.multiprocessing``
with ``init_process_group``), every process is one rank of the run; otherwise the run is the
single process it always was, and nothing here does anything.

What the ranks share, and how:

- **Data.** ``mini_batch_size`` stays the *global* batch: each of ``world`` ranks reads
  ``mini_batch_size / world`` examples of every mini-batch, so a run on 4 processes takes the
  steps one process takes, on the same batches, and learning rates mean the same. ``shard``
  splits a pass's order the way ``DistributedSampler`` does (padded to a multiple of ``world``
  with its first indices, then every ``world``-th from ``rank``); a rank's k-th batch is then
  its slice of the k-th global batch. The order is drawn from the run's own generator, the
  same on every rank, so that the batches are the ones a single process sees: that is why
  this is not ``DistributedSampler`` itself, whose permutation comes from its own seed. A
  DataLoader given by the user must already hold a ``DistributedSampler``; its
  ``set_epoch`` is called before every pass.
- **Gradients.** Fine-tuning wraps the network in ``DistributedDataParallel`` (``wrap``), again
  after every surgery, since its buckets hold the old shapes.
- **Values.** Losses, metrics and scores are summed across ranks (``sum``), so every rank holds
  the same numbers; choices made by code that may differ per rank (the units to remove, the
  stop, a user's callback) are rank 0's, broadcast (``from_main``).
- **Failure.** Inside ``failing_together()``, an exception on one rank is written to the
  process group's store and the group is destroyed, so the other ranks, waiting in a
  collective, fail at once with that rank's error (``RankFailed``) instead of waiting for the
  group's timeout. A rank killed outright shows as a closed connection on the others, which
  fail with that error; the launcher (torchrun, srun) then ends the job.

>>> Ranks.current()   # no process group: one process
Ranks(rank=0, world=1)
>>> ranks = Ranks(rank=1, world=2)
>>> ranks.shard(torch.arange(5)).tolist()   # padded to 6 with index 0; rank 1 takes 1, 3, 0
[1, 3, 0]
>>> ranks.shard(torch.arange(5), padded=False).tolist()
[1, 3]
>>> ranks.local_batch_size(64)
32
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.distributed_c10d import Store

T = TypeVar("T")
_FAILED_KEY = "prune_core/failed"


class RankFailed(RuntimeError):
    """Another rank of the run failed; the message is that rank's error."""


@dataclass(frozen=True)
class Ranks:
    """This process's ``rank`` among the ``world`` processes of a run (see the module docstring)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Ranks:
        """The ranks of the initialised default process group, or a single process."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that prints, plots, checkpoints and calls the user's callbacks."""
        return self.rank == 0

    def local_batch_size(self, batch_size: int, argument: str = "options.mini_batch_size") -> int:
        """This rank's share of a global mini-batch; the global size must divide among the ranks."""
        if batch_size % self.world:
            raise ValueError(
                f"{argument}={batch_size} does not divide among the {self.world} processes of this run: "
                f"each reads an equal share of every mini-batch; use a multiple of {self.world}"
            )
        return batch_size // self.world

    def shard(self, order: torch.Tensor, padded: bool = True) -> torch.Tensor:
        """This rank's indices of a pass's ``order``: every ``world``-th from ``rank``, after padding the order
        to a multiple of ``world`` with its first indices (``padded``; every rank then takes as many steps)."""
        if not self.distributed:
            return order
        if padded and len(order) % self.world:
            extra = self.world - len(order) % self.world
            order = torch.cat([order, order[:extra].repeat(extra // max(len(order), 1) + 1)[:extra]])
        return order[self.rank :: self.world]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the ranks, in place (every rank gets the same values); returns it."""
        if not self.distributed:
            return tensor
        if dist.get_backend() == dist.Backend.NCCL and not tensor.is_cuda:  # NCCL reduces GPU memory only
            on_gpu = tensor.to(self.device(torch.device("cuda")))
            dist.all_reduce(on_gpu)
            return tensor.copy_(on_gpu)
        dist.all_reduce(tensor)
        return tensor

    def from_main(self, value: T) -> T:
        """Rank 0's ``value`` (any picklable object), on every rank."""
        if not self.distributed:
            return value
        box: list[Any] = [value]
        nccl = dist.get_backend() == dist.Backend.NCCL
        dist.broadcast_object_list(box, src=0, device=self.device(torch.device("cuda")) if nccl else None)
        return box[0]  # type: ignore[no-any-return]

    def main_says(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (the others' are ignored): one small all-reduce, for a per-step
        answer where ``from_main``'s pickling would cost more."""
        if not self.distributed:
            return flag
        return bool(self.sum(torch.tensor([float(flag and self.main)]))[0])

    def device(self, device: torch.device) -> torch.device:
        """``device`` as this rank's: CUDA without an index is the rank's local GPU (``LOCAL_RANK``)."""
        if not self.distributed or device.type != "cuda" or device.index is not None:
            return device
        local = int(os.environ.get("LOCAL_RANK", self.rank % max(torch.cuda.device_count(), 1)))
        return torch.device("cuda", local)

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` as the network a training step runs: in ``DistributedDataParallel`` across the ranks
        (rank 0's parameters and buffers copied to the others), or itself in a single process."""
        if not self.distributed:
            return model
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        ids = [device] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    @contextlib.contextmanager
    def failing_together(self) -> Iterator[None]:
        """Run a block on every rank; an exception on one fails them all (see the module docstring)."""
        if not self.distributed:
            yield
            return
        try:
            yield
        except BaseException as exc:
            if isinstance(exc, RankFailed) or not dist.is_initialized():  # told already, or the group is gone
                raise
            store = _store()
            reason = _failure(store)
            if reason is None:  # this rank failed first: tell the others, and let them go
                with contextlib.suppress(RuntimeError):
                    if store is not None:
                        store.set(_FAILED_KEY, f"rank {self.rank} failed: {type(exc).__name__}: {exc}")
                dist.destroy_process_group()
                raise
            if reason.startswith(f"rank {self.rank} ") or isinstance(exc, KeyboardInterrupt):  # its own stop
                raise
            raise RankFailed(reason) from exc


def _store() -> Store | None:
    """The default process group's key-value store (None once the group is gone)."""
    try:
        return dist.distributed_c10d._get_default_store()
    except (RuntimeError, ValueError, AttributeError):
        return None


def _failure(store: Store | None) -> str | None:
    """The failure a rank of this run wrote to ``store``, if any (None as well when the store is gone)."""
    try:
        return None if store is None or not store.check([_FAILED_KEY]) else store.get(_FAILED_KEY).decode()
    except RuntimeError:
        return None
