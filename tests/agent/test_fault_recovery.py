"""Faults injected into real processes, and what survived: agents `kill -9`'d while 30 tasks
drain (none lost, none run twice at the same time), the server `kill -9`'d across a task's end
(every console line stored exactly once, the right final status), and an agent stopped or
`kill -9`'d while the server is away (what it owed is sent by the next agent)."""

from __future__ import annotations

import random
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bosun.client import Session
from tests.support.agent_env import DaemonProcess, task_log, wait_for, write_config
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.slow

WORKER_TIMEOUT = "4"  # seconds: the agents report 4x per timeout

# A task that notices when a second copy of itself runs at the same time.
GUARDED = """\
import fcntl, os, sys, time
task = os.environ["CLEARML_TASK_ID"]
lock = open(os.path.join({locks!r}, task), "a")
try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    with open(os.path.join({locks!r}, "DOUBLE"), "a") as out:
        out.write(task + "\\n")
    sys.exit(3)
for i in range(15):
    print("step", i, flush=True)
    time.sleep(0.1)
"""

CHATTY = """\
import time
for i in range(200):
    print("line", i, flush=True)
    time.sleep({pause})
"""


def _script_task(api: Session, queue: str, body: str, name: str) -> str:
    task_id = api.call("tasks.create", {"name": name, "script": {
        "diff": body, "entry_point": "task.py", "binary": "python3"}})["id"]
    api.call("tasks.enqueue", {"task": task_id, "queue": queue})
    return task_id


def _statuses(api: Session, ids: list[str]) -> dict[str, dict[str, Any]]:
    tasks = api.call("tasks.get_all", {"id": ids, "only_fields": [
        "id", "status", "status_reason"]})["tasks"]
    return {t["id"]: t for t in tasks}


@pytest.fixture
def fault_server(work: Path) -> Iterator[ServerProcess]:
    db = work / f"faults-{uuid.uuid4().hex[:6]}.db"
    with ServerProcess(str(db), extra_args=["--worker-timeout", WORKER_TIMEOUT,
                                            "--lost-task-retries", "3"]) as server:
        yield server


def _daemon(config: Path, work: Path, queue_name: str, state: Path,
            *extra: str) -> DaemonProcess:
    """A started daemon on `queue_name` with its own state dir (one machine's agents)."""
    proc = DaemonProcess(config, work, "--queue", queue_name, *extra)
    proc.env["BOSUN_AGENT_STATE_DIR"] = str(state)
    return proc.start()


def _completed(api: Session, task_id: str, what: str,
               on_timeout: Callable[[], str]) -> dict[str, Any]:
    """The task once it is `completed` (waits up to 60 s)."""
    return wait_for(lambda: (t := api.call("tasks.get_by_id", {"task": task_id})["task"])[
        "status"] == "completed" and t, 60, what, on_timeout)


def _restart_on_same_port(old: ServerProcess) -> ServerProcess:
    new = ServerProcess(old.db, extra_args=["--worker-timeout", WORKER_TIMEOUT])
    new.port, new.url = old.port, old.url
    new.args[new.args.index("--port") + 1] = str(old.port)
    return new


def test_agents_killed_while_30_tasks_drain_lose_nothing(work: Path,
                                                         fault_server: ServerProcess) -> None:
    locks = work / f"locks-{uuid.uuid4().hex[:6]}"
    locks.mkdir()
    config = write_config(work / "faults.conf", fault_server.url, work)
    queue_name = f"faults-{uuid.uuid4().hex[:6]}"
    # One machine: the daemons share a state dir, and so get distinct worker ids; a daemon
    # started after a kill takes the id that was freed.
    state = work / f"agents-{uuid.uuid4().hex[:4]}"

    def daemon(number: int) -> DaemonProcess:
        return _daemon(config, work, queue_name, state, "--create-queue")

    daemons = [daemon(n) for n in range(3)]
    rng = random.Random(12)
    kills = 0
    try:
        with Session(fault_server.url, "k", "s") as api:
            wait_for(lambda: len(api.call("workers.get_all")["workers"]) >= 3, 60,
                     "three workers", lambda: "\n".join(d.log()[-2000:] for d in daemons))
            queue = api.call("queues.get_all", {"name": f"^{queue_name}$"})["queues"][0]["id"]
            body = GUARDED.format(locks=str(locks))
            ids = [_script_task(api, queue, body, f"guarded-{n}") for n in range(30)]
            while kills < 6:
                time.sleep(rng.uniform(1.5, 3.0))
                victim = rng.randrange(3)
                proc = daemons[victim].proc
                assert proc is not None
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                if kills < 6:  # the last one stays dead: its task waits out the timeout
                    daemons[victim] = daemon(victim)

            def settled() -> bool:
                found = _statuses(api, ids)
                return all(t["status"] in ("completed", "failed") for t in found.values())

            wait_for(settled, 240, "every task to end",
                     lambda: f"{_statuses(api, ids)}\n" + "\n".join(d.log()[-3000:]
                                                                     for d in daemons))
            final = _statuses(api, ids)
    finally:
        for proc in daemons:
            proc.stop()
    assert not (locks / "DOUBLE").exists(), (locks / "DOUBLE").read_text()
    failed = {i: t["status_reason"] for i, t in final.items() if t["status"] != "completed"}
    for reason in failed.values():  # only past the retry budget, and saying so
        assert "lost" in reason and "no retries left" in reason, failed
    assert len(final) == 30
    assert len(failed) <= 2, failed


