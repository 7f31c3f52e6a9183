"""Which process runs a trial, and whether that process is gone: how the sweeper reaps dead workers.

Every trial the sweeper asks for records its worker (``host``, ``pid`` and the process' start
time) in the user attribute ``worker``. A starting or resuming sweeper fails the RUNNING trials
whose worker ran on this host and is gone; a recycled pid is told apart by its start time.
Trials of other hosts are left to Optuna's heartbeats (``hydra.sweeper.heartbeat_interval``).

>>> me = this_worker()
>>> is_gone(me)
False
>>> is_gone(me | {"started": me["started"] - 1000.0})    # the pid now belongs to a newer process
True
>>> is_gone(me | {"host": "another-host"}), is_gone("not a record")    # nothing to tell from here
(False, False)
"""

from __future__ import annotations

import os
import socket
from typing import Any

import psutil

WORKER_ATTR = "worker"


def this_worker() -> dict[str, Any]:
    """This process: ``{"host", "pid", "started"}`` (start time in seconds since the epoch)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": round(psutil.Process().create_time(), 2)}


def is_gone(record: Any) -> bool:
    """Whether ``record`` (a ``this_worker()`` read back) names a process of this host that no longer runs."""
    if not isinstance(record, dict) or record.get("host") != socket.gethostname():
        return False
    try:
        pid, started = int(record["pid"]), float(record["started"])
    except (KeyError, TypeError, ValueError):
        return False
    try:
        process = psutil.Process(pid)
        return process.status() == psutil.STATUS_ZOMBIE or abs(process.create_time() - started) > 1.0
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # e.g. access denied: alive, as far as we can tell
        return False
