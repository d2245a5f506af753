"""Agents against a real bosun server: the real `clearml-agent` daemon pulls and runs tasks
made through bosun's API (flow 3), and bosun's own agent runs a script that uses the real SDK,
which attaches to the task the agent runs (flow 4)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bosun.client import Session
from tests.compat.conftest import hyperparams, task_log, unique
from tests.support.agent_env import DaemonProcess, make_repo, wait_for, wait_for_status
from tests.support.clearml_clients import CLEARML_VERSION, ClearmlClients, cache_root
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.slow

TRAIN = """\
import six
print("trained with six", six.__version__)
"""

SLOW = """\
import time
for i in range(600):
    print("tick", i, flush=True)
    time.sleep(0.1)
"""

SDK_TRAIN = """\
from clearml import Task
task = Task.init(project_name="ignored under an agent", task_name="ignored")
params = task.connect({"lr": 0.1})
print("SDK_TASK_ID=" + task.id)
for i in range(3):
    task.get_logger().report_scalar("loss", "train", value=1.0 / (i + 1), iteration=i)
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return make_repo(tmp_path_factory.mktemp("compat-repo"), {
        "train.py": TRAIN, "slow.py": SLOW, "sdk_train.py": SDK_TRAIN})


def _enqueue(api: Session, queue: str, name: str, repo: tuple[Path, str], entry_point: str,
             requirements: str) -> str:
    path, sha = repo
    task_id = api.call("tasks.create", {"name": name, "project": _project(api), "script": {
        "repository": str(path), "version_num": sha, "entry_point": entry_point,
        "working_dir": ".", "binary": "python3",
        "requirements": {"pip": requirements}}})["id"]
    api.call("tasks.enqueue", {"task": task_id, "queue_name": queue})
    return task_id


def _project(api: Session) -> str:
    return api.call("projects.create", {"name": unique("agents")})["id"]


# --- flow 3: the real clearml-agent -----------------------------------------------------------


class ClearmlAgentDaemon:
    def __init__(self, clients: ClearmlClients, server: ServerProcess, work: Path,
                 queue: str) -> None:
        self.worker = unique("compat-worker")
        self.log_path = work / "clearml-agent.log"
        config = work / "clearml-agent.conf"
        # As `clearml-agent init` writes it, plus what a machine without `virtualenv` in its
        # base Python needs (python_binary), and caches kept out of the user's home.
        config.write_text(f"""
api {{
  api_server: "{server.url}"
  web_server: "{server.url}"
  files_server: "{server.url}/files"
  credentials {{ access_key: "compat-key", secret_key: "compat-secret" }}
}}
agent {{
  worker_id: "{self.worker}"
  python_binary: "{clients.python}"
  package_manager {{ type: pip }}
  venvs_dir: "{work}/venvs-builds"
  venvs_cache {{ path: "{work}/venvs-cache" }}
  vcs_cache {{ enabled: true, path: "{work}/vcs-cache" }}
  pip_download_cache {{ enabled: true, path: "{cache_root()}/clearml-agent-pip-cache" }}
  docker_pip_cache: "{work}/docker-pip-cache"
  docker_apt_cache: "{work}/docker-apt-cache"
}}
""")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CLEARML_", "TRAINS_", "VIRTUAL_ENV"))}
        env.update(CLEARML_CONFIG_FILE=str(config), PYTHONUNBUFFERED="1")
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(clients.agent), "daemon", "--queue", queue, "--foreground"],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def clearml_agent(clients: ClearmlClients, compat_server: ServerProcess,
                  tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[ClearmlAgentDaemon, str]]:
    queue = unique("clearml-agent")
    with Session(compat_server.url, "compat-key", "compat-secret") as api:
        api.call("queues.create", {"name": queue})
    daemon = ClearmlAgentDaemon(clients, compat_server, tmp_path_factory.mktemp("clearml-agent"),
                                queue)
    yield daemon, queue
    daemon.stop()


def test_clearml_agent_runs_a_task(api: Session, clearml_agent: tuple[ClearmlAgentDaemon, str],
                                   repo: tuple[Path, str], log_mark: int) -> None:
    daemon, queue = clearml_agent
    task_id = _enqueue(api, queue, "clearml-agent run", repo, "train.py", "six==1.16.0\n")
    task = wait_for_status(api, task_id, {"completed", "failed", "stopped"}, 180, daemon.log)
    log = task_log(api, task_id)
    assert task["status"] == "completed", log
    assert "trained with six 1.16.0" in log
    # The agent writes back what it installed.
    assert "six==1.16.0" in task["script"]["requirements"]["pip"]
    workers = api.call("workers.get_all", {})["workers"]
    assert daemon.worker in [w["id"] for w in workers]


def test_clearml_agent_aborts_a_task(api: Session, clearml_agent: tuple[ClearmlAgentDaemon, str],
                                     repo: tuple[Path, str], log_mark: int) -> None:
    daemon, queue = clearml_agent
    task_id = _enqueue(api, queue, "clearml-agent abort", repo, "slow.py", "six==1.16.0\n")
    wait_for(lambda: "tick 3" in task_log(api, task_id), 180, "the slow task to run",
             daemon.log)
    api.call("tasks.stop", {"task": task_id})
    task = wait_for_status(api, task_id, {"stopped", "completed", "failed"}, 60, daemon.log)
    assert task["status"] == "stopped", task_log(api, task_id)
    ticks = task_log(api, task_id).count("tick ")
    time.sleep(2)
    assert task_log(api, task_id).count("tick ") == ticks  # the run is gone


# --- flow 4: bosun's agent runs a script that uses the SDK -----------------------------------


def test_bosun_agent_runs_sdk_script(api: Session, bosun_agent: tuple[DaemonProcess, str],
                                     repo: tuple[Path, str], log_mark: int) -> None:
    daemon, queue = bosun_agent
    task_id = _enqueue(api, queue, "sdk under bosun", repo, "sdk_train.py",
                       f"clearml=={CLEARML_VERSION}\n")
    task = wait_for_status(api, task_id, {"completed", "failed", "stopped"}, 240, daemon.log)
    log = task_log(api, task_id)
    assert task["status"] == "completed", log
    # The SDK attached to the agent's task: same id, no second task anywhere.
    assert f"SDK_TASK_ID={task_id}" in log
    in_project = api.call("tasks.get_all", {"project": [task["project"]]})["tasks"]
    assert [t["id"] for t in in_project] == [task_id]
    assert not api.call("tasks.get_all", {"name": "^ignored$"})["tasks"]
    series = api.call("events.scalar_metrics_iter_histogram", {"task": task_id})
    assert series["loss"]["train"]["x"] == [0, 1, 2]
    assert hyperparams(api, task_id) == {"General/lr": "0.1"}
