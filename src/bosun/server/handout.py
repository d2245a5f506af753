"""Who may run a task: the hand-out record that keeps an abort, a reset or a requeue final.

`queues.get_next_task` records on the task which worker it was handed to (`handout`). From
then on only that worker may start it. When the task is taken back while handed out or running
(stopped, dequeued, reset, or requeued because its worker was lost), the worker that had it is
written down as `revoked_worker`: that worker can neither start the task again nor report an
outcome for it, so a late `tasks.started` can never undo an abort, and an agent that comes
back after being declared lost can not end a task that another worker now runs. A new hand-out
clears the record. `force` overrides all of it, as it does for ClearML's status machine.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bosun.api import errors
from bosun.server import task_status as st
from bosun.server.store.schema import tasks
from bosun.server.timestamps import now_iso

HANDOUT = "handout"
REVOKED = "revoked_worker"

_DOC_FOR_UPDATE = (sa.select(tasks.c.doc).where(tasks.c.id == sa.bindparam("task_id"))
                   .with_for_update())
_SAVE_DOC = tasks.update().where(tasks.c.id == sa.bindparam("task_id"))


def record(conn: Connection, task_id: str, worker: str | None, queue_id: str) -> None:
    """The task was just taken off `queue_id` for `worker` (None: a caller that gave no id)."""
    doc = conn.execute(_DOC_FOR_UPDATE, {"task_id": task_id}).scalar()
    if doc is None:
        return
    now = now_iso()
    doc[HANDOUT] = {"worker": worker, "queue": queue_id, "time": now}
    doc[REVOKED] = None
    if worker:
        # Until the worker's first report, the hand-out is what ties the task to it.
        doc.update(last_worker=worker, last_worker_report=now)
    conn.execute(_SAVE_DOC, {"task_id": task_id, "doc": doc})


def clear(conn: Connection, task_id: str) -> None:
    """The task went back into a queue without being revoked (the agent gave it back)."""
    doc = conn.execute(_DOC_FOR_UPDATE, {"task_id": task_id}).scalar()
    if doc is not None and doc.get(HANDOUT):
        doc[HANDOUT] = None
        conn.execute(_SAVE_DOC, {"task_id": task_id, "doc": doc})


def holder(doc: dict[str, Any]) -> str | None:
    """The worker that has the task now: the one it was handed to, or the one running it."""
    handout = doc.get(HANDOUT) or {}
    if doc.get("status") == st.QUEUED:
        return handout.get("worker")
    if doc.get("status") == st.IN_PROGRESS:
        return doc.get("last_worker")
    return None


def revoke(doc: dict[str, Any]) -> None:
    """Mark `doc` (about to be saved by the caller) as taken back from whoever had it."""
    had = holder(doc)
    if had:
        doc[REVOKED] = had
    doc[HANDOUT] = None


def check_start(doc: dict[str, Any], worker: str | None) -> None:
    """Refuse `tasks.started` (without force) by a worker the task was not handed to."""
    if worker and doc.get(REVOKED) == worker:
        raise errors.InvalidTaskStatus(
            f"task was taken back from worker {worker} ({doc['status']}: "
            f"{doc.get('status_reason') or doc.get('status_message') or 'no reason given'}); "
            "it runs again only after a new enqueue (or use force=true)",
            status=doc["status"], worker=worker)
    if doc["status"] != st.QUEUED:
        return
    handout = doc.get(HANDOUT)
    if not handout:
        raise errors.InvalidTaskStatus(
            "task is queued and was not handed out by queues.get_next_task: dequeue it first "
            "(or use force=true)", status=doc["status"])
    if worker and handout.get("worker") and not _same_agent(handout["worker"], worker):
        raise errors.InvalidTaskStatus(
            f"task was handed to worker {handout['worker']}, not {worker}",
            status=doc["status"], worker=worker)


def _same_agent(handed_to: str, worker: str) -> bool:
    """An agent pulls as its own worker id and may run the task under a sub-worker id of its
    own (`<id>:service:<task>`, `<id>:gpu0,1`), as bosun's and ClearML's agents do."""
    return worker == handed_to or worker.startswith(f"{handed_to}:")


def check_report(doc: dict[str, Any], worker: str | None) -> None:
    """Refuse an outcome (stopped/completed/failed, without force) from a worker that lost the
    task: it must not end a run that is queued again or now belongs to another worker."""
    if worker and doc.get(REVOKED) == worker and holder(doc) != worker:
        raise errors.InvalidTaskStatus(
            f"worker {worker} no longer runs this task (it is {doc['status']}: "
            f"{doc.get('status_reason') or 'taken back'})", status=doc["status"], worker=worker)
