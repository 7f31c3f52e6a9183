"""Fixtures the tests share.

- ``postgres_cluster``: a throwaway PostgreSQL cluster for the session (the base URL; make databases
  with ``tests.support.services.create_database``). Skipped where PostgreSQL is not installed,
  failed in CI (``CI`` set), which must run it.
- ``own_postgres``: a cluster of the test's own (the same skips), for tests that stop and start it.
- ``mlflow_server_url``: an ``mlflow server`` on 127.0.0.1 with a SQLite store and proxied
  artifacts in the test's folder.
"""

import os
from collections.abc import Iterator
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first: under pytest-xdist the long ones then start early instead of ending the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
