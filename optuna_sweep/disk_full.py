"""Say "No space left on device while writing <path>" first when a study or a job stops on a full disk.

A full disk surfaces as an ``OSError`` with ``errno.ENOSPC`` (a file the job writes) or as SQLite's
"database or disk is full" (an Optuna or MLflow store), wrapped in SQLAlchemy, MLflow and Optuna
exceptions whose text runs to dozens of lines. ``disk_full_line(exc)`` looks through the
exception, its causes and contexts, and returns the one line to show first, or None when the
disk is not the cause. The path is the error's file name or, where the error gives none, the
file or SQLite database being written in the innermost frame that holds one (an open file, a
SQLAlchemy connection).

>>> import errno
>>> disk_full_line(RuntimeError("saving failed")) is None
True
>>> try:
...     try:
...         raise OSError(errno.ENOSPC, "No space left on device", "/data/run/model.onnx")
...     except OSError as exc:
...         raise RuntimeError("export failed") from exc
... except RuntimeError as wrapped:
...     disk_full_line(wrapped)
'No space left on device while writing /data/run/model.onnx'
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator

SQLITE_FULL = "database or disk is full"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [current.__cause__, current.__context__]


def _written(value: object) -> str | None:
    """The path ``value`` writes to: an open file's name, or a SQLAlchemy connection's database."""
    url = getattr(getattr(value, "engine", None), "url", None)
    database = getattr(url, "database", None)
    if isinstance(database, str) and database:
        return database
    name = getattr(value, "name", None)
    return name if callable(getattr(value, "write", None)) and isinstance(name, str) and name else None


def _path_in_frames(exc: BaseException) -> str | None:
    """The file or database being written where ``exc`` was raised: the innermost frame that holds one."""
    frames, tb = [], exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if (path := _written(value)) is not None:
                return path
    return None


def disk_full_line(exc: BaseException) -> str | None:
    """ "No space left on device while writing <path>" when a full disk caused ``exc``; else None."""
    for cause in _chain(exc):
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            where = cause.filename or _path_in_frames(cause)
        elif isinstance(cause, sqlite3.OperationalError) and SQLITE_FULL in str(cause):
            where = next(filter(None, map(_path_in_frames, _chain(exc))), None)
        else:
            continue
        return f"No space left on device while writing {where or 'a file whose name the error does not give'}"
    return None
