"""`bosun agent daemon --stop` tells the truth: it waits for the daemons to be gone (they finish
their running task first), says what they are doing meanwhile, exits 1 naming a daemon still
running at --timeout, and with --abort makes them abort their tasks. Real server, real daemons."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bosun.client import Session
from tests.support.agent_env import (
    DaemonProcess,
    agent_env,
    task_log,
    wait_for,
    wait_for_status,
)
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.slow

SLEEPER = "import time\nprint('sleeping', flush=True)\ntime.sleep({seconds})\n" \
    "print('woke up', flush=True)\n"


@pytest.fixture
def api(agent_server: ServerProcess) -> Iterator[Session]:
    with Session(agent_server.url, "k", "s") as session:
        yield session


def _bosun(config: Path, work: Path, *args: str, state: Path | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = agent_env(work)
    if state is not None:
        env["BOSUN_AGENT_STATE_DIR"] = str(state)
    return subprocess.run([sys.executable, "-m", "bosun", "agent", "--config-file", str(config),
                           *args], capture_output=True, text=True, timeout=timeout, env=env)


def _enqueue(api: Session, queue: str, body: str) -> str:
    task_id = api.call("tasks.create", {
        "name": "sleeper", "script": {"diff": body, "entry_point": "t.py"}})["id"]
    api.call("tasks.enqueue", {"task": task_id, "queue_name": queue})
    return str(task_id)


def _running(api: Session, work: Path, daemon: DaemonProcess, task_id: str) -> str:
    """The daemon's worker id, once its lock file says it runs `task_id` and the task printed."""
    assert daemon.proc is not None

    def worker() -> str | None:
        for path in (work / "state" / "agents").glob("*.lock"):
            try:
                info = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                continue
            if info.get("pid") == daemon.proc.pid and \
                    task_id in [t["task"] for t in info.get("running") or []]:
                return str(info["worker_id"])
        return None

    found = wait_for(worker, 120, f"the daemon to run task {task_id}", daemon.log)
    wait_for(lambda: "sleeping" in task_log(api, task_id), 120, "the task to start sleeping",
             daemon.log)
    return str(found)


def test_stop_waits_for_the_running_task_and_says_what_it_waits_for(
        work: Path, config: Path, api: Session) -> None:
    queue = f"q-{uuid.uuid4().hex[:6]}"
    daemon = DaemonProcess(config, work, "--queue", queue, "--create-queue").start()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    try:
        task_id = _enqueue(api, queue, SLEEPER.format(seconds=8))
        worker = _running(api, work, daemon, task_id)

        short = _bosun(config, work, "daemon", "--stop", worker, "--timeout", "2")
        assert short.returncode == 1, short.stdout + short.stderr
        assert f"worker {worker} (pid {pid}) is still running (finishing task {task_id})" in \
            short.stderr
        assert f"run `bosun agent daemon --stop {worker}` again to wait more" in short.stderr
        assert "stopped worker" not in short.stdout
        assert "Traceback" not in short.stderr
        assert daemon.proc.poll() is None, daemon.log()
        assert api.call("tasks.get_by_id", {"task": task_id})["task"]["status"] == "in_progress"

        full = _bosun(config, work, "daemon", "--stop", worker)
        assert full.returncode == 0, full.stdout + full.stderr
        # signalled once only: a second SIGTERM would have aborted the task
        assert f"worker {worker} (pid {pid}) got SIGTERM" in full.stdout
        assert "not signalling it again" in full.stdout
        assert f"waiting for worker {worker} (pid {pid}): finishing task {task_id}, " in \
            full.stdout
        assert full.stdout.rstrip().endswith(f"stopped worker {worker} (pid {pid})")
        assert daemon.proc.wait(10) == 0
        task = api.call("tasks.get_by_id", {"task": task_id})["task"]
        assert task["status"] == "completed", daemon.log()
        assert "woke up" in task_log(api, task_id)
        assert not list((work / "state" / "agents").glob("stopping-*.json"))
    finally:
        daemon.stop()


def test_stop_abort_aborts_the_running_task(work: Path, config: Path, api: Session) -> None:
    queue = f"q-{uuid.uuid4().hex[:6]}"
    daemon = DaemonProcess(config, work, "--queue", queue, "--create-queue").start()
    assert daemon.proc is not None
    try:
        task_id = _enqueue(api, queue, SLEEPER.format(seconds=300))
        worker = _running(api, work, daemon, task_id)
        started = time.monotonic()
        result = _bosun(config, work, "daemon", "--stop", worker, "--abort")
        assert result.returncode == 0, result.stdout + result.stderr
        assert time.monotonic() - started < 60
        assert f"aborting task {task_id}" in result.stdout
        assert f"stopped worker {worker} (pid {daemon.proc.pid})" in result.stdout
        assert daemon.proc.wait(10) == 0
        assert wait_for_status(api, task_id, {"stopped", "completed", "failed"}, 10,
                               daemon.log)["status"] == "stopped"
    finally:
        daemon.stop()


def test_stop_with_nothing_running_and_user_mistakes(work: Path, config: Path,
                                                     tmp_path: Path) -> None:
    nothing = _bosun(config, work, "daemon", "--stop", state=tmp_path)
    assert nothing.returncode == 0
    assert "no bosun agent daemon is running on this machine" in nothing.stdout
    unknown = _bosun(config, work, "daemon", "--stop", "nobody:cpu", state=tmp_path)
    assert unknown.returncode == 1
    assert "no running daemon with worker id nobody:cpu" in unknown.stderr
    for bad in ("-1", "soon", "nan"):
        wrong = _bosun(config, work, "daemon", "--stop", "--timeout", bad, state=tmp_path)
        assert wrong.returncode == 2
        assert "argument --timeout: expected a number of seconds >= 0" in wrong.stderr
        assert "Traceback" not in wrong.stderr
    alone = _bosun(config, work, "daemon", "--queue", "x", "--abort", state=tmp_path)
    assert alone.returncode == 1 and "--timeout and --abort go with --stop" in alone.stderr
