"""The agent end to end: a real daemon process pulls tasks from a real server, checks out a real
git repository, applies the uncommitted diff, builds a real venv with a package from PyPI, runs
the entry point, streams the log, and reports the outcome."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from bosun.client import Session
from tests.support.agent_env import (
    DaemonProcess,
    git,
    make_repo,
    task_log,
    wait_for,
    wait_for_status,
)
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.slow

TRAIN = """\
import sys
import six
print("six", six.__version__)
print("message:", open("message.txt").read().strip())
"""

SLOW = """\
import subprocess, sys, time
child = subprocess.Popen(["sleep", "300"])
print("child", child.pid, flush=True)
for i in range(600):
    print("tick", i, flush=True)
    time.sleep(0.1)
"""


@pytest.fixture(scope="module")
def repo(work: Path) -> tuple[Path, str, str]:
    """(repo, commit, diff): the diff changes message.txt and adds slow.py."""
    path, sha = make_repo(work, {"train.py": TRAIN, "message.txt": "committed\n",
                                 "sub/inner.py": "print('inner ok')\n"})
    (path / "message.txt").write_text("from the uncommitted diff\n")
    (path / "slow.py").write_text(SLOW)
    git(path, "add", "-N", "slow.py")
    diff = git(path, "diff") + "\n"
    git(path, "checkout", "--", "message.txt")
    git(path, "rm", "-q", "--cached", "slow.py")
    (path / "slow.py").unlink()
    return path, sha, diff


@pytest.fixture(scope="module")
def daemon(work: Path, config: Path) -> Iterator[tuple[DaemonProcess, str]]:
    queue = f"agent-{uuid.uuid4().hex[:8]}"
    proc = DaemonProcess(config, work, "--queue", queue, "--create-queue").start()
    yield proc, queue
    assert proc.stop() == 0, proc.log()


@pytest.fixture
def api(agent_server: ServerProcess) -> Iterator[Session]:
    with Session(agent_server.url, "k", "s") as session:
        yield session


def _enqueue(api: Session, queue: str, name: str, script: dict[str, Any]) -> str:
    task_id = api.call("tasks.create", {"name": name, "script": script})["id"]
    api.call("tasks.enqueue", {"task": task_id, "queue_name": queue})
    return task_id


def _script(repo: tuple[Path, str, str], **overrides: Any) -> dict[str, Any]:
    path, sha, diff = repo
    script = {"repository": str(path), "version_num": sha, "diff": diff,
              "entry_point": "train.py", "working_dir": ".",
              "requirements": {"pip": "six==1.16.0\n"}}
    script.update(overrides)
    return script


def test_repo_with_diff_and_requirement_completes(
    api: Session, daemon: tuple[DaemonProcess, str], repo: tuple[Path, str, str]
) -> None:
    proc, queue = daemon
    task_id = _enqueue(api, queue, "train", _script(repo))
    task = wait_for_status(api, task_id, {"completed", "failed"}, 240, proc.log)
    lines = task_log(api, task_id)
    assert task["status"] == "completed", "\n".join(lines)
    assert "six 1.16.0" in lines
    assert "message: from the uncommitted diff" in lines
    # As clearml-agent does: the exact installed packages are recorded, the original kept.
    recorded = api.call("tasks.get_by_id", {"task": task_id})["task"]["script"]["requirements"]
    assert recorded == {"org_pip": "six==1.16.0\n", "pip": ["six==1.16.0"]}
    # The second task with the same requirements gets its environment from the cache.
    again = _enqueue(api, queue, "train-again", _script(repo))
    started = time.monotonic()
    assert wait_for_status(api, again, {"completed", "failed"}, 60, proc.log)["status"] == \
        "completed"
    warm_lines = task_log(api, again)
    assert any("cache hit" in line for line in warm_lines), warm_lines
    assert not any("installing" in line.lower() for line in warm_lines), warm_lines
    assert time.monotonic() - started < 30
    # A rerun installs the recorded list (here the same single pin: a cache hit) and keeps
    # the first record.
    api.call("tasks.reset", {"task": task_id, "force": True})
    api.call("tasks.enqueue", {"task": task_id, "queue_name": queue})
    assert wait_for_status(api, task_id, {"completed", "failed"}, 60, proc.log)["status"] == \
        "completed"
    assert any("cache hit" in line for line in task_log(api, task_id))
    again_recorded = api.call("tasks.get_by_id", {"task": task_id})["task"]["script"]
    assert again_recorded["requirements"] == recorded


@pytest.mark.parametrize(
    ("overrides", "reason_words"),
    [
        ({"repository": "/nonexistent/repo/path"}, "repo"),
        ({"diff": "diff --git a/message.txt b/message.txt\n--- a/message.txt\n+++ b/message.txt\n"
                  "@@ -1 +1 @@\n-no such line\n+x\n"}, "diff"),
        ({"requirements": {"pip": "nosuchpkg-bosun-test==9\n"}}, "nosuchpkg-bosun-test"),
        ({"entry_point": "missing.py"}, "missing.py"),
    ],
    ids=["bad-repo", "bad-diff", "bad-requirement", "missing-entry-point"],
)
def test_failures_fail_the_task_and_the_daemon_goes_on(
    api: Session, daemon: tuple[DaemonProcess, str], repo: tuple[Path, str, str],
    overrides: dict[str, Any], reason_words: str,
) -> None:
    proc, queue = daemon
    bad = _enqueue(api, queue, "bad", _script(repo, **overrides))
    good = _enqueue(api, queue, "good", _script(repo, entry_point="sub/inner.py"))
    task = wait_for_status(api, bad, {"completed", "failed"}, 120, proc.log)
    assert task["status"] == "failed"
    reason = task["status_message"]
    assert "\n" not in reason and reason_words in reason, reason
    assert wait_for_status(api, good, {"completed", "failed"}, 120, proc.log)["status"] == \
        "completed"
    assert "inner ok" in task_log(api, good)
    assert proc.proc is not None and proc.proc.poll() is None


def test_abort_kills_the_whole_process_tree(
    api: Session, daemon: tuple[DaemonProcess, str], repo: tuple[Path, str, str]
) -> None:
    proc, queue = daemon
    task_id = _enqueue(api, queue, "slow", _script(repo, entry_point="slow.py"))

    def child_pid() -> int | None:
        for line in task_log(api, task_id):
            if line.startswith("child "):
                return int(line.split()[1])
        return None

    pid = wait_for(child_pid, 120, "the slow task's child process", proc.log)
    assert psutil.pid_exists(pid)
    aborted = time.monotonic()
    api.call("tasks.stop", {"task": task_id})
    task = wait_for_status(api, task_id, {"stopped"}, 10, proc.log)
    assert time.monotonic() - aborted < 2.5
    assert task["status"] == "stopped"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
