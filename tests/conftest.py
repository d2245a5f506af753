"""Shared fixtures: real server processes over SQLite and over a real PostgreSQL cluster."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bosun.client import Session
from tests.support.postgres_cluster import PostgresCluster
from tests.support.server_process import ServerProcess

BACKENDS = ["sqlite", "postgresql"]
_db_numbers = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    try:
        cluster = PostgresCluster().start()
    except RuntimeError as exc:
        if os.environ.get("CI"):
            raise  # CI installs PostgreSQL through scripts/setup: its absence is a failure
        pytest.skip(f"PostgreSQL is not available here: {exc}")
    yield cluster
    cluster.stop()


DbFactory = Callable[[], str]


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def new_db(backend: str, tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> DbFactory:
    """Makes a fresh, empty database of the current backend and returns its URL."""

    def make() -> str:
        number = next(_db_numbers)
        if backend == "sqlite":
            return str(Path(tmp_path_factory.mktemp("db")) / f"bosun{number}.db")
        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        return cluster.create_database(f"bosun_test_{number}")

    return make


@pytest.fixture(scope="session")
def server(new_db: DbFactory) -> Iterator[ServerProcess]:
    """One server per backend for the whole session; tests use unique names to stay apart."""
    with ServerProcess(new_db()) as proc:
        yield proc


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Session]:
    with Session(server.url, "key", "secret") as session:
        yield session
