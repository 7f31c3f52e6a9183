"""Going on from a checkpoint: what ``compress_network(..., resume_from=path)`` reads back.

Every checkpoint the pruning loop writes carries, beside the network and its history row, what
a later run needs to go on from it (``resume_extra``): the pruning history so far, the global
fine-tuning iteration count and the per-site filter floors of the original network.
``read_resume_point`` rebuilds the checkpointed network from the caller's original network and
checks that the checkpoint began from a network of the same size. The scores start again from
zero, as after any surgery, and the optimizer is built anew for the next fine-tuning; the
training and validation histories of the returned ``PruningInfo`` hold what the resumed run did.

>>> import tempfile, torch.nn as nn
>>> from pathlib import Path
>>> from prune_core.channels import save_pruned
>>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
>>> rows = [{"iteration": 0, "learnables": 26, "time_s": 0.0}, {"iteration": 1, "learnables": 26, "time_s": 1.5}]
>>> path = Path(tempfile.mkdtemp()) / "pruned_iteration_001.pt"
>>> save_pruned(net, path, extra={**rows[-1], **resume_extra(rows, 40, {("0", 0): 1})})
>>> point = read_resume_point(path, net)
>>> point.iteration, point.log_iteration, point.floors, point.network is net
(1, 40, {('0', 0): 1}, False)
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from prune_core.channels import load_pruned, read_pruned
from prune_core.pruning_info import learnables

RESUME_KEY = "resume"


def resume_extra(rows: list[dict[str, Any]], log_iteration: int, floors: dict[tuple[str, int], int]) -> dict[str, Any]:
    """The part of a checkpoint's metadata that lets a later run go on from it (JSON-able)."""
    return {
        RESUME_KEY: {
            "rows": [dict(row) for row in rows],
            "log_iteration": log_iteration,
            "floors": [[name, dim, floor] for (name, dim), floor in floors.items()],
        }
    }


@dataclass
class ResumePoint:
    """A checkpointed pruning run: its network, its history rows, the fine-tuning iteration count it
    had reached and its filter floors."""

    network: nn.Module
    rows: list[dict[str, Any]]
    log_iteration: int
    floors: dict[tuple[str, int], int]

    @property
    def iteration(self) -> int:
        """The pruning iteration the checkpoint was written after."""
        return int(self.rows[-1]["iteration"])


def read_resume_point(path: str | os.PathLike[str], original: nn.Module) -> ResumePoint:
    """The checkpoint at ``path``, written by a pruning run of ``original`` (never modified: a copy is
    shrunk to the checkpoint). Raises ValueError naming ``resume_from`` when the file is not such a
    checkpoint or began from a network of another size."""
    spec, _ = read_pruned(path)
    saved = (spec.get("extra") or {}).get(RESUME_KEY)
    where = f"resume_from {str(path)!r}"
    if not isinstance(saved, dict) or not saved.get("rows") or not isinstance(saved.get("log_iteration"), int):
        raise ValueError(
            f"{where} is not a checkpoint compress_network can go on from (it holds no pruning history); "
            "use a file its checkpoint_path received"
        )
    rows = [dict(row) for row in saved["rows"]]
    start = learnables(original)
    if rows[0].get("learnables") != start:
        raise ValueError(
            f"{where} began from a network of {rows[0].get('learnables')} learnables; this one has {start}. "
            "Pass the network that run started from"
        )
    network = load_pruned(Path(path), lambda: copy.deepcopy(original))
    floors = {(str(name), int(dim)): int(floor) for name, dim, floor in saved.get("floors", [])}
    return ResumePoint(network, rows, saved["log_iteration"], floors)
