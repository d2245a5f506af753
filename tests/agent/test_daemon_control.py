"""Daemon control as a user runs it: --detached, --stop, two daemons with distinct worker ids,
`agent execute`, `agent list`, and clear errors."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from bosun.agent.console_journal import ConsoleJournal
from bosun.client import Session
from tests.support.agent_env import (
    DaemonProcess,
    agent_env,
    make_repo,
    task_log,
    wait_for,
    write_config,
)
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.slow


def _bosun(config: Path, work: Path, *args: str, timeout: float = 120
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bosun", "agent", "--config-file", str(config),
                           *args], capture_output=True, text=True, timeout=timeout,
                          env=agent_env(work))


def _workers(server: ServerProcess) -> list[str]:
    with Session(server.url, "k", "s") as api:
        return [w["id"] for w in api.call("workers.get_all")["workers"]]


def test_two_daemons_get_distinct_worker_ids(work: Path, config: Path,
                                             agent_server: ServerProcess) -> None:
    queue = f"q-{uuid.uuid4().hex[:6]}"
    first = DaemonProcess(config, work, "--queue", queue, "--create-queue").start()
    second = DaemonProcess(config, work, "--queue", queue, "--create-queue").start()
    try:
        ids = wait_for(lambda: len(_workers(agent_server)) >= 2 and _workers(agent_server), 30,
                       "two registered workers", lambda: first.log() + second.log())
        assert len(set(ids)) == 2
    finally:
        assert first.stop() == 0
        assert second.stop() == 0
    assert wait_for(lambda: not _workers(agent_server), 10, "workers to unregister") is True


def test_an_idle_daemon_stops_at_once_and_a_later_task_is_not_lost(
        work: Path, config: Path, agent_server: ServerProcess) -> None:
    """SIGTERM while the daemon long-polls: it exits without waiting out the poll, and a task
    enqueued right after goes to the next worker instead of vanishing with the old one."""
    queue = f"q-{uuid.uuid4().hex[:6]}"
    daemon = DaemonProcess(config, work, "--queue", queue, "--create-queue").start()
    wait_for(lambda: _workers(agent_server), 30, "the worker", daemon.log)
    time.sleep(1.0)  # well inside a long poll now
    started = time.perf_counter()
    assert daemon.stop() == 0
    assert time.perf_counter() - started < 2.0, daemon.log()
    with Session(agent_server.url, "k", "s") as api:
        queue_id = api.call("queues.get_all", {"name": f"^{queue}$"})["queues"][0]["id"]
        task_id = api.call("tasks.create", {"name": "after-stop"})["id"]
        api.call("tasks.enqueue", {"task": task_id, "queue": queue_id})
        taken = api.call("queues.get_next_task", {"queue": queue_id, "wait_sec": 5})
    assert taken["entry"]["task"] == task_id


def test_detached_then_stop(work: Path, config: Path, agent_server: ServerProcess) -> None:
    queue = f"q-{uuid.uuid4().hex[:6]}"
    started = _bosun(config, work, "daemon", "--queue", queue, "--create-queue", "--detached")
    assert started.returncode == 0, started.stderr
    assert "running in the background" in started.stdout
    worker = wait_for(lambda: _workers(agent_server), 30, "the detached worker")[0]
    assert worker in started.stdout
    listed = _bosun(config, work, "list")
    assert listed.returncode == 0 and worker in listed.stdout and queue in listed.stdout
    stopped = _bosun(config, work, "daemon", "--stop")
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped worker {worker}" in stopped.stdout
    assert not _workers(agent_server)
    assert "no bosun agent daemon is running" in _bosun(config, work, "daemon", "--stop").stdout


def test_execute_runs_one_task_and_exit_code_mirrors_it(
    work: Path, config: Path, agent_server: ServerProcess
) -> None:
    repo, sha = make_repo(work / f"r-{uuid.uuid4().hex[:6]}", {
        "ok.py": "print('executed fine')\n", "bad.py": "raise SystemExit(3)\n"})
    with Session(agent_server.url, "k", "s") as api:
        ok = api.call("tasks.create", {"name": "exec-ok", "script": {
            "repository": str(repo), "version_num": sha, "entry_point": "ok.py"}})["id"]
        bad = api.call("tasks.create", {"name": "exec-bad", "script": {
            "repository": str(repo), "version_num": sha, "entry_point": "bad.py"}})["id"]
        result = _bosun(config, work, "execute", "--id", ok)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "executed fine" in result.stdout
        assert api.call("tasks.get_by_id", {"task": ok})["task"]["status"] == "completed"
        assert "executed fine" in task_log(api, ok)
        failed = _bosun(config, work, "execute", "--id", bad)
        assert failed.returncode == 1
        task = api.call("tasks.get_by_id", {"task": bad})["task"]
        assert task["status"] == "failed"
        assert task["status_message"] == "worker execution exit code 3"
        cloned = _bosun(config, work, "execute", "--id", ok, "--clone")
        assert cloned.returncode == 0 and "running clone" in cloned.stdout
        required = _bosun(config, work, "execute", "--id", ok, "--require-queue")
        assert required.returncode == 1 and "not queued" in required.stderr


def test_user_mistakes_are_one_line(work: Path, config: Path, tmp_path: Path) -> None:
    missing_queue = _bosun(config, work, "daemon", "--queue", "no-such-queue-xyz")
    assert missing_queue.returncode == 1
    assert "queue 'no-such-queue-xyz' does not exist" in missing_queue.stderr
    assert "Traceback" not in missing_queue.stderr
    bad_gpus = _bosun(config, work, "daemon", "--queue", "default", "--gpus", "a-b")
    assert bad_gpus.returncode == 1 and "invalid GPU" in bad_gpus.stderr
    unreachable = write_config(tmp_path / "c.conf", "http://127.0.0.1:9", work)
    down = _bosun(unreachable, work, "daemon", "--queue", "default")
    assert down.returncode == 1 and "cannot reach the API server at http://127.0.0.1:9" in \
        down.stderr
    unknown_task = _bosun(config, work, "execute", "--id", "0" * 32)
    assert unknown_task.returncode == 1 and "invalid task id" in unknown_task.stderr


def test_execute_first_sends_what_a_dead_agent_owed(
        work: Path, config: Path, agent_server: ServerProcess,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOSUN_AGENT_STATE_DIR", agent_env(work)["BOSUN_AGENT_STATE_DIR"])
    stream = uuid.uuid4().hex
    with Session(agent_server.url, "k", "s") as api:
        owed = api.call("tasks.create", {"name": "owed-lines"})["id"]
        journal = ConsoleJournal(owed, "gone-worker", stream)
        journal.append([{"type": "log", "task": owed, "msg": f"owed {n}", "level": "info",
                         "stream": stream, "seq": n + 1} for n in range(3)])
        journal.close()  # its agent is gone
        ok = api.call("tasks.create", {"name": "exec-after-debt", "script": {
            "diff": "print('ran')\n", "entry_point": "t.py", "binary": "python3"}})["id"]
        result = _bosun(config, work, "execute", "--id", ok)
        assert result.returncode == 0, result.stdout + result.stderr
        assert task_log(api, owed) == ["owed 0", "owed 1", "owed 2"]
        assert "sent what a previous agent owed the server" in result.stderr
    assert not journal.path.exists()
