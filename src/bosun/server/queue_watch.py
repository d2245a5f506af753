"""Sees tasks added to a queue by *another* server process sharing the database, and wakes the
long-polling callers of this process for them.

Enqueues made by this process wake its waiters at once (`QueueWakeups.notify`). Several server
processes (`--workers N`, or several hosts on one PostgreSQL) do not see each other's enqueues,
so one watcher per process looks at the queues its waiters wait on, twice a second, with one
small query: how many entries each such queue holds. A waited queue that holds entries wakes as
many waiters; they take the entries (or find them taken by another process and wait again).
Nothing is queried while nobody waits, and the cost does not grow with the number of waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import sqlalchemy as sa
from anyio import to_thread

from bosun.server import background
from bosun.server.queue_wakeups import QueueWakeups
from bosun.server.store.engine import Store
from bosun.server.store.schema import queue_entries

WATCH_INTERVAL_SECONDS = 0.5

log = logging.getLogger("bosun.server")

_COUNTS = (sa.select(queue_entries.c.queue, sa.func.count())
           .where(queue_entries.c.queue.in_(sa.bindparam("ids", expanding=True)))
           .group_by(queue_entries.c.queue))


class QueueWatch:
    def __init__(self, store: Store, wakeups: QueueWakeups) -> None:
        self._store = store
        self._wakeups = wakeups

    async def run(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_SECONDS)
            queue_ids = self._wakeups.waited_queues()
            if not queue_ids:
                continue
            try:
                counts = await to_thread.run_sync(self._entry_counts, queue_ids)
            except sa.exc.SQLAlchemyError as exc:  # the database is briefly away: try again
                log.warning("queue watch: %s", exc)
                continue
            for queue_id, count in counts.items():
                self._wakeups.wake(queue_id, count)

    def _entry_counts(self, queue_ids: list[str]) -> dict[str, int]:
        with self._store.read() as conn:
            return {row[0]: row[1] for row in conn.execute(_COUNTS, {"ids": queue_ids})}


def watching(store: Store, wakeups: QueueWakeups) -> contextlib.AbstractAsyncContextManager[None]:
    """Run the watcher for as long as the server serves."""
    return background.running(QueueWatch(store, wakeups).run(), "queue-watch")
