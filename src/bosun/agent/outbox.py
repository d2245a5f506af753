"""What an agent still owes the server when it has to stop while the server is away: a task's
unsent console lines and its outcome, kept in a file under the agent's state dir and sent, in
order and once, by the next agent (daemon or `execute`) that starts with the same state dir,
before it pulls anything.

A file is locked while it is delivered (two agents never send it twice) and rewritten after
the console lines went out, so an agent that dies half-way does not send them again. The
outcome is sent as the worker that ran the task: a server that gave the task to someone else
meanwhile refuses it, and that refusal is final.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bosun.agent.delivery import Patience, retryable
from bosun.agent.file_lock import file_lock
from bosun.agent.worker_id import state_dir
from bosun.client import Session

log = logging.getLogger("bosun.agent")
BATCH = 1000


@dataclass
class Owed:
    task_id: str
    worker: str
    events: list[dict[str, Any]] = field(default_factory=list)
    outcome: dict[str, Any] | None = None  # {"endpoint": "tasks.failed", "body": {...}}

    def describe(self) -> str:
        parts = [f"{len(self.events)} log lines"] if self.events else []
        if self.outcome:
            parts.append(f"the final status ({self.outcome['endpoint'].split('.')[-1]})")
        return " and ".join(parts) or "nothing"


def folder() -> Path:
    path = state_dir().parent / "outbox"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save(owed: Owed) -> Path:
    """Keep `owed` on disk (private: console lines may be sensitive), atomically."""
    path = folder() / f"{owed.task_id}.json"
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(owed), out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    return path


def waiting() -> list[Path]:
    return sorted(folder().glob("*.json"), key=lambda p: p.stat().st_mtime)


def deliver(session_for: Callable[[str], Session], patience: Patience) -> int:
    """Send everything kept; returns how many files were delivered. Stops (leaving the rest)
    when `patience` runs out while the server is away."""
    delivered = 0
    for path in waiting():
        with file_lock(path.with_suffix(".lock")):
            if not path.exists():
                continue  # another agent sent it meanwhile
            owed = Owed(**json.loads(path.read_text()))
            with session_for(owed.worker) as session:
                if not _send(owed, session, patience):
                    return delivered
            path.unlink()
        path.with_suffix(".lock").unlink(missing_ok=True)
        log.warning("sent what a previous agent owed the server for task %s: %s",
                    owed.task_id, owed.describe())
        delivered += 1
    return delivered


def _send(owed: Owed, session: Session, patience: Patience) -> bool:
    while owed.events:
        batch = owed.events[:BATCH]
        if not _call(lambda b=batch: session.add_events(b), patience, owed, "log lines"):
            return False
        owed.events = owed.events[BATCH:]
        save(owed)
    if owed.outcome:
        outcome = owed.outcome
        if not _call(lambda: session.call(outcome["endpoint"], outcome["body"]), patience,
                     owed, "final status"):
            return False
    return True


def _call(send: Callable[[], Any], patience: Patience, owed: Owed, what: str) -> bool:
    while True:
        try:
            send()
            return True
        except Exception as exc:
            if not retryable(exc):
                log.warning("task %s: the server refused the %s kept for it: %s", owed.task_id,
                            what, exc)
                return True  # final: keeping it would resend it forever
            if not patience.wait():
                return False
