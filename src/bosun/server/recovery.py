"""What happens to the tasks of a worker that is gone: requeue them (to the front of the queue
they came from, within a retry budget) or fail them, always with the reason on the task and one
line in its log.

The budget and policy come from, first to last: the task's tags (`lost_task_retries:N`,
`lost_task_policy:fail|requeue`), its queue's tags or metadata (same keys), the server's
defaults (`bosun server --lost-task-policy/--lost-task-retries`).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bosun.server import handout
from bosun.server import task_status as st
from bosun.server.config import LOST_TASK_POLICIES, RecoveryPolicy
from bosun.server.services import queues as queues_service
from bosun.server.services import tasks as tasks_service
from bosun.server.store.schema import events, queue_entries, queues, tasks
from bosun.server.timestamps import now_iso, now_ms

POLICIES = LOST_TASK_POLICIES
REQUEUE, FAIL = POLICIES
RETRIES_KEY = "lost_task_retries"
POLICY_KEY = "lost_task_policy"
USED_FIELD = "lost_worker_requeues"
LOG_WORKER = "bosun-server"


_HELD_BY = (
    sa.select(tasks.c.id)
    .where(tasks.c.status.in_([st.IN_PROGRESS, st.QUEUED]),
           tasks.c.doc["last_worker"].as_string() == sa.bindparam("worker"))
)
_IN_A_QUEUE = sa.select(queue_entries.c.seq).where(
    queue_entries.c.task == sa.bindparam("task_id")).limit(1)
_QUEUE_DOC = sa.select(queues.c.doc).where(queues.c.id == sa.bindparam("queue_id"))


def _tagged(tags: list[str], key: str) -> str | None:
    for tag in tags:
        if isinstance(tag, str) and tag.startswith(f"{key}:"):
            return tag.split(":", 1)[1].strip()
    return None


def _metadata(queue: dict[str, Any], key: str) -> str | None:
    value = (queue.get("metadata") or {}).get(key)
    if isinstance(value, dict):  # ClearML's form: {key: {"key": ..., "value": ...}}
        value = value.get("value")
    return None if value is None else str(value)


def budget(task: dict[str, Any], queue: dict[str, Any] | None,
           default: RecoveryPolicy) -> tuple[str, int]:
    """(policy, retries) for `task`: its tags, then its queue's tags or metadata, then the
    server's defaults."""
    task_tags = [*(task.get("tags") or []), *(task.get("system_tags") or [])]
    queue_tags = [*(queue.get("tags") or []), *(queue.get("system_tags") or [])] if queue else []

    def setting(key: str) -> str | None:
        return (_tagged(task_tags, key) or _tagged(queue_tags, key)
                or (_metadata(queue, key) if queue else None))

    policy, retries = setting(POLICY_KEY), setting(RETRIES_KEY)
    return (policy if policy in POLICIES else default.policy,
            int(retries) if retries is not None and retries.isdigit() else default.retries)


def add_log_line(conn: Connection, task_id: str, message: str) -> None:
    conn.execute(events.insert().values(
        task=task_id, type="log", timestamp=now_ms(), level="error", worker=LOG_WORKER,
        msg=f"bosun server: {message}"))


def _set_status(doc: dict[str, Any], status: str, reason: str) -> None:
    now = now_iso()
    doc.update(status=status, status_reason=reason, status_message=reason, status_changed=now,
               last_update=now)
    if status == st.FAILED:
        doc["completed"] = now


def release(conn: Connection, worker: str, why: str, default: RecoveryPolicy) -> list[str]:
    """Resolve every task `worker` holds (the worker is gone: `why` says how). Returns the ids
    of the queues that got a task back, for waking their long-polling agents."""
    woken = []
    for (task_id,) in conn.execute(_HELD_BY, {"worker": worker}).all():
        doc = tasks_service.find(conn, task_id, for_update=True)
        if doc is None or handout.holder(doc) != worker:
            continue  # not this worker's after all (a newer hand-out, or back in a queue)
        if doc["status"] == st.QUEUED and conn.execute(_IN_A_QUEUE, {"task_id": task_id}).first():
            continue
        queue_id = resolve(conn, doc, why, default)
        if queue_id:
            woken.append(queue_id)
    return woken


def resolve(conn: Connection, doc: dict[str, Any], why: str,
            default: RecoveryPolicy) -> str | None:
    """Requeue or fail one task whose worker is gone; returns the queue it went back to."""
    handed = doc.get(handout.HANDOUT) or {}
    queue_id = (doc.get("execution") or {}).get("queue") or handed.get("queue")
    queue = conn.execute(_QUEUE_DOC, {"queue_id": queue_id}).scalar() if queue_id else None
    never_started = doc["status"] == st.QUEUED
    handout.revoke(doc)
    policy, retries = budget(doc, queue, default)
    used = int(doc.get(USED_FIELD) or 0)
    if queue is None:
        outcome, back = "failed: the queue it came from no longer exists", False
    elif never_started:
        # Handed out but never started: it did not run, so no retry is charged.
        outcome, back = "put back at the front of its queue (it had not started)", True
    elif policy == FAIL:
        outcome, back = "failed (lost-task policy: fail)", False
    elif used >= retries:
        outcome, back = f"failed: no retries left ({used} of {retries} used)", False
    else:
        doc[USED_FIELD] = used + 1
        outcome, back = f"requeued (attempt {used + 2} of {retries + 1})", True
    reason = f"{why}; {outcome}"
    _set_status(doc, st.QUEUED if back else st.FAILED, reason)
    tasks_service.save(conn, doc)
    if back:
        queues_service.add_entry(conn, str(queue_id), doc["id"], front=True)
    add_log_line(conn, doc["id"], reason)
    return str(queue_id) if back else None
