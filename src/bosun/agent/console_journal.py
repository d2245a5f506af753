"""A task run's write-ahead journal of what the agent still owes the server: every console line
is written here (to the kernel, so a `kill -9` of the agent loses none) before it is sent, and
the final outcome when it could not be sent at once. What the server acknowledged is cut away,
so in normal operation the file stays near empty; during an outage it grows with the lines
kept, bounded by `MAX_BYTES`.

`<outbox>/<task>.<stream>.jsonl` (`<outbox>`: `outbox/` beside the agents' state dirs)::

    {"task": "<task id>", "worker": "<worker id>", "stream": "<32 hex>"}
    {"event": {"type": "log", "msg": "...", "seq": 17, ...}}
    {"outcome": {"endpoint": "tasks.completed", "body": {...}}}

The owner holds an flock on it while it runs; a journal whose lock can be taken belongs to an
agent that is gone, and the next agent on the machine sends it (`outbox.deliver`). Events carry
`stream` and `seq` for a bosun server, which stores each (stream, seq) once, so a batch that is
sent again (an answer lost after the server committed it, a journal sent by the next agent) is
never stored twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bosun.agent import worker_id

log = logging.getLogger("bosun.agent")

MAX_BYTES = 256 * 1024 * 1024
# Rewritten from what is still unsent once the acknowledged part is this large.
COMPACT_BYTES = 4 * 1024 * 1024
SUFFIX = ".jsonl"


def folder() -> Path:
    path = worker_id.state_dir().parent / "outbox"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _line(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record) + b"\n"


class ConsoleJournal:
    """The writer's side. Never raises for a disk problem: it says so once and the lines stay
    in memory only (a full disk must not fail the task)."""

    def __init__(self, task_id: str, worker: str, stream: str,
                 directory: Path | None = None) -> None:
        self.path = (directory or folder()) / f"{task_id}.{stream}{SUFFIX}"
        self._header = _line({"task": task_id, "worker": worker, "stream": stream})
        self._outcome = b""  # kept when the acknowledged lines are cut away
        self._fd: int | None = None
        self._size = 0
        self._failed = False
        self._fd = self._open(self.path)

    def _open(self, path: Path) -> int | None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # lines may be private
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, self._header + self._outcome)
        except OSError as exc:
            self._fail(exc)
            return None
        self._size = len(self._header) + len(self._outcome)
        return fd

    def _fail(self, exc: OSError) -> None:
        if not self._failed:
            self._failed = True
            log.warning("cannot keep the console on disk in %s (%s); it is kept in memory only",
                        self.path, exc)

    def append(self, events: Iterable[dict[str, Any]]) -> None:
        self._write(b"".join(_line({"event": e}) for e in events))

    def add_outcome(self, endpoint: str, body: dict[str, Any]) -> None:
        self._outcome = _line({"outcome": {"endpoint": endpoint, "body": body}})
        self._write(self._outcome)
        self.sync()

    def _write(self, data: bytes) -> None:
        if self._fd is None or not data:
            return
        if self._size + len(data) > MAX_BYTES:
            self._fail(OSError(f"journal reached its limit of {MAX_BYTES >> 20} MiB"))
            return
        try:
            os.write(self._fd, data)
            self._size += len(data)
        except OSError as exc:
            self._fail(exc)

    def sync(self) -> None:
        """To the disk too (a machine that loses power): called now and then, not per line."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)

    def sent(self, unsent: Collection[dict[str, Any]]) -> None:
        """The server has everything but `unsent` (the caller's pending lines, in order)."""
        if self._fd is None:
            return
        if self._outcome:
            return  # the task has ended: the journal is removed once it is all delivered
        if not unsent:
            try:
                os.ftruncate(self._fd, len(self._header))
                os.lseek(self._fd, len(self._header), os.SEEK_SET)
                self._size = len(self._header)
            except OSError as exc:
                self._fail(exc)
        elif self._size - len(self._header) > COMPACT_BYTES:
            self._rewrite(unsent)

    def _rewrite(self, unsent: Iterable[dict[str, Any]]) -> None:
        """Start a new file holding only `unsent`, swapped in atomically; its lock is taken
        before it gets the name, so no other agent can take it for a dead agent's journal."""
        temporary = self.path.with_suffix(".tmp")
        fd = self._open(temporary)
        if fd is None:
            return
        old, self._fd = self._fd, fd
        self.append(unsent)
        try:
            os.replace(temporary, self.path)
        except OSError as exc:
            self._fail(exc)
        if old is not None:
            os.close(old)

    def remove(self) -> None:
        """Everything was delivered: the journal goes (unlinked while still locked)."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        self.close()

    def close(self) -> None:
        """Release the lock, leaving the file for the next agent."""
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None


# --- the reader's side (the next agent) -----------------------------------------------------


@dataclass
class Journal:
    path: Path
    task_id: str
    worker: str
    events: list[dict[str, Any]] = field(default_factory=list)
    outcome: dict[str, Any] | None = None


def abandoned() -> list[Path]:
    """Journals whose agent is gone, oldest first."""
    return sorted(folder().glob(f"*{SUFFIX}"), key=_mtime)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@contextlib.contextmanager
def taken(path: Path) -> Iterator[Journal | None]:
    """Lock an abandoned journal and read it; None when its agent is alive, or when it was
    delivered (removed) meanwhile. A torn last line (the writer died mid-write) is skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        if not _same_file(fd, path):
            yield None
            return
        with os.fdopen(os.dup(fd), "rb") as source:
            yield _parse(path, source.read())
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _parse(path: Path, data: bytes) -> Journal | None:
    lines = data.split(b"\n")
    try:
        header = orjson.loads(lines[0])
    except orjson.JSONDecodeError:
        log.warning("%s is not an agent journal; left alone", path)
        return None
    journal = Journal(path, header["task"], header["worker"])
    for raw in lines[1:]:
        try:
            record = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        if "event" in record:
            journal.events.append(record["event"])
        elif "outcome" in record:
            journal.outcome = record["outcome"]
    return journal
