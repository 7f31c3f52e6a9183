"""The app's processes, forked from an interpreter that has already imported the app.

Starting ``python -m sweeps.run`` spends about 4 seconds importing torch, MLflow, Optuna and Hydra
before it reads its first argument, and the suite starts it about a hundred times. A zygote imports
them once per test process; every ``run_module`` forks it, and the child runs the module as
``__main__`` as ``python -m`` does: the same arguments, folder (first on ``sys.path``), environment,
output and exit status (``-N`` for a signal), and the interpreter's own steps on exit (threads
joined, ``atexit`` run, output flushed). What differs from a fresh interpreter: the modules were
imported before the environment was set, and the child leaves without tearing its modules down
(``_exit``). Tests that signal the app while it runs start a fresh interpreter
(``tests.support.app.start_app``).

    result = run_module("sweeps.run", ["-m", "pruning.goal=0.3"], cwd=tmp_path, env=app_env())
    assert result.returncode == 0, result.stderr

The zygote speaks JSON lines: a request ``{"module", "args", "cwd", "env", "stdout", "stderr",
"timeout"}`` on its stdin, and ``{"returncode", "timed_out"}`` once the child is gone (killed if it
ran past ``timeout`` seconds).
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

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


def _serve() -> None:
    """The zygote: import, then fork one child per request and report its pid and exit status."""
    requests = os.fdopen(os.dup(0), "r")
    replies = os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    for name in (*MAIN_MODULES, *WARM_MODULES):
        importlib.import_module(name)
    for name in MAIN_MODULES:
        package, _, leaf = name.rpartition(".")
        del sys.modules[name]
        vars(sys.modules[package]).pop(leaf, None)
    assert threading.active_count() == 1, "a zygote forks only while it has one thread"
    replies.write("ready\n")
    replies.flush()
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            requests.close()
            replies.close()
            _run_as_main(**request)  # never returns: the child ends with the module's exit status
        exited = os.pidfd_open(pid)
        timed_out = not select.select([exited], [], [], request["timeout"])[0]
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        os.close(exited)
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out}) + "\n")
        replies.flush()


def _run_as_main(
    module: str, args: list[str], cwd: str, env: dict[str, str], stdout: str, stderr: str, timeout: float
) -> None:
    """In the forked child: become ``python -m module args...`` in ``cwd`` and exit as it would."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, stdout), (2, stderr)):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    sys.path[0] = cwd
    sys.argv = [module, *args]
    if "numpy" in sys.modules:  # its global generator was seeded once, in the zygote
        sys.modules["numpy"].random.seed()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as exit:
        status = _exit_status(exit.code)
    except BaseException:
        traceback.print_exc()
        status = 1
    _exit(status)


def _exit_status(code: object) -> int:
    """The exit status ``python`` gives ``SystemExit(code)``, printing a message as it does."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def _exit(status: int) -> None:
    """End the child as the interpreter ends: wait for its threads, run ``atexit``, flush the output.

    It then leaves without tearing down the modules: in a child forked from a large interpreter, that
    teardown touches every page the zygote holds and costs 2 seconds, and it runs no code of the app's.
    """
    threading._shutdown()  # type: ignore[attr-defined]  # what the interpreter calls first on exit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)


class _Zygote:
    """One zygote per test process, started on first use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process: subprocess.Popen | None = None

    def started(self, env: dict[str, str]) -> subprocess.Popen:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.zygote"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            if self.process.stdout.readline() != "ready\n":
                raise RuntimeError(f"the app's zygote did not start (exit status {self.process.wait()})")
        return self.process

    def run(self, request: dict) -> int:
        with self.lock:
            process = self.started(request["env"])
            process.stdin.write(json.dumps(request) + "\n")
            process.stdin.flush()
            reply = json.loads(process.stdout.readline())
        if reply["timed_out"]:
            raise subprocess.TimeoutExpired([request["module"], *request["args"]], request["timeout"])
        return reply["returncode"]


_ZYGOTE = _Zygote()


def run_module(
    module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python -m module args...`` in ``cwd`` with ``env``, forked from the zygote; its exit status and output."""
    with tempfile.TemporaryDirectory() as scratch:
        out, err = Path(scratch, "stdout"), Path(scratch, "stderr")
        request = {"module": module, "args": list(args), "cwd": str(cwd), "env": env, "timeout": timeout}
        returncode = _ZYGOTE.run(request | {"stdout": str(out), "stderr": str(err)})
        command = [sys.executable, "-m", module, *args]
        return subprocess.CompletedProcess(command, returncode, out.read_text(), err.read_text())


if __name__ == "__main__":
    _serve()
