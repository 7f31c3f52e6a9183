"""Slots that never wait: ``n_jobs`` trials at once, each slot taking the next trial as soon as its own ends.

A Hydra launcher's ``launch(batch)`` returns when its whole batch has ended, so trials launched in
batches of ``n_jobs`` wait for the slowest of their batch: a trial that Optuna's pruner stops early
frees nothing until then. ``Slots`` gives every slot a thread of its own that launches one job at a
time (a batch of one), and hands each job back as it ends, so the sweeper can ask for the next
trial at once.

This needs a launcher that runs its jobs in other processes (joblib's loky workers, submitit's
local or SLURM jobs): several launches then run at once. Hydra's basic launcher runs a job in the
sweeper's own process, changing its working folder and Hydra's global state: ``runs_jobs_elsewhere``
is False for it, and the sweeper runs its batches one job after another, as before.

A Ctrl-C or SIGTERM reaches the sweeper's main thread, not the slots' launches: ``stop()`` ends
the jobs' processes (the children this process started since the slots opened, with SIGKILL, as
joblib's own abort does), so every launch returns, and the sweeper tells the trials FAIL. Jobs on
other hosts (SLURM) are not this process's children and go on, as they do with a batch launch.

>>> class Echo:   # a launcher whose jobs return their overrides
...     def launch(self, batch, initial_job_idx):
...         return batch
>>> with Slots(Echo(), 2) as slots:
...     future = slots.launch(["a=1"], 0)
...     slots.ended([future]) == {future}, future.result()
(True, [['a=1']])
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import psutil


def runs_jobs_elsewhere(launcher: Any) -> bool:
    """Whether ``launcher`` runs its jobs in other processes, so that launches may run at once: every
    launcher but Hydra's basic one, which runs them in this process."""
    return type(launcher).__name__ != "BasicLauncher"


class Slots:
    """``n`` slots, each launching one job at a time with ``launcher`` on a thread of its own."""

    def __init__(self, launcher: Any, n: int) -> None:
        self.launcher = launcher
        self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="taylorprune-slot")
        self._before = {child.pid for child in psutil.Process().children(recursive=True)}

    def launch(self, overrides: list[str], number: int) -> Future:
        """Launch the job of trial ``number`` with ``overrides``; the future holds the launch's result."""
        return self._pool.submit(self.launcher.launch, [overrides], initial_job_idx=number)

    @staticmethod
    def ended(running: Iterable[Future]) -> set[Future]:
        """Wait until at least one of the ``running`` launches has ended; those that have."""
        done, _ = wait(list(running), return_when=FIRST_COMPLETED)
        return done

    def stop(self) -> None:
        """End the jobs' processes (see the module docstring), so that every launch returns."""
        for child in psutil.Process().children(recursive=True):
            if child.pid in self._before:
                continue
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass

    def __enter__(self) -> Slots:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown(wait=True)