def test_a_server_outage_across_a_tasks_end_loses_no_line(work: Path,
                                                          fault_server: ServerProcess) -> None:
    config = write_config(work / "outage.conf", fault_server.url, work)
    queue_name = f"outage-{uuid.uuid4().hex[:6]}"
    agent = DaemonProcess(config, work, "--queue", queue_name, "--create-queue").start()
    restarted: ServerProcess | None = None
    try:
        with Session(fault_server.url, "k", "s") as api:
            wait_for(lambda: api.call("workers.get_all")["workers"], 60, "the worker",
                     agent.log)
            queue = api.call("queues.get_all", {"name": f"^{queue_name}$"})["queues"][0]["id"]
            task_id = _script_task(api, queue, CHATTY.format(pause=0.03), "chatty")
            wait_for(lambda: "line 10" in task_log(api, task_id), 60,
                     "the task to run", agent.log)
        assert fault_server.proc is not None
        fault_server.proc.kill()  # kill -9 while the task prints; it ends during the outage
        fault_server.proc.wait()
        time.sleep(40)  # longer than the agent used to keep trying (30 s)
        restarted = _restart_on_same_port(fault_server).start()
        with Session(restarted.url, "k", "s") as api:
            task = _completed(api, task_id, "the final status", agent.log)
            lines = [line for line in task_log(api, task_id) if line.startswith("line ")]
        assert lines == [f"line {i}" for i in range(200)], (len(lines), lines[-3:])
        assert task["status_reason"] == "completed"
        assert "server unreachable" in agent.log()
        assert "server back after" in agent.log()
    finally:
        agent.stop()
        if restarted is not None:
            restarted.stop()


def test_an_agent_stopped_while_the_server_is_away_leaves_its_debt_to_the_next(
        work: Path, fault_server: ServerProcess) -> None:
    config = write_config(work / "outbox.conf", fault_server.url, work)
    queue_name = f"outbox-{uuid.uuid4().hex[:6]}"
    state = work / f"outbox-state-{uuid.uuid4().hex[:4]}"
    first = _daemon(config, work, queue_name, state, "--create-queue")
    restarted: ServerProcess | None = None
    second: DaemonProcess | None = None
    try:
        with Session(fault_server.url, "k", "s") as api:
            wait_for(lambda: api.call("workers.get_all")["workers"], 60, "the worker",
                     first.log)
            queue = api.call("queues.get_all", {"name": f"^{queue_name}$"})["queues"][0]["id"]
            task_id = _script_task(api, queue, CHATTY.format(pause=0.01), "owed")
            wait_for(lambda: "line 5" in task_log(api, task_id), 60, "the task to run",
                     first.log)
        assert fault_server.proc is not None
        fault_server.proc.kill()
        fault_server.proc.wait()
        time.sleep(4)  # the task ends meanwhile
        assert first.stop(timeout=60) == 0  # gives up after its grace, keeps what it owes
        assert list((state / "outbox").glob("*.jsonl")), first.log()
        restarted = _restart_on_same_port(fault_server).start()
        second = _daemon(config, work, queue_name, state)
        with Session(restarted.url, "k", "s") as api:
            task = _completed(api, task_id, "the owed final status", second.log)
            lines = [line for line in task_log(api, task_id) if line.startswith("line ")]
        assert lines == [f"line {i}" for i in range(200)], (len(lines), lines[-3:])
        assert task["status_reason"] == "completed"
        assert "sent what a previous agent owed the server" in second.log()
    finally:
        first.stop()
        if second is not None:
            second.stop()
        if restarted is not None:
            restarted.stop()


