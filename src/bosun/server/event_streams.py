"""Each numbered event stored once. A bosun agent numbers its console lines per run (`stream`:
an id of up to 64 characters, `seq`: 1, 2, ... in the order it sends them); the server keeps the
highest `seq` stored per (task, stream) and drops any event at or below it. So a batch sent
again, because the answer to the first try was lost after the server committed it, or because
the next agent sent a dead agent's journal, adds nothing twice. Events without a stream (the
ClearML clients') are stored as they come.

A high-water mark (not a set of ids) suffices because one stream is sent in order: a sender
sends the next batch only after the server acknowledged the previous one, and a dead agent's
journal starts at its first unacknowledged line.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from bosun.server.store.schema import event_streams, events

MAX_STREAM_LENGTH = 64

# (stream, seq) of an event, or None when it has none.
Position = tuple[str, int] | None


def position(event: dict[str, Any]) -> Position:
    """Raises ValueError for a malformed stream or seq (the event is refused, not stored)."""
    stream, seq = event.get("stream"), event.get("seq")
    if stream is None and seq is None:
        return None
    if not isinstance(stream, str) or not 0 < len(stream) <= MAX_STREAM_LENGTH:
        raise ValueError(f"'stream' must be a string of 1 to {MAX_STREAM_LENGTH} characters")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**62:
        raise ValueError("'seq' must be a non-negative integer")
    return stream, seq


def unseen(conn: Connection, is_sqlite: bool,
           rows: list[tuple[dict[str, Any], Position]]) -> list[dict[str, Any]]:
    """The rows to store, in their order: those without a position, and those above their
    stream's mark (which is moved up). Locks the streams' marks until the transaction ends, so
    two copies of one batch arriving at once are stored once."""
    by_stream: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, (row, where) in enumerate(rows):
        if where is not None:
            by_stream[(row["task"], where[0])].append(index)
    dropped: set[int] = set()
    for (task_id, stream), indexes in by_stream.items():
        mark = _claim(conn, is_sqlite, task_id, stream)
        highest = mark
        for index in indexes:
            seq = rows[index][1][1]  # type: ignore[index]
            if seq <= highest:
                dropped.add(index)
            else:
                highest = seq
        if highest != mark:
            conn.execute(event_streams.update()
                         .where(event_streams.c.task == task_id, event_streams.c.stream == stream)
                         .values(last_seq=highest))
    return [row for index, (row, _) in enumerate(rows) if index not in dropped]


def _claim(conn: Connection, is_sqlite: bool, task_id: str, stream: str) -> int:
    dialect_insert = sqlite.insert if is_sqlite else postgresql.insert
    conn.execute(dialect_insert(event_streams)
                 .values(task=task_id, stream=stream, last_seq=-1)
                 .on_conflict_do_nothing())
    query = sa.select(event_streams.c.last_seq).where(
        event_streams.c.task == task_id, event_streams.c.stream == stream)
    if not is_sqlite:  # SQLite's write transaction holds the whole database already
        query = query.with_for_update()
    return int(conn.execute(query).scalar_one())


def delete_for_task(conn: Connection, task_id: str) -> int:
    """A task's events and its streams' marks; returns how many events were deleted."""
    conn.execute(event_streams.delete().where(event_streams.c.task == task_id))
    return conn.execute(events.delete().where(events.c.task == task_id)).rowcount
