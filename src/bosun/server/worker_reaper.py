"""Finds workers that stopped reporting and resolves their tasks (see `recovery`).

Agents report every few seconds; a worker silent for longer than its timeout (the server's
`--worker-timeout`, or the `timeout` it registered with) is lost: it leaves the worker list and
each task it held is requeued or failed. Every server process runs a reaper; a worker is
removed with a conditional DELETE, so exactly one process acts on it. Silence is counted from
this process's start at the earliest: after a server outage the agents get a full timeout to
report again, while a worker that died during the outage is found one timeout after the start.

Tasks handed out to a caller that never registered as a worker and never started them are put
back into their queue after the same timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime

import sqlalchemy as sa
from anyio import to_thread

from bosun.server import background, recovery
from bosun.server import task_status as st
from bosun.server.config import RecoveryPolicy
from bosun.server.queue_wakeups import QueueWakeups
from bosun.server.services import tasks as tasks_service
from bosun.server.store.engine import Store
from bosun.server.store.schema import queue_entries, tasks, workers

log = logging.getLogger("bosun.server")

_SILENT = sa.select(workers.c.id, workers.c.last_seen, workers.c.doc).where(
    workers.c.expires < sa.bindparam("now"))
_REMOVE = workers.delete().where(workers.c.id == sa.bindparam("worker"),
                                 workers.c.expires < sa.bindparam("now"))
# Queued tasks that are in no queue: handed out (or taken off by queues.remove_task).
_OUT_OF_QUEUE = sa.select(tasks.c.id, tasks.c.doc).where(
    tasks.c.status == st.QUEUED,
    ~sa.exists().where(queue_entries.c.task == tasks.c.id))
_WORKER_EXISTS = sa.select(workers.c.id).where(workers.c.id == sa.bindparam("worker"))


def sweep_interval(timeout: float) -> float:
    return min(max(timeout / 4, 0.5), 5.0)


class WorkerReaper:
    def __init__(self, store: Store, policy: RecoveryPolicy, wakeups: QueueWakeups) -> None:
        self._store = store
        self._policy = policy
        self._wakeups = wakeups
        self._started = time.time()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(sweep_interval(self._policy.worker_timeout))
            try:
                woken = await to_thread.run_sync(self.sweep)
            except sa.exc.SQLAlchemyError as exc:  # the database is briefly away: next time
                log.warning("lost-worker check: %s", str(exc).splitlines()[0])
                continue
            for queue_id in woken:
                self._wakeups.notify(queue_id)

    def sweep(self) -> list[str]:
        now = time.time()
        with self._store.read() as conn:
            silent = conn.execute(_SILENT, {"now": now}).all()
        woken: list[str] = []
        for row in silent:
            timeout = float(row.doc.get("timeout") or self._policy.worker_timeout)
            quiet = now - max(row.last_seen, self._started)
            if quiet >= timeout:
                woken += self._lost(row.id, now, now - row.last_seen)
        woken += self._stale_handouts(now)
        return woken

    def _lost(self, worker: str, now: float, silent_for: float) -> list[str]:
        why = f"worker {worker} lost: no report for {silent_for:.0f} s"
        with self._store.write() as conn:
            if conn.execute(_REMOVE, {"worker": worker, "now": now}).rowcount == 0:
                return []  # it reported meanwhile, or another server process took it
            woken = recovery.release(conn, worker, why, self._policy)
        log.warning("%s; its tasks: %d requeued", why, len(woken))
        return woken

    def _stale_handouts(self, now: float) -> list[str]:
        """Handed out, never started, and no registered worker to wait for."""
        timeout = self._policy.worker_timeout
        with self._store.read() as conn:
            rows = conn.execute(_OUT_OF_QUEUE).all()
        woken = []
        for row in rows:
            given = (row.doc.get("handout") or {}).get("time")
            if not given or now - datetime.fromisoformat(given).timestamp() < timeout:
                continue
            with self._store.write() as conn:
                worker = (row.doc.get("handout") or {}).get("worker")
                if worker and conn.execute(_WORKER_EXISTS, {"worker": worker}).first():
                    continue  # a live worker: it is lost (or not) by its own timeout
                doc = tasks_service.find(conn, row.id, for_update=True)
                if doc is None or doc["status"] != st.QUEUED or doc.get("handout") != \
                        row.doc.get("handout"):
                    continue
                why = f"handed out to {worker or 'a caller'} at {given} and never started"
                queue_id = recovery.resolve(conn, doc, why, self._policy)
            if queue_id:
                woken.append(queue_id)
        return woken


def reaping(store: Store, policy: RecoveryPolicy,
            wakeups: QueueWakeups) -> contextlib.AbstractAsyncContextManager[None]:
    """Run the reaper for as long as the server serves."""
    return background.running(WorkerReaper(store, policy, wakeups).run(), "worker-reaper")