# Prints 200 lines the first time it runs; a second run (it must not come) says so.
ONCE = """\
import pathlib, time
mark = pathlib.Path({mark!r})
if mark.exists():
    print("second run", flush=True)
else:
    mark.write_text("ran")
    for i in range(200):
        print("line", i, flush=True)
        time.sleep(0.01)
"""


def test_an_agent_killed_while_the_server_is_away_leaves_its_debt_to_the_next(
        work: Path, fault_server: ServerProcess) -> None:
    config = write_config(work / "journal.conf", fault_server.url, work)
    queue_name = f"journal-{uuid.uuid4().hex[:6]}"
    state = work / f"journal-state-{uuid.uuid4().hex[:4]}"
    mark = work / f"journal-mark-{uuid.uuid4().hex[:4]}"
    first = _daemon(config, work, queue_name, state, "--create-queue")
    restarted: ServerProcess | None = None
    second: DaemonProcess | None = None
    try:
        with Session(fault_server.url, "k", "s") as api:
            wait_for(lambda: api.call("workers.get_all")["workers"], 60, "the worker",
                     first.log)
            queue = api.call("queues.get_all", {"name": f"^{queue_name}$"})["queues"][0]["id"]
            task_id = _script_task(api, queue, ONCE.format(mark=str(mark)), "journaled")
            wait_for(lambda: "line 5" in task_log(api, task_id), 60, "the task to run",
                     first.log)
        assert fault_server.proc is not None
        fault_server.proc.kill()
        fault_server.proc.wait()

        def journaled_outcome() -> bool:  # the task ended; its outcome waits on disk
            return any(b'"outcome"' in path.read_bytes()
                       for path in (state / "outbox").glob("*.jsonl"))

        wait_for(journaled_outcome, 60, "the task to end", first.log)
        assert first.proc is not None
        first.proc.kill()  # kill -9: nothing but the journal on disk survives
        first.proc.wait()
        restarted = _restart_on_same_port(fault_server).start()
        second = _daemon(config, work, queue_name, state)
        with Session(restarted.url, "k", "s") as api:
            task = _completed(api, task_id, "the owed final status", second.log)
            log = task_log(api, task_id)
        lines = [line for line in log if line.startswith("line ")]
        assert lines == [f"line {i}" for i in range(200)], (len(lines), lines[-3:])
        assert "second run" not in log  # completed by the journal, not run again
        assert task["status_reason"] == "completed"
        assert "sent what a previous agent owed the server" in second.log()
        assert not list((state / "outbox").glob("*.jsonl"))
    finally:
        first.stop()
        if second is not None:
            second.stop()
        if restarted is not None:
            restarted.stop()


# Runs long the first time; the second time it checks that the first run is gone, and ends.
TWICE = """\
import os, pathlib, time
mark = pathlib.Path({mark!r})
if mark.exists():
    first = int(mark.read_text())
    try:
        os.kill(first, 0)
        print("first run still alive", flush=True)
    except ProcessLookupError:
        print("first run gone", flush=True)
else:
    mark.write_text(str(os.getpid()))
    print("first run", flush=True)
    time.sleep(300)
"""


def test_an_agent_whose_task_was_requeued_behind_its_back_stops_its_copy(
        work: Path, fault_server: ServerProcess) -> None:
    """The server gave the task away (here: another process registered as this worker, as a
    restarted agent would; a network partition longer than the timeout does the same): the
    agent that still runs it kills its copy, reports nothing for it, and runs it again when it
    is handed out again."""
    config = write_config(work / "behind.conf", fault_server.url, work)
    queue_name = f"behind-{uuid.uuid4().hex[:6]}"
    agent = DaemonProcess(config, work, "--queue", queue_name, "--create-queue").start()
    mark = work / f"twice-{uuid.uuid4().hex[:6]}"
    try:
        with Session(fault_server.url, "k", "s") as api:
            worker = wait_for(lambda: api.call("workers.get_all")["workers"], 60, "the worker",
                              agent.log)[0]["id"]
            queue = api.call("queues.get_all", {"name": f"^{queue_name}$"})["queues"][0]["id"]
            task_id = _script_task(api, queue, TWICE.format(mark=str(mark)), "twice")
            wait_for(lambda: "first run" in task_log(api, task_id), 60, "the first run",
                     agent.log)
            with Session(fault_server.url, "k", "s", worker=worker) as impostor:
                impostor.call("workers.register", {"worker": worker, "queues": [queue],
                                                   "restarted": True})
            task = _completed(api, task_id, "the second run to complete", agent.log)
            lines = task_log(api, task_id)
        assert "first run gone" in lines, lines
        assert any("task was requeued by the server" in line for line in lines), lines
        assert task["lost_worker_requeues"] == 1
    finally:
        agent.stop()
