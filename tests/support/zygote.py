"""The app's processes, forked from an interpreter that has already imported the app.

Starting ``python -m sweeps.run`` spends about 4 seconds importing torch, MLflow, Optuna and Hydra
before it reads its first argument, and the suite starts it about a hundred times. A zygote imports
them once per test process; every ``start_module`` forks it, and the child runs the module as
``__main__`` as ``python -m`` does: the same arguments, folder (first on ``sys.path``), environment,
output and exit status (``-N`` for a signal), and the interpreter's own steps on exit (threads
joined, ``atexit`` run, output flushed). What differs from a fresh interpreter: the modules were
imported before the environment was set; the child's parent is the zygote, so the test holds a
``ForkedProcess`` (``subprocess.Popen``'s pid, stdout, poll, wait, send_signal, kill, communicate)
rather than a ``Popen``; and the child leaves without tearing its modules down (``_exit``).

    result = run_module("sweeps.run", ["-m", "pruning.goal=0.3"], cwd=tmp_path, env=app_env())
    assert result.returncode == 0, result.stderr
    process = start_module("sweeps.run", ["-m"], cwd=tmp_path, env=app_env())   # stdout and stderr merged
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate()

The zygote and the test process speak JSON over a Unix socket: a request ``{"id", "module", "args",
"cwd", "env"}`` with the child's stdout and stderr as file descriptors, then ``{"id", "pid"}`` once
forked and ``{"id", "returncode"}`` once the child is gone.
"""

from __future__ import annotations

import atexit
import importlib
import io
import itertools
import json
import os
import runpy
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parents[2]
# run as __main__ in the children: imported for what they import, then forgotten, so each child runs them afresh
MAIN_MODULES = ("sweeps.run", "analysis.__main__")
# what the app's jobs import on first use (the first optimizer imports torch._dynamo, a new MLflow store
# alembic and its SQLAlchemy dialect, a run GitPython, ...): about a second of every child's time
WARM_MODULES = (
    "torch._dynamo",
    "mlflow.pytorch",
    "mlflow.store.tracking.sqlalchemy_store",
    "alembic.command",
    "mako.template",
    "sqlalchemy.dialects.sqlite",
    "optuna.storages._rdb.models",
    "git",
    "IPython",
    "opentelemetry.sdk.metrics",
    "cryptography.fernet",
    "pygments.formatters.html",
    "matplotlib.backends.backend_agg",
    "mnist1d.data",
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher",
    "sweeps.builders.models",
    "sweeps.tracking.study_progress",
)


MESSAGE = 1 << 16  # bytes; a request (its environment included) is far smaller


def _serve(channel: socket.socket) -> None:
    """The zygote: import, then fork one child per request and report its pid and, once gone, its exit status."""
    for name in MAIN_MODULES:
        importlib.import_module(name)
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:  # a package a later release no longer brings: its children import it
            pass
    for name in MAIN_MODULES:
        package, _, leaf = name.rpartition(".")
        del sys.modules[name]
        vars(sys.modules[package]).pop(leaf, None)
    assert threading.active_count() == 1, "a zygote forks only while it has one thread"
    channel.send(b'{"ready": true}')
    children: dict[int, tuple[int, int]] = {}  # a child's pidfd: (request id, pid)
    while True:
        for ready in select.select([channel, *children], [], [])[0]:
            if ready is channel:
                message, fds, _, _ = socket.recv_fds(channel, MESSAGE, 2)
                if not message:
                    return  # the test process is gone
                request = json.loads(message)
                pid = os.fork()
                if pid == 0:
                    try:
                        channel.close()
                        for pidfd in children:
                            os.close(pidfd)
                        _run_as_main(request, *fds)  # ends the child with the module's exit status
                    except BaseException:  # the child failed before it could run the module (no such cwd)
                        traceback.print_exc()
                    os._exit(1)
                for fd in fds:
                    os.close(fd)
                children[os.pidfd_open(pid)] = (request["id"], pid)
                channel.send(json.dumps({"id": request["id"], "pid": pid}).encode())
            else:
                request_id, pid = children.pop(ready)
                os.close(ready)
                _, status = os.waitpid(pid, 0)
                channel.send(json.dumps({"id": request_id, "returncode": os.waitstatus_to_exitcode(status)}).encode())


