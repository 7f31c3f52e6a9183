"""Run a function on every rank of a real ``torch.distributed`` group (gloo, CPU) of fresh processes.

``run_ranks(scenario, world, folder, *args)`` starts ``world`` spawned processes; each joins a gloo
process group on a free port of 127.0.0.1 and calls ``scenario(rank, *args)`` (a module-level function,
so that a spawned process can import it). It waits for all of them to end and returns one
``Outcome`` per rank: the value returned, the exception raised (its type name and message), or the
exit code of a process that died. A process that outlives the others is waited for, never killed:
a rank that hung would hang the test, which is what a test of "no rank hangs" must see.

    outcomes = run_ranks(train_twice, 2, tmp_path, 0.1)
    assert [o.value for o in outcomes] == [...]
"""

from __future__ import annotations

import os
import pickle
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp


@dataclass
class Outcome:
    """How one rank ended: ``value`` returned, or ``error`` ("TypeName: message"), and its ``exitcode``."""

    value: Any = None
    error: str | None = None
    exitcode: int = 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _rank_main(scenario: Callable[..., Any], rank: int, world: int, port: int, folder: str, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    os.environ["LOCAL_RANK"] = str(rank)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(minutes=5))
    try:
        outcome = Outcome(value=scenario(rank, *args))
    except BaseException as exc:  # Ctrl-C included: the outcome says so
        traceback.print_exc()
        outcome = Outcome(error=f"{type(exc).__name__}: {exc}")
    Path(folder, f"rank{rank}.pkl").write_bytes(pickle.dumps(outcome))
    if dist.is_initialized():
        dist.destroy_process_group()


def run_ranks(scenario: Callable[..., Any], world: int, folder: Path, *args: Any) -> list[Outcome]:
    """``scenario(rank, *args)`` on each of ``world`` ranks; see the module docstring."""
    context = mp.get_context("spawn")
    port = _free_port()
    processes = [
        context.Process(target=_rank_main, args=(scenario, rank, world, port, str(folder), args))
        for rank in range(world)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    outcomes = []
    for rank, process in enumerate(processes):
        result = folder / f"rank{rank}.pkl"
        outcome = pickle.loads(result.read_bytes()) if result.is_file() else Outcome(error="no outcome")
        outcome.exitcode = process.exitcode
        outcomes.append(outcome)
    return outcomes
