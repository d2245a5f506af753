"""The run journal on a real disk: what the server acknowledged is cut away, the outcome is kept,
a live agent's journal is never taken, a torn last line is skipped; and a TaskLog whose agent
vanished mid-outage leaves every line to the next agent, which a real server stores once."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from bosun.agent import console_journal, outbox
from bosun.agent.console_journal import ConsoleJournal
from bosun.agent.delivery import Patience
from bosun.agent.log_stream import TaskLog
from bosun.agent.secret_mask import SecretMasker
from bosun.client import Session
from tests.support.server_process import ServerProcess


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BOSUN_AGENT_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def _event(n: int) -> dict[str, object]:
    return {"type": "log", "task": "t", "msg": f"line {n}", "seq": n}


def _lines(path: Path) -> list[str]:
    return path.read_bytes().decode().splitlines()


def test_acknowledged_lines_are_cut_away_and_the_outcome_stays(state: Path) -> None:
    journal = ConsoleJournal("t", "w", "s1")
    journal.append([_event(1), _event(2)])
    assert len(_lines(journal.path)) == 3  # header + 2
    journal.sent([])  # all acknowledged
    assert len(_lines(journal.path)) == 1
    journal.append([_event(3)])
    journal.add_outcome("tasks.completed", {"task": "t"})
    journal.sent([])  # the task has ended: nothing is cut any more
    journal.close()
    with console_journal.taken(journal.path) as found:
        assert found is not None
        assert [e["msg"] for e in found.events] == ["line 3"]
        assert found.outcome == {"endpoint": "tasks.completed", "body": {"task": "t"}}


def test_a_large_acknowledged_prefix_is_compacted(state: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console_journal, "COMPACT_BYTES", 1000)
    journal = ConsoleJournal("t", "w", "s2")
    journal.append([_event(n) for n in range(100)])
    journal.sent([_event(99)])  # 99 acknowledged, one still pending
    assert len(_lines(journal.path)) == 2
    journal.append([_event(100)])
    journal.close()
    with console_journal.taken(journal.path) as found:
        assert found is not None
        assert [e["seq"] for e in found.events] == [99, 100]


def test_a_live_agents_journal_is_not_taken_and_a_torn_line_is_skipped(state: Path) -> None:
    journal = ConsoleJournal("t", "w", "s3")
    journal.append([_event(1)])
    with console_journal.taken(journal.path) as found:
        assert found is None  # its writer holds the lock
    journal.close()
    with open(journal.path, "ab") as out:
        out.write(b'{"event": {"type": "log", "ms')  # the writer died mid-write
    with console_journal.taken(journal.path) as found:
        assert found is not None and [e["seq"] for e in found.events] == [1]
    journal_path = journal.path
    removed = ConsoleJournal("t", "w", "s4")
    removed.remove()
    assert not removed.path.exists() and journal_path.exists()


def test_a_journal_is_private(state: Path) -> None:
    journal = ConsoleJournal("t", "w", "s5")
    assert os.stat(journal.path).st_mode & 0o077 == 0
    journal.remove()


def test_lines_of_an_agent_that_vanished_during_an_outage_reach_the_server_once(
        state: Path, agent_server: ServerProcess) -> None:
    with Session(agent_server.url, "k", "s") as api:
        task_id = api.call("tasks.create", {"name": f"journal-{uuid.uuid4().hex[:6]}"})["id"]
        stream = uuid.uuid4().hex
        # The server is "away": this TaskLog talks to a port nobody listens on.
        away = Session("http://127.0.0.1:9", "k", "s", timeout=1)
        log = TaskLog(away, task_id, "w", SecretMasker(), flush_interval=0.05,
                      journal=ConsoleJournal(task_id, "w", stream), stream=stream)
        log.feed("".join(f"line {n}\n" for n in range(50)))
        # Some were delivered before the outage (a resend of them must not repeat them).
        api.add_events(log.unsent()[:20])
        assert log.journal is not None
        log.journal.close()  # the agent is gone: its lock with it
        assert outbox.deliver(lambda worker: Session(agent_server.url, "k", "s"),
                              Patience(30)) == 1
        assert outbox.deliver(lambda worker: Session(agent_server.url, "k", "s"),
                              Patience(30)) == 0  # removed once sent
        events = api.call("events.get_task_log", {"task": task_id, "navigate_earlier": False,
                                                  "batch_size": 500})["events"]
    assert [e["msg"] for e in events] == [f"line {n}" for n in range(50)]
