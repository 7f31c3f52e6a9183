"""Fixtures the tests share.

- ``postgres_cluster``: a throwaway PostgreSQL cluster for the session (the base URL; make databases
  with ``tests.support.services.create_database``). Skipped where PostgreSQL is not installed,
  failed in CI (``CI`` set), which must run it.
- ``own_postgres``: a cluster of the test's own (the same skips), for tests that stop and start it.
- ``mlflow_server_url``: an ``mlflow server`` on 127.0.0.1 with a SQLite store and proxied
  artifacts in the test's folder.
- ``small_disk``: a mounted file system of its own (tmpfs) that a test can fill: a function of its
  size in MiB that mounts it and returns the folder. Skipped where mounting is not allowed (not
  root), failed in CI, which runs as root.
"""

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.services import mlflow_server, postgres, postgres_bin


def _require_postgres() -> None:
    if postgres_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; .ci/run installs Debian's postgresql package")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[str]:
    _require_postgres()
    with postgres() as base:
        yield base


@pytest.fixture
def own_postgres() -> Iterator[str]:
    _require_postgres()
    with postgres() as base:
        yield base


@pytest.fixture
def mlflow_server_url(tmp_path: Path) -> Iterator[str]:
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts") as url:
        yield url


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    mounted: list[Path] = []

    def mount(mib: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(folder)], capture_output=True, text=True
        )
        if done.returncode != 0:
            reason = f"cannot mount a small file system here: {done.stderr.strip()}"
            pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first (those with real services, then the other slow ones): under pytest-xdist they
    then start early instead of ending the run alone."""
    items.sort(
        key=lambda item: (item.get_closest_marker("integration") is None, item.get_closest_marker("slow") is None)
    )
