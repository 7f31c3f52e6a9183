"""Real services for tests and benchmarks: a throwaway PostgreSQL cluster and an ``mlflow server``, on 127.0.0.1.

Both wait on events (``pg_ctl -w``, the server's ``/health`` answering), never on fixed sleeps;
the deadlines only catch a service that hangs.

    with postgres() as base:                                # postgresql://postgres@127.0.0.1:PORT
        study_url = create_database(base, "optuna")         # postgresql://postgres@127.0.0.1:PORT/optuna
        pg_ctl(base, "stop"); pg_ctl(base, "start")         # an outage, as an administrator makes one
        with mlflow_server(create_database(base, "mlflow"), Path("artifacts")) as url:
            ...                                              # http://127.0.0.1:PORT

PostgreSQL comes from the Debian package ``postgresql`` (``.ci/run`` installs it where absent).
``initdb`` and ``pg_ctl`` refuse to run as root, so as root they run as the ``postgres`` user on
a data folder of its own.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

STARTUP_DEADLINE = 300  # seconds; a loaded machine may take a while, a hung service never ends
_PG_CTL: dict[str, dict[str, list[str]]] = {}  # each running cluster's pg_ctl commands, by base URL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    """The folder of ``pg_ctl`` and ``initdb``: on the PATH, or Debian's ``/usr/lib/postgresql/<N>/bin``."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


@contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL cluster in a temporary folder, trusting local connections; yields its base URL."""
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (see .ci/run)")
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    folder = Path(tempfile.mkdtemp(prefix="taylorprune-pg-"))
    if as_root:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
        text=True,
    )
    options = f"-h 127.0.0.1 -p {port} -k {folder} -c max_connections=200"
    start = [
        *prefix,
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(folder / "server.log"),
        "-o",
        options,
        "-w",
        "-t",
        str(STARTUP_DEADLINE),
        "start",
    ]
    started = subprocess.run(start, capture_output=True, text=True)
    if started.returncode != 0:
        log = (folder / "server.log").read_text() if (folder / "server.log").is_file() else ""
        raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{log[-3000:]}")
    url = f"postgresql://postgres@127.0.0.1:{port}"
    stop = [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
    _PG_CTL[url] = {"start": start, "stop": stop}
    try:
        yield url
    finally:
        _PG_CTL.pop(url, None)
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def pg_ctl(base: str, action: str) -> None:
    """``pg_ctl stop -m fast`` (every connection cut, as in a restart or failover) or ``start`` on the
    cluster of ``postgres()`` at ``base``; returns once it is done (``-w``)."""
    done = subprocess.run(_PG_CTL[base][action], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pg_ctl {action} failed: {done.stderr}")


def create_database(base: str, name: str) -> str:
    """A new, empty database on the cluster at ``base``; its URL."""
    import psycopg

    with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


@contextmanager
def mlflow_server(
    backend_uri: str, artifacts: Path, workers: int = 2, port: int | None = None, stop_signal: int = signal.SIGTERM
) -> Iterator[str]:
    """``mlflow server`` with ``backend_uri`` as its store and proxied artifacts in ``artifacts``, on ``port``
    (a free one when None: give the same one to start it again after a stop); yields its URL. It is stopped
    with ``stop_signal``: SIGKILL takes it down at once, as a crash does (SIGTERM lets it go on serving the
    connections it has open while it shuts down)."""
    port = free_port() if port is None else port
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    log = tempfile.NamedTemporaryFile(prefix="taylorprune-mlflow-server-", suffix=".log", delete=False)
    # without MLflow's job runner (GenAI evaluation jobs, which this project never submits): 7 processes fewer
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE
        while True:
            if process.poll() is not None:
                output = Path(log.name).read_text()[-3000:]
                raise RuntimeError(f"mlflow server exited ({process.returncode}):\n{output}")
            try:
                if requests.get(f"{url}/health", timeout=30).ok:
                    break
            except requests.ConnectionError:  # not listening yet
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not answer within {STARTUP_DEADLINE} s")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(process.pid, stop_signal)
        process.wait(timeout=STARTUP_DEADLINE)
        log.close()
        os.unlink(log.name)
