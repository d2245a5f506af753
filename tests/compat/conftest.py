"""Fixtures for running the real ClearML clients against a real `bosun server`.

The server logs every call (`--log-level debug`); `ServerLog` reads that log so that a test can
check which calls the clients made and that every call bosun did not answer with 200 is one
the clients are known to tolerate (listed in docs/compatibility.md).
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bosun.client import Session
from tests.support.agent_env import DaemonProcess
from tests.support.clearml_clients import ClearmlClients, cache_root, clearml_clients
from tests.support.server_process import ServerProcess

SDK_TIMEOUT_S = 120
# Calls the clients make that bosun answers with an error, on purpose, as ClearML Server does;
# the clients catch these and go on. Any other non-200 answer fails a compat test.
TOLERATED = {
    # Task.enqueue(queue_name=...) first tries the name as an id, then looks it up by name.
    ("queues.get_by_id", 400),
    # `clearml-agent execute` dequeues the task its daemon has already started.
    ("tasks.dequeue", 400),
    # Task.delete() deletes the task's models after tasks.delete took its output model with it;
    # the SDK expects 400/201 (model not found) for that one.
    ("models.delete", 400),
}
_CALL = re.compile(r" DEBUG bosun\.server: (?:GET|POST) (\S+) (\d{3}) ")


@dataclass
class ServerLog:
    path: Path

    def mark(self) -> int:
        return self.path.stat().st_size

    def calls(self, since: int = 0) -> list[tuple[str, int]]:
        with self.path.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        return [(m.group(1), int(m.group(2))) for m in _CALL.finditer(text)]

    def untolerated(self, since: int = 0) -> list[tuple[str, int]]:
        return [c for c in self.calls(since) if c[1] != 200 and c not in TOLERATED]


@pytest.fixture(scope="session")
def clients() -> ClearmlClients:
    return clearml_clients()


@pytest.fixture(scope="session")
def compat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("compat-db") / "bosun.db"
    with ServerProcess(str(db), extra_args=["--log-level", "debug"]) as server:
        yield server


@pytest.fixture(scope="session")
def server_log(compat_server: ServerProcess) -> ServerLog:
    return ServerLog(compat_server.log_path)


@pytest.fixture
def api(compat_server: ServerProcess) -> Iterator[Session]:
    with Session(compat_server.url, "compat-key", "compat-secret") as session:
        yield session


@pytest.fixture
def log_mark(server_log: ServerLog) -> Iterator[int]:
    """Every compat test ends with no call answered in a way the clients do not expect."""
    mark = server_log.mark()
    yield mark
    assert server_log.untolerated(mark) == [], "bosun answered client calls with errors"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sdk_env(server: ServerProcess, workdir: Path) -> dict[str, str]:
    """What a user sets to point the SDK at a server, without a clearml.conf of theirs."""
    empty_conf = workdir / "empty-clearml.conf"
    empty_conf.touch()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLEARML_", "TRAINS_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update({
        "CLEARML_CONFIG_FILE": str(empty_conf),
        "CLEARML_API_HOST": server.url, "CLEARML_WEB_HOST": server.url,
        "CLEARML_FILES_HOST": f"{server.url}/files",
        "CLEARML_API_ACCESS_KEY": "compat-key", "CLEARML_API_SECRET_KEY": "compat-secret",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def run_sdk(clients: ClearmlClients, server: ServerProcess, workdir: Path, name: str,
            code: str, timeout: float = SDK_TIMEOUT_S) -> str:
    """Runs `code` as a script with the real SDK; returns its output, fails on an error."""
    script = workdir / name
    script.write_text(code)
    done = subprocess.run([str(clients.python), str(script)], cwd=workdir,
                          env=sdk_env(server, workdir), capture_output=True, text=True,
                          timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{name} exited with {done.returncode}:\n{output}\n" \
                                 f"server log:\n{server.log()}"
    return output


def marker(output: str, name: str) -> str:
    """The value a script printed as `NAME=value`."""
    found = re.search(rf"^{name}=(.*)$", output, re.M)
    assert found, f"{name}= not in the output:\n{output}"
    return found.group(1).strip()


def task_log(api: Session, task_id: str) -> str:
    events = api.call("events.get_task_log", {"task": task_id, "navigate_earlier": False,
                                              "batch_size": 10000})["events"]
    return "\n".join(e["msg"] for e in events)


def hyperparams(api: Session, task_id: str) -> dict[str, Any]:
    params = api.call("tasks.get_hyper_params", {"tasks": [task_id]})["params"][0]
    return {f"{p['section']}/{p['name']}": p["value"] for p in params["hyperparams"]}


@pytest.fixture(scope="module")
def bosun_agent(compat_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[DaemonProcess, str]]:
    work = tmp_path_factory.mktemp("bosun-agent")
    queue = unique("bosun-agent")
    config = work / "clearml.conf"
    # The uv cache outlives the run, so the SDK's wheels are downloaded once.
    config.write_text(f"""
api {{
  api_server: "{compat_server.url}"
  credentials {{ access_key: "compat-key", secret_key: "compat-secret" }}
}}
agent {{
  venvs_dir: "{work}/venvs-builds"
  venvs_cache {{ path: "{work}/venvs-cache", free_space_threshold_gb: 0 }}
  vcs_cache {{ enabled: true, path: "{work}/vcs-cache" }}
  pip_download_cache {{ enabled: true, path: "{cache_root()}/uv-cache" }}
}}
""")
    daemon = DaemonProcess(config, work, "--queue", queue, "--create-queue")
    daemon.env = {k: v for k, v in daemon.env.items() if not k.startswith("CLEARML_")}
    daemon.start()
    yield daemon, queue
    assert daemon.stop() == 0, daemon.log()
