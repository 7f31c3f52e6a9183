"""``CheckpointWriter``: the pruning loop's checkpoints, written on a thread of their own.

The loop hands over a snapshot, a network it never changes again, and goes on fine-tuning;
the writer saves it with ``save_pruned`` (atomically: a temporary file renamed into place),
then calls ``on_written(path)`` on the same thread (the app logs the file to MLflow there).
At most one checkpoint is in flight: handing over the next waits for the last. Leaving the
``with`` block waits for the last one, so every file listed in ``written`` is complete and
loadable by then. A write that failed fails the run, at the next hand-over or at the end,
with the path named (``No space left on device while writing checkpoint ...``). When the
block itself raises, the writer only waits, and the block's own error is the one raised.

>>> import tempfile, torch.nn as nn
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> with CheckpointWriter() as writer:
...     writer.write(nn.Linear(2, 2), folder / "one.pt", extra={"iteration": 1})
>>> [path.name for path in writer.written], (folder / "one.pt").is_file()
(['one.pt'], True)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from torch import nn

from prune_core.channels import save_pruned


def _failure(path: Path, exc: BaseException) -> Exception:
    """The error a failed write raises in the loop: what went wrong, on which file."""
    if isinstance(exc, OSError):
        return OSError(exc.errno, f"{exc.strerror or exc} while writing checkpoint {path}")
    return RuntimeError(f"checkpoint {path} could not be written ({type(exc).__name__}: {exc})")


class CheckpointWriter:
    """Saves networks in the background, one at a time (see the module docstring).

    ``waited`` is the time the loop spent handing over and waiting, in seconds: the part of the
    checkpoints that is still on its critical path.
    """

    def __init__(self, on_written: Callable[[Path], None] | None = None) -> None:
        self.on_written = on_written
        self.written: list[Path] = []
        self.waited = 0.0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taylorprune-checkpoint")
        self._pending: tuple[Path, Future[None]] | None = None

    def write(self, snapshot: nn.Module, path: Path, extra: dict[str, Any]) -> None:
        """Save ``snapshot`` (never changed again by the caller) to ``path``, after the last write ends."""
        started = time.perf_counter()
        self._finish_pending()
        self._pending = (path, self._pool.submit(self._save, snapshot, path, dict(extra)))
        self.waited += time.perf_counter() - started

    def _save(self, snapshot: nn.Module, path: Path, extra: dict[str, Any]) -> None:
        try:
            save_pruned(snapshot, path, extra=extra)
        except Exception as exc:
            raise _failure(path, exc) from exc
        if self.on_written is not None:
            try:
                self.on_written(path)
            except Exception as exc:
                raise RuntimeError(
                    f"checkpoint {path} was written, but on_written failed ({type(exc).__name__}: {exc})"
                ) from exc

    def _finish_pending(self) -> None:
        if self._pending is None:
            return
        path, future = self._pending
        self._pending = None
        future.result()  # the write's own error, its path named
        self.written.append(path)

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        started = time.perf_counter()
        try:
            if error is None:
                self._finish_pending()
        finally:
            self._pool.shutdown(wait=True)
            self.waited += time.perf_counter() - started
