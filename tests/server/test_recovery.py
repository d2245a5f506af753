"""Lost workers and aborts that stick, against real server processes (SQLite and PostgreSQL):
a worker that stops reporting loses its tasks to the recovery policy, exactly once also with
several server processes, also across a server restart; a task taken back from a worker can not
be started or ended by it."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bosun.api.errors import ApiError
from bosun.client import Session
from tests.conftest import DbFactory
from tests.support.agent_env import wait_for
from tests.support.server_process import ServerProcess

TIMEOUT = 1.0  # --worker-timeout for these servers
DEADLINE = 20.0  # generous: a busy machine must not fail these


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _server(db: str, *args: str) -> ServerProcess:
    return ServerProcess(db, extra_args=["--worker-timeout", str(TIMEOUT), *args])


@pytest.fixture(scope="module")
def recovery_server(new_db: DbFactory) -> Iterator[ServerProcess]:
    with _server(new_db()) as proc:
        yield proc


@pytest.fixture
def api(recovery_server: ServerProcess) -> Iterator[Session]:
    with Session(recovery_server.url, "k", "s") as session:
        yield session


def _wait(check: Callable[[], Any], what: str) -> Any:
    return wait_for(check, DEADLINE, what)


def _task(api: Session, queue: str, **fields: Any) -> str:
    task_id = api.call("tasks.create", {"name": _unique("t"), **fields})["id"]
    api.call("tasks.enqueue", {"task": task_id, "queue": queue})
    return task_id


def _get(api: Session, task_id: str) -> dict[str, Any]:
    return api.call("tasks.get_by_id", {"task": task_id})["task"]


def _entries(api: Session, queue: str) -> list[str]:
    return [e["task"] for e in api.call("queues.get_by_id", {"queue": queue})["queue"]["entries"]]


def _log(api: Session, task_id: str) -> list[str]:
    events = api.call("events.get_task_log", {"task": task_id, "batch_size": 1000})["events"]
    return [e["msg"] for e in events]


def _worker_ids(api: Session) -> list[str]:
    return [w["id"] for w in api.call("workers.get_all")["workers"]]


def _run_as(url: str, worker: str, queue: str, *, report: bool = True,
            timeout: int | None = None) -> tuple[Session, str]:
    """A worker that registers, takes the next task of `queue`, starts it and reports once."""
    session = Session(url, "k", "s", worker=worker)
    session.call("workers.register", {"worker": worker, "queues": [queue],
                                      **({"timeout": timeout} if timeout else {})})
    task_id = session.call("queues.get_next_task", {"queue": queue})["entry"]["task"]
    session.call("tasks.started", {"task": task_id})
    if report:
        session.call("workers.status_report", {"worker": worker, "task": task_id,
                                               "timestamp": int(time.time() * 1000)})
    return session, task_id


# --- the status machine ----------------------------------------------------------------------


def test_an_abort_after_the_hand_out_sticks(api: Session, recovery_server: ServerProcess) -> None:
    queue = api.call("queues.create", {"name": _unique("q")})["id"]
    worker = _unique("agent")
    with Session(recovery_server.url, "k", "s", worker=worker) as agent:
        task_id = _task(api, queue)
        assert agent.call("queues.get_next_task", {"queue": queue})["entry"]["task"] == task_id
        assert api.call("tasks.stop", {"task": task_id})["fields"]["status"] == "stopped"
        with pytest.raises(ApiError) as err:
            agent.call("tasks.started", {"task": task_id})
        assert (err.value.code, err.value.subcode) == (400, 110)
        assert "taken back" in err.value.msg
        assert _get(api, task_id)["status"] == "stopped"
        # A new enqueue is a new run: the same worker may take and start it again.
        api.call("tasks.enqueue", {"task": task_id, "queue": queue})
        agent.call("queues.get_next_task", {"queue": queue})
        agent.call("tasks.started", {"task": task_id})
        assert _get(api, task_id)["status"] == "in_progress"


def test_a_task_handed_to_one_worker_is_not_started_by_another(
        api: Session, recovery_server: ServerProcess) -> None:
    queue = api.call("queues.create", {"name": _unique("q")})["id"]
    task_id = _task(api, queue)
    with Session(recovery_server.url, "k", "s", worker=_unique("a")) as first, \
            Session(recovery_server.url, "k", "s", worker=_unique("b")) as second:
        first.call("queues.get_next_task", {"queue": queue})
        with pytest.raises(ApiError) as err:
            second.call("tasks.started", {"task": task_id})
        assert "handed to worker" in err.value.msg
        first.call("tasks.started", {"task": task_id})
    assert _get(api, task_id)["last_worker"] == first.worker


def test_stop_and_started_race_never_ends_in_progress(
        api: Session, recovery_server: ServerProcess) -> None:
    """The abort and the agent's start come in at the same moment, 60 times over: whenever the
    stop answered `stopped`, the task stays stopped."""
    queue = api.call("queues.create", {"name": _unique("q")})["id"]
    worker = _unique("racer")
    outcomes = {"stopped_first": 0, "started_first": 0}
    with Session(recovery_server.url, "k", "s", worker=worker) as agent:
        # Its own long timeout: it never reports during the loop, and must not be lost.
        agent.call("workers.register", {"worker": worker, "queues": [queue], "timeout": 600})
        for _ in range(60):
            task_id = _task(api, queue)
            agent.call("queues.get_next_task", {"queue": queue})
            answers: dict[str, Any] = {}
            together = threading.Barrier(2)

            def stop(tid: str = task_id, out: dict[str, Any] = answers,
                     barrier: threading.Barrier = together) -> None:
                barrier.wait()
                out["stop"] = api.call("tasks.stop", {"task": tid})["fields"]

            def start(tid: str = task_id, out: dict[str, Any] = answers,
                      barrier: threading.Barrier = together) -> None:
                barrier.wait()
                try:
                    agent.call("tasks.started", {"task": tid})
                    out["started"] = True
                except ApiError:
                    out["started"] = False

            threads = [threading.Thread(target=stop), threading.Thread(target=start)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            final = _get(api, task_id)
            if answers["stop"]["status"] == "stopped":
                outcomes["stopped_first"] += 1
                assert final["status"] == "stopped", (answers, final["status"])
                assert answers["started"] is False
            else:  # started won: the stop asks the worker to stop its run
                outcomes["started_first"] += 1
                assert answers["started"] is True
                assert (final["status"], final["status_message"]) == ("in_progress", "stopping")
    assert sum(outcomes.values()) == 60


# --- lost workers ----------------------------------------------------------------------------


def test_a_lost_workers_task_is_requeued_to_the_front_then_failed(
        api: Session, recovery_server: ServerProcess) -> None:
    queue = api.call("queues.create", {"name": _unique("q")})["id"]
    task_id = _task(api, queue)
    worker = _unique("host:gpu0")
    agent, taken = _run_as(recovery_server.url, worker, queue)
    assert taken == task_id
    later = _task(api, queue)  # waiting behind: the requeued task goes before it

    task = _wait(lambda: (t := _get(api, task_id))["status"] == "queued" and t, "the requeue")
    assert _entries(api, queue) == [task_id, later]
    assert task["status_reason"].startswith(f"worker {worker} lost: no report for ")
    assert task["status_reason"].endswith("requeued (attempt 2 of 2)")
    assert worker not in _worker_ids(api)
    assert any("requeued (attempt 2 of 2)" in line for line in _log(api, task_id))
    # The lost worker comes back: it can neither end nor restart the task.
    for action in ("failed", "started"):
        with pytest.raises(ApiError):
            agent.call(f"tasks.{action}", {"task": task_id})
    agent.close()

    second = _unique("host:gpu1")
    again, taken = _run_as(recovery_server.url, second, queue)
    assert taken == task_id
    again.close()
    task = _wait(lambda: (t := _get(api, task_id))["status"] == "failed" and t, "the failure")
    assert task["status_reason"].endswith("failed: no retries left (1 of 1 used)")
    assert _entries(api, queue) == [later]


def test_policy_and_budget_from_task_and_queue_tags(
        api: Session, recovery_server: ServerProcess) -> None:
    failing = api.call("queues.create", {"name": _unique("q"),
                                         "tags": ["lost_task_policy:fail"]})["id"]
    task_id = _task(api, failing)
    _run_as(recovery_server.url, _unique("w"), failing)[0].close()
    task = _wait(lambda: (t := _get(api, task_id))["status"] == "failed" and t, "the failure")
    assert task["status_reason"].endswith("failed (lost-task policy: fail)")

    generous = api.call("queues.create", {"name": _unique("q")})["id"]
    task_id = _task(api, generous, tags=["lost_task_retries:2"])
    for attempt in (2, 3):
        _run_as(recovery_server.url, _unique("w"), generous)[0].close()
        task = _wait(lambda: (t := _get(api, task_id))["status"] == "queued" and t, "requeue")
        assert task["status_reason"].endswith(f"requeued (attempt {attempt} of 3)")
    _run_as(recovery_server.url, _unique("w"), generous)[0].close()
    task = _wait(lambda: (t := _get(api, task_id))["status"] == "failed" and t, "the failure")
    assert "no retries left (2 of 2 used)" in task["status_reason"]


def test_a_live_worker_keeps_its_task(api: Session, recovery_server: ServerProcess) -> None:
    queue = api.call("queues.create", {"name": _unique("q")})["id"]
    task_id = _task(api, queue)
    worker = _unique("alive")
    agent, _ = _run_as(recovery_server.url, worker, queue)
    with agent:
        for _ in range(int(4 * TIMEOUT / 0.25)):  # four timeouts, reporting 4x a second
            agent.call("workers.status_report", {"worker": worker, "task": task_id,
                                                 "timestamp": int(time.time() * 1000)})
            time.sleep(0.25)
        assert _get(api, task_id)["status"] == "in_progress"
        assert worker in _worker_ids(api)
        agent.call("tasks.completed", {"task": task_id})
    assert _get(api, task_id)["status"] == "completed"


def test_a_task_handed_out_but_never_started_goes_back_without_a_charge(
        api: Session, recovery_server: ServerProcess) -> None:
    queue = api.call("queues.create", {"name": _unique("q")})["id"]
    task_id = _task(api, queue)
    api.call("queues.get_next_task", {"queue": queue})  # no worker id, and then nothing
    assert _entries(api, queue) == []
    task = _wait(lambda: _entries(api, queue) == [task_id] and _get(api, task_id), "put back")
    assert task["status"] == "queued"
    assert "never started" in task["status_reason"]
    assert not task.get("lost_worker_requeues")


def test_a_restarted_agent_gives_up_what_its_previous_process_held(
        api: Session, recovery_server: ServerProcess) -> None:
    queue = api.call("queues.create", {"name": _unique("q")})["id"]
    task_id = _task(api, queue)
    worker = _unique("restarting")
    _run_as(recovery_server.url, worker, queue)[0].close()
    with Session(recovery_server.url, "k", "s", worker=worker) as agent:
        agent.call("workers.register", {"worker": worker, "queues": [queue], "restarted": True})
    task = _get(api, task_id)  # at once, not after a timeout
    assert task["status"] == "queued"
    assert task["status_reason"] == f"worker {worker} restarted; requeued (attempt 2 of 2)"


def test_a_stop_of_a_task_whose_worker_is_gone_stops_it_at_once(
        api: Session, recovery_server: ServerProcess) -> None:
    queue = api.call("queues.create", {"name": _unique("q")})["id"]
    task_id = _task(api, queue)
    worker = _unique("gone")
    agent, _ = _run_as(recovery_server.url, worker, queue, timeout=600)
    # While the worker is registered and reporting, stop asks it.
    assert api.call("tasks.stop", {"task": task_id})["fields"]["status_message"] == "stopping"
    agent.call("workers.unregister", {"worker": worker})
    agent.close()
    assert api.call("tasks.stop", {"task": task_id})["fields"]["status"] == "stopped"


# --- several server processes, restarts -------------------------------------------------------


@pytest.mark.slow
def test_two_server_processes_requeue_a_lost_task_once(new_db: DbFactory) -> None:
    with _server(new_db(), "--workers", "2") as server, Session(server.url, "k", "s") as api:
        queues = [api.call("queues.create", {"name": _unique("q")})["id"] for _ in range(6)]
        tasks = [_task(api, queue) for queue in queues]
        for queue in queues:  # six connections, spread over both processes
            _run_as(server.url, _unique("w"), queue)[0].close()
        for task_id in tasks:
            task = _wait(lambda t=task_id: (d := _get(api, t))["status"] == "queued" and d,
                         "the requeue")
            assert task["status_reason"].endswith("requeued (attempt 2 of 2)")
            assert task["lost_worker_requeues"] == 1
            lines = [line for line in _log(api, task_id) if "lost" in line]
            assert len(lines) == 1, lines
        assert [_entries(api, q) for q in queues] == [[t] for t in tasks]


@pytest.mark.slow
def test_after_a_server_restart_dead_workers_are_found_and_live_ones_kept(
        new_db: DbFactory) -> None:
    db = new_db()
    server = _server(db).start()
    with Session(server.url, "k", "s") as api:
        queue = api.call("queues.create", {"name": _unique("q")})["id"]
        dead_task, live_task = _task(api, queue), _task(api, queue)
    dead, live = _unique("dead"), _unique("live")
    _run_as(server.url, dead, queue)[0].close()
    live_agent, _ = _run_as(server.url, live, queue)
    assert server.proc is not None
    server.proc.kill()  # kill -9: no shutdown work
    server.proc.wait()
    time.sleep(3 * TIMEOUT)  # both workers are silent longer than the timeout meanwhile
    restarted = ServerProcess(db, extra_args=["--worker-timeout", str(TIMEOUT)])
    restarted.port, restarted.url = server.port, server.url  # the agents know this address
    restarted.args[restarted.args.index("--port") + 1] = str(server.port)
    with restarted, live_agent, Session(server.url, "k", "s") as api:
        deadline = time.monotonic() + DEADLINE
        while _get(api, dead_task)["status"] != "queued":
            assert time.monotonic() < deadline, "the dead worker was not found"
            live_agent.call("workers.status_report", {"worker": live, "task": live_task,
                                                      "timestamp": int(time.time() * 1000)})
            time.sleep(0.2)
        assert _get(api, live_task)["status"] == "in_progress"
        assert live in _worker_ids(api)
        assert dead not in _worker_ids(api)
    server.stop()
