"""Opening a study's storage: safely when several workers create it at once, with heartbeats on request.

- ``open_storage(url)``: ``None`` (in memory), a database URL (``sqlite:///``, ``postgresql://``, ...)
  or ``journal:PATH``;
- ``heartbeat_interval`` (seconds) and ``grace_period`` make a database storage record each running
  trial's heartbeat, so that trials of a worker that died on any host are failed (and, with a
  ``stale_trial_callback``, retried) by the next worker that asks for a trial;
- ``creation_lock(path)``: an inter-process lock, kept outside the user's folder, under which a
  file-backed store is created: two workers started in the same second no longer race over the
  schema. A server database (PostgreSQL, MySQL) is retried instead.
- a server database is opened as a ``ReconnectingRDBStorage`` (``reconnecting``): a restart or
  failover of its server is ridden out for ``reconnect_seconds``.

>>> open_storage(None) is None
True
>>> open_storage("journal:/no/such/folder/j.log")
Traceback (most recent call last):
ValueError: hydra.sweeper.storage='journal:/no/such/folder/j.log': folder '/no/such/folder' does not exist
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from filelock import FileLock

from optuna_sweep.reconnecting import RECONNECT_SECONDS, ReconnectingRDBStorage

ATTEMPTS = 4  # a server database's first creation, raced by several workers


def creation_lock(path: str | Path) -> FileLock:
    """A lock named after ``path`` in the temporary folder (same host: fine for a file-backed store)."""
    digest = hashlib.sha256(str(Path(path).expanduser().resolve()).encode()).hexdigest()[:16]
    return FileLock(Path(tempfile.gettempdir()) / f"optuna-sweep-store-{digest}.lock")


def open_storage(
    storage: str | None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_trial_callback: Callable | None = None,
    driver_hint: str | None = None,
    *,
    reconnect_seconds: float = RECONNECT_SECONDS,
):
    """The Optuna storage of ``hydra.sweeper.storage`` (see the module docstring); ``driver_hint``: how to
    install a database driver that is missing (``hydra.sweeper.driver_hint``), added to that error."""
    heartbeat = (
        {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period,
            "heartbeat_stale_trial_callback": stale_trial_callback,
        }
        if heartbeat_interval
        else {}
    )
    if heartbeat and (storage is None or storage.startswith("journal:")):
        raise ValueError(
            f"hydra.sweeper.heartbeat_interval={heartbeat_interval} needs a database storage "
            f"(sqlite:///..., postgresql://...), not hydra.sweeper.storage={storage!r}"
        )
    if storage is None:
        return None
    if storage.startswith("journal:"):
        path = Path(storage.removeprefix("journal:")).expanduser()
        if not path.parent.is_dir():
            raise ValueError(f"hydra.sweeper.storage={storage!r}: folder {str(path.parent)!r} does not exist")
        return optuna.storages.journal.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    sqlite = storage.startswith("sqlite:///") and storage != "sqlite:///:memory:"
    for attempt in range(1 if sqlite else ATTEMPTS):
        time.sleep(0.5 * attempt)
        try:
            if sqlite:
                with creation_lock(storage.removeprefix("sqlite:///")):
                    return optuna.storages.RDBStorage(storage, **heartbeat)
            return ReconnectingRDBStorage(storage, reconnect_seconds=reconnect_seconds, **heartbeat)
        except Exception as exc:  # a concurrent schema creation, or a URL that cannot work
            error = exc
    hint = f" ({driver_hint})" if driver_hint and isinstance(error, ImportError) else ""
    raise ValueError(
        f"hydra.sweeper.storage={storage!r} cannot be opened: {type(error).__name__}: {error}{hint}. "
        "Use a database URL (sqlite:///path.db, postgresql://user@host/db) or journal:PATH"
    ) from error
