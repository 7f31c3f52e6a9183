"""Say "No space left on device while writing <path>" first when a study or a job stops on a full disk.

A full disk surfaces as an ``OSError`` with ``errno.ENOSPC`` (a file the job writes) or as SQLite's
"database or disk is full" (an Optuna or MLflow store), wrapped in SQLAlchemy, MLflow and Optuna
exceptions whose text runs to dozens of lines. ``disk_full_line(exc)`` looks through the
exception, its causes and contexts, and returns the one line to show first, or None when the
disk is not the cause. The path is the error's file name or, where the error gives none, the
file or SQLite database being written in the innermost frame that holds one (a file opened for
writing, a SQLAlchemy connection).

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
import os
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


# Words in a local variable's name that say it holds the path being written, best first.
_PATH_HINTS = ("dest", "out", "tmp", "temp", "path")


def _written(value: object, scope: dict[str, object]) -> str | None:
    """The path ``value`` (a local of a frame whose locals are ``scope``) writes to: a SQLAlchemy connection's
    database, or a file opened for writing: its name, or where it was opened from a descriptor (no name),
    the frame's own name for the path (``destination_path``, ``tmp_path``, ...)."""
    url = getattr(getattr(value, "engine", None), "url", None)
    database = getattr(url, "database", None)
    if isinstance(database, str) and database:
        return os.path.abspath(database)  # a SQLite URL's path may be relative to the working folder
    mode = getattr(value, "mode", "w")
    if not callable(getattr(value, "write", None)) or (isinstance(mode, str) and "r" in mode and "+" not in mode):
        return None
    name = getattr(value, "name", None)
    if isinstance(name, str) and name:
        return None if name.startswith("<") else name  # <stdout>, <stderr>: not where the disk filled
    paths = {key.lower(): v for key, v in scope.items() if isinstance(v, str) and os.path.isabs(v)}
    return next((v for hint in _PATH_HINTS for key, v in paths.items() if hint in key), None)


def _path_in_frames(exc: BaseException) -> str | None:
    """The file or database being written where ``exc`` was raised: the innermost frame that holds one."""
    frames, tb = [], exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        scope = frame.f_locals
        for value in scope.values():
            if (path := _written(value, scope)) is not None:
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
