"""What agents that are gone still owe the server: the journals of their task runs (unsent
console lines, the outcome when it could not be sent; see `console_journal`), sent in order by
the next agent (daemon or `execute`) that starts on the machine, before it pulls anything.

A journal is locked while it is delivered (two agents never send it twice, and the journal of
a live agent is never taken). The outcome is sent as the worker that ran the task: a server that
gave the task to someone else meanwhile refuses it, and that refusal is final. Lines carry their
stream and sequence number, so a bosun server stores each once even if a delivery is cut short
and done again.

Files of the previous format (`<task>.json`: the lines and outcome an agent stopped during an
outage kept) are still delivered.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bosun.agent import console_journal
from bosun.agent.console_journal import Journal
from bosun.agent.delivery import Patience, retryable
from bosun.agent.file_lock import file_lock
from bosun.client import Session

log = logging.getLogger("bosun.agent")
BATCH = 1000


def waiting() -> list[Path]:
    """Journals to deliver, oldest first (those of live agents included: `deliver` skips
    them), and files of the previous format."""
    legacy = sorted(console_journal.folder().glob("*.json"), key=lambda p: p.stat().st_mtime)
    return console_journal.abandoned() + legacy


def deliver(session_for: Callable[[str], Session], patience: Patience) -> int:
    """Send everything kept by agents that are gone; returns how many journals were delivered.
    Stops (leaving the rest) when `patience` runs out while the server is away."""
    delivered = 0
    for path in waiting():
        if path.suffix == ".json":
            sent = _deliver_legacy(path, session_for, patience)
        else:
            sent = _deliver_journal(path, session_for, patience)
        if sent is None:
            continue
        if not sent:
            return delivered
        delivered += 1
    return delivered


def _deliver_journal(path: Path, session_for: Callable[[str], Session],
                     patience: Patience) -> bool | None:
    """True: sent and removed; False: the server stayed away; None: not ours to send."""
    with console_journal.taken(path) as journal:
        if journal is None:
            return None
        with session_for(journal.worker) as session:
            if not _send(journal, session, patience):
                return False
        path.unlink(missing_ok=True)
    _said(journal)
    return True


def _deliver_legacy(path: Path, session_for: Callable[[str], Session],
                    patience: Patience) -> bool | None:
    with file_lock(path.with_suffix(".lock")):
        if not path.exists():
            return None  # another agent sent it meanwhile
        data = json.loads(path.read_text())
        journal = Journal(path, data["task_id"], data["worker"], data.get("events") or [],
                          data.get("outcome"))
        with session_for(journal.worker) as session:
            if not _send(journal, session, patience):
                return False
        path.unlink()
    path.with_suffix(".lock").unlink(missing_ok=True)
    _said(journal)
    return True


def _said(journal: Journal) -> None:
    parts = [f"{len(journal.events)} log lines"] if journal.events else []
    if journal.outcome:
        parts.append(f"the final status ({journal.outcome['endpoint'].split('.')[-1]})")
    log.warning("sent what a previous agent owed the server for task %s: %s",
                journal.task_id, " and ".join(parts) or "nothing")


def _send(journal: Journal, session: Session, patience: Patience) -> bool:
    log.info("task %s: sending what a previous agent owed the server (%d log lines%s)",
             journal.task_id, len(journal.events), ", the final status" if journal.outcome else "")
    for start in range(0, len(journal.events), BATCH):
        batch = journal.events[start:start + BATCH]
        if not _call(lambda b=batch: session.add_events(b), patience, journal, "log lines"):
            return False
    outcome = journal.outcome
    if outcome:
        return _call(lambda: session.call(outcome["endpoint"], outcome["body"]), patience,
                     journal, "final status")
    return True


def _call(send: Callable[[], Any], patience: Patience, journal: Journal, what: str) -> bool:
    while True:
        try:
            send()
            return True
        except Exception as exc:
            if not retryable(exc):
                log.warning("task %s: the server refused the %s kept for it: %s",
                            journal.task_id, what, exc)
                return True  # final: keeping it would resend it forever
            if not patience.wait():
                return False
