"""What the agent's end-to-end modules share: per module, a work folder, a real server on its
own SQLite file, and a clearml.conf pointing the agent at it (a module may extend it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent_env import write_config
from tests.support.server_process import ServerProcess


@pytest.fixture(scope="module")
def work(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def agent_server(work: Path) -> Iterator[ServerProcess]:
    with ServerProcess(str(work / "server.db")) as server:
        yield server


@pytest.fixture(scope="module")
def config(work: Path, agent_server: ServerProcess) -> Path:
    return write_config(work / "clearml.conf", agent_server.url, work)
