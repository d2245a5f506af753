"""`bosun queue list|create|delete|tags` and `bosun worker list` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from bosun.client import Session
from tests.support.server_process import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(str(tmp_path_factory.mktemp("queue-cli") / "server.db")) as proc:
        yield proc


@pytest.fixture(scope="module")
def env(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BOSUN_", "CLEARML_"))}
    return {**base, "HOME": str(tmp_path_factory.mktemp("home")),
            "CLEARML_API_HOST": server.url}


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Session]:
    with Session(server.url, "key", "secret") as session:
        yield session


def bosun_all(env: dict[str, str], *commands: Sequence[str], cwd: Path | None = None
              ) -> list[subprocess.CompletedProcess[str]]:
    procs = [subprocess.Popen([sys.executable, "-m", "bosun", *c], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
             for c in commands]
    results = []
    for command, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return results


def _error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message and needle in message, message


def test_create_list_tags(env: dict[str, str], api: Session) -> None:
    name = f"q-{uuid.uuid4().hex[:6]}"
    [created] = bosun_all(env, ["queue", "create", name, "--tags", "gpu", "old"])
    assert created.returncode == 0, created.stderr
    queue_id = created.stdout.strip()
    worker = f"w-{uuid.uuid4().hex[:6]}"
    api.call("workers.register", {"worker": worker, "queues": [name]})
    duplicate, table, listed, tagged, workers, workers_json = bosun_all(
        env, ["queue", "create", name], ["queue", "list"], ["queue", "list", "--json"],
        ["queue", "tags", name, "--add", "a100", "--remove", "old"], ["worker", "list"],
        ["worker", "list", "--json"])
    _error(duplicate, f"a queue named '{name}' already exists")
    row = next(line for line in table.stdout.splitlines() if line.startswith(name))
    assert queue_id in row and worker in row and "gpu" in row
    assert "NAME" in table.stdout and "default" in table.stdout
    mine = next(q for q in json.loads(listed.stdout) if q["name"] == name)
    assert mine["id"] == queue_id and mine["workers"] == [worker] and mine["tasks"] == []
    assert tagged.returncode == 0 and tagged.stdout.split() == ["gpu", "a100"], tagged.stderr
    assert api.call("queues.get_by_id", {"queue": queue_id})["queue"]["tags"] == ["gpu", "a100"]
    row = next(line for line in workers.stdout.splitlines() if line.startswith(worker))
    assert name in row
    assert {"id": worker, "queues": [name]}.items() <= next(
        w for w in json.loads(workers_json.stdout) if w["id"] == worker).items()
    api.call("workers.unregister", {"worker": worker})


def test_delete(env: dict[str, str], api: Session) -> None:
    empty, busy = f"q-{uuid.uuid4().hex[:6]}", f"q-{uuid.uuid4().hex[:6]}"
    empty_id = api.call("queues.create", {"name": empty})["id"]
    api.call("queues.create", {"name": busy})
    task = api.call("tasks.create", {"name": "waiting"})["id"]
    api.call("tasks.enqueue", {"task": task, "queue_name": busy})
    by_id, refused, unknown = bosun_all(
        env, ["queue", "delete", empty_id], ["queue", "delete", busy],
        ["queue", "delete", "no-such-queue"])
    assert by_id.returncode == 0 and f"deleted queue {empty}" in by_id.stdout, by_id.stderr
    _error(refused, "--force")
    _error(unknown, "queue 'no-such-queue' does not exist")
    [forced] = bosun_all(env, ["queue", "delete", busy, "--force", "--json"])
    assert forced.returncode == 0 and json.loads(forced.stdout)["deleted"] is True
    assert api.call("tasks.get_by_id", {"task": task})["task"]["status"] == "created"
    names = [q["name"] for q in api.call("queues.get_all")["queues"]]
    assert empty not in names and busy not in names
