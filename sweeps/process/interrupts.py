"""Ctrl-C and SIGTERM stop a job or a study within seconds, and are recorded as a stop, not a failure.

``install()`` (the app's main thread, and each launcher worker's) makes SIGINT and SIGTERM raise
``KeyboardInterrupt``, and also records that a signal came. The record matters because a signal
that lands while torch runs Python code from C++ (an autograd hook during a scoring pass, say)
can come back out of torch as a ``RuntimeError``: without it, that trial was counted as failed
and the study went on with its next trial. ``interrupted(exc)`` is what the app's handlers ask.

>>> interrupted(KeyboardInterrupt()), interrupted(RuntimeError("a plain failure"))
(True, False)
"""

from __future__ import annotations

import signal
import threading

_received: list[str] = []


def _raise_interrupt(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    _received.append(name)
    raise KeyboardInterrupt(f"signal {name}")


def install() -> None:
    """Handle SIGINT and SIGTERM as above in this process (only possible from its main thread)."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _raise_interrupt)


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is, or came out of, a Ctrl-C or SIGTERM received by this process."""
    return isinstance(exc, KeyboardInterrupt) or bool(_received)
