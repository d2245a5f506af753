"""The console stream against a real server: prompt first line, batching, masking, close."""

from __future__ import annotations

import time
import uuid

import pytest

from bosun.agent.log_stream import TaskLog, collapse_carriage_returns
from bosun.agent.secret_mask import SecretMasker
from bosun.client import Session
from tests.support.cutting_proxy import CuttingProxy
from tests.support.server_process import ServerProcess


def _log_lines(api: Session, task_id: str) -> list[str]:
    events = api.call("events.get_task_log", {"task": task_id, "navigate_earlier": False,
                                              "batch_size": 1000})["events"]
    return [event["msg"] for event in events]


def _wait_for_lines(api: Session, task_id: str, count: int, timeout: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if len(_log_lines(api, task_id)) >= count:
            return time.perf_counter() - started
        time.sleep(0.02)
    raise AssertionError(f"{count} lines did not reach the server in {timeout}s")


def test_a_line_after_a_quiet_spell_is_sent_at_once(api: Session) -> None:
    task_id = api.call("tasks.create", {"name": "log-first-line"})["id"]
    log = TaskLog(api, task_id, "w", SecretMasker(), flush_interval=5.0)
    try:
        log.feed("first line\n")
        assert _wait_for_lines(api, task_id, 1, timeout=4.0) < 1.0
        log.feed("second\nthird\n")  # within the interval: batched, not sent yet
        time.sleep(0.3)
        assert _log_lines(api, task_id) == ["first line"]
    finally:
        log.close()
    assert _log_lines(api, task_id) == ["first line", "second", "third"]


def test_close_sends_the_unterminated_rest_masked_and_collapsed(api: Session) -> None:
    task_id = api.call("tasks.create", {"name": "log-close"})["id"]
    log = TaskLog(api, task_id, "w", SecretMasker(["hunter2secret"]), flush_interval=0.2)
    log.feed("progress 10%\rprogress 100%\n")
    log.feed("clone https://user:hunter2secret@example.com/r.git\n")
    log.feed("no newline at the end")
    log.close()
    assert _log_lines(api, task_id) == [
        "progress 100%", "clone https://****@example.com/r.git", "no newline at the end"]


def test_collapse_carriage_returns() -> None:
    assert collapse_carriage_returns("a\rb\rc") == "c"
    assert collapse_carriage_returns("done\r") == "done"
    assert collapse_carriage_returns("plain") == "plain"


def test_the_tasks_first_output_is_not_held_back_by_the_agents_own_lines(api: Session) -> None:
    task_id = api.call("tasks.create", {"name": "log-task-first"})["id"]
    log = TaskLog(api, task_id, "w", SecretMasker(), flush_interval=5.0)
    try:
        log.write("agent: environment ready")  # sent at once, starts an interval
        _wait_for_lines(api, task_id, 1, timeout=4.0)
        started = time.perf_counter()
        log.feed("the task's first line\n")
        _wait_for_lines(api, task_id, 2, timeout=4.0)
        assert time.perf_counter() - started < 1.0
    finally:
        log.close()


@pytest.mark.parametrize("numbered", [True, False])
def test_a_batch_whose_answer_was_lost_is_stored_once_when_numbered(
        api: Session, server: ServerProcess, numbered: bool) -> None:
    """The server commits a batch, the connection is cut before its answer arrives, the agent
    sends the batch again. Numbered lines (a bosun agent on a bosun server) are stored once;
    the unnumbered run shows the fault is real (the copy is stored)."""
    task_id = api.call("tasks.create", {"name": "log-cut-answer"})["id"]
    with CuttingProxy(server.port, b"events.add_batch") as proxy, \
            Session(proxy.url, "key", "secret") as session:
        log = TaskLog(session, task_id, "w", SecretMasker(), flush_interval=0.05,
                      stream=uuid.uuid4().hex if numbered else None)
        log.feed("".join(f"line {n}\n" for n in range(10)))
        assert log.close(retry_for=30)
        assert proxy.cut == 1
    lines = _log_lines(api, task_id)
    if numbered:
        assert lines == [f"line {n}" for n in range(10)]
    else:
        assert len(lines) > 10 and sorted(set(lines)) == sorted(f"line {n}" for n in range(10))