def _run_as_main(request: dict, stdout: int, stderr: int) -> None:
    """In the forked child: become ``python -m module args...`` in ``cwd`` and exit as it would."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    os.close(stdout)
    if stderr != stdout:
        os.close(stderr)
    if request["env"].get("PYTHONUNBUFFERED"):  # as ``python -u``: every write reaches the file at once
        sys.stdout, sys.stderr = (
            io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding=stream.encoding, write_through=True)
            for fd, stream in ((1, sys.stdout), (2, sys.stderr))
        )
    sys.path[0] = request["cwd"]
    sys.argv = [request["module"], *request["args"]]
    if "numpy" in sys.modules:  # its global generator was seeded once, in the zygote
        sys.modules["numpy"].random.seed()
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as exit:
        status = _exit_status(exit.code)
    except BaseException as error:
        traceback.print_exc()
        status = -signal.SIGINT if isinstance(error, KeyboardInterrupt) else 1
    _exit(status)


def _exit_status(code: object) -> int:
    """The exit status ``python`` gives ``SystemExit(code)``, printing a message as it does."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def _exit(status: int) -> None:
    """End the child as the interpreter ends: wait for its threads, run ``atexit``, flush the output, and
    exit with ``status`` (``-N``: by signal N, as an uncaught ``KeyboardInterrupt`` ends ``python``).

    It then leaves without tearing down the modules: in a child forked from a large interpreter, that
    teardown touches every page the zygote holds and costs 2 seconds, and the app does not rely on it.
    """
    threading._shutdown()  # type: ignore[attr-defined]  # the interpreter's own first step on exit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    os._exit(status)


class ForkedProcess:
    """A child of the zygote, as the test sees it: what the tests use of ``subprocess.Popen``."""

    def __init__(self, args: list[str]) -> None:
        self.args, self.pid, self.returncode = args, 0, None
        self.stdout: TextIO | None = None  # set where stdout is a pipe to the test
        self.forked, self.gone = threading.Event(), threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self.gone.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        if self.returncode is None:
            raise RuntimeError(f"the app's zygote died while {' '.join(self.args)} ran")
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if not self.gone.is_set():
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, None]:
        """The rest of its output (until every process holding it is gone) and its end."""
        output: list[str] = []
        if self.stdout is not None:
            reader = threading.Thread(target=lambda: output.append(self.stdout.read()), daemon=True)
            reader.start()
            reader.join(timeout)
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.stdout.close()
        self.wait(timeout)
        return "".join(output), None


class _Zygote:
    """One zygote per test process, started on first use; a thread of the test process reads its replies."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.channel: socket.socket | None = None
        self.running: dict[int, ForkedProcess] = {}
        self.ids = itertools.count()

    def start(
        self, module: str, args: list[str], cwd: Path, env: dict[str, str], fds: tuple[int, int]
    ) -> ForkedProcess:
        process = ForkedProcess([sys.executable, "-m", module, *args])
        with self.lock:
            channel = self._started(env)
            request_id = next(self.ids)
            self.running[request_id] = process
            request = {"id": request_id, "module": module, "args": list(args), "cwd": str(cwd), "env": env}
            socket.send_fds(channel, [json.dumps(request).encode()], list(fds))
        process.forked.wait()
        if process.gone.is_set():
            process.wait()
        return process

    def _started(self, env: dict[str, str]) -> socket.socket:
        if self.channel is None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            subprocess.Popen(
                [sys.executable, "-m", "tests.support.zygote", str(theirs.fileno())],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
            )
            theirs.close()
            if ours.recv(MESSAGE) != b'{"ready": true}':
                raise RuntimeError("the app's zygote did not start")
            self.channel = ours
            threading.Thread(target=self._replies, args=(ours,), daemon=True, name="zygote-replies").start()
        return self.channel

    def _replies(self, channel: socket.socket) -> None:
        while message := channel.recv(MESSAGE):
            reply = json.loads(message)
            with self.lock:
                process = self.running[reply["id"]]
                if "pid" in reply:
                    process.pid = reply["pid"]
                    process.forked.set()
                else:
                    process.returncode = reply["returncode"]
                    del self.running[reply["id"]]
                    process.gone.set()
        with self.lock:  # the zygote died: nothing it ran will report
            self.channel = None
            for process in self.running.values():
                process.forked.set()
                process.gone.set()
            self.running.clear()


_ZYGOTE = _Zygote()


def start_module(module: str, args: list[str], cwd: Path, env: dict[str, str]) -> ForkedProcess:
    """``python -m module args...`` started in ``cwd`` with ``env``, forked from the zygote, its stdout and
    stderr merged in ``.stdout``."""
    read, write = os.pipe()
    try:
        process = _ZYGOTE.start(module, args, cwd, env, (write, write))
    finally:
        os.close(write)
    process.stdout = os.fdopen(read, "r")
    return process


def run_module(
    module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python -m module args...`` in ``cwd`` with ``env``, forked from the zygote; its exit status and output
    (``subprocess.TimeoutExpired`` after ``timeout`` seconds, the child killed)."""
    with tempfile.TemporaryDirectory() as scratch:
        out, err = Path(scratch, "stdout"), Path(scratch, "stderr")
        with out.open("w") as stdout, err.open("w") as stderr:
            process = _ZYGOTE.start(module, args, cwd, env, (stdout.fileno(), stderr.fileno()))
        try:
            returncode = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        return subprocess.CompletedProcess(process.args, returncode, out.read_text(), err.read_text())


if __name__ == "__main__":
    _serve(socket.socket(fileno=int(sys.argv[1])))
