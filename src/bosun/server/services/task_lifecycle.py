"""tasks.* that move a task through its life: enqueue, dequeue, reset, started, stop, the
outcomes (stopped, completed, failed, close, publish) and ping.

Who may start or end a task is checked against its hand-out record (see `handout`): an abort,
a reset or a requeue can not be undone by a worker that had the task before.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from bosun.api import errors
from bosun.server import event_streams, handout, recovery
from bosun.server import task_status as st
from bosun.server.call import Call
from bosun.server.fields import flag, optional, required
from bosun.server.services import models as models_service
from bosun.server.services import queues
from bosun.server.services import workers as workers_service
from bosun.server.services.tasks import (
    DEVELOPMENT_TAG,
    change_status,
    load,
    save,
    without_outputs,
)
from bosun.server.timestamps import now_iso

# --- queueing --------------------------------------------------------------------------------


def _target_queue(conn: Connection, call: Call) -> dict[str, Any]:
    queue_id = optional(call.body, "queue", str, "")
    queue_name = optional(call.body, "queue_name", str, "")
    if queue_id and queue_name:
        raise errors.ValidationError("give either 'queue' or 'queue_name', not both")
    if queue_name:
        return queues.find_by_name(conn, queue_name) or queues.insert(conn, call, queue_name)
    if queue_id:
        return queues.load(conn, queue_id)
    return queues.default_queue(conn)


def enqueue(call: Call) -> dict[str, Any]:
    body = call.body
    task_id = required(body, "task", str)
    with call.store.write() as conn:
        doc = load(conn, task_id, for_update=True)
        queue = _target_queue(conn, call)
        previous = doc["status"]
        execution = {**(doc.get("execution") or {}), "queue": queue["id"]}
        fields = change_status(
            conn, doc, st.QUEUED, force=flag(body, "force"), allow_same=False,
            reason=optional(body, "status_reason", str, ""),
            message=optional(body, "status_message", str, ""),
            enqueue_status=previous, execution=execution,
            **{recovery.USED_FIELD: 0, handout.HANDOUT: None, handout.REVOKED: None},
        )
        queues.add_entry(conn, queue["id"], task_id)
    call.state.wakeups.notify(queue["id"])
    fields["execution.queue"] = queue["id"]
    fields.pop("execution", None)
    return {"queued": 1, "updated": 1, "fields": fields}


def dequeue(call: Call) -> dict[str, Any]:
    body = call.body
    task_id = required(body, "task", str)
    with call.store.write() as conn:
        doc = load(conn, task_id, for_update=True)
        if doc["status"] != st.QUEUED:
            raise errors.InvalidTaskStatus(
                f"task is {doc['status']}, not queued", status=doc["status"])
        queues.remove_task_entries(conn, task_id)
        handout.revoke(doc)
        new_status = optional(body, "new_status", str, "") or doc.get("enqueue_status") \
            or st.CREATED
        if new_status not in st.ALL or new_status == st.QUEUED:
            new_status = st.CREATED
        fields = change_status(
            conn, doc, new_status, force=True,
            reason=optional(body, "status_reason", str, ""),
            message=optional(body, "status_message", str, ""), enqueue_status=None,
        )
    return {"dequeued": 1, "updated": 1, "fields": fields}


def reset(call: Call) -> dict[str, Any]:
    body = call.body
    task_id = required(body, "task", str)
    force = flag(body, "force")
    with call.store.write() as conn:
        doc = load(conn, task_id, for_update=True)
        if doc["status"] == st.PUBLISHED and not force:
            raise errors.InvalidTaskStatus("a published task can not be reset (use force=true)")
        dequeued = queues.remove_task_entries(conn, task_id)
        handout.revoke(doc)
        doc[recovery.USED_FIELD] = 0
        event_streams.delete_for_task(conn, task_id)
        execution = without_outputs(dict(doc.get("execution") or {}))
        execution.pop("queue", None)
        doc["models"] = {**(doc.get("models") or {}), "output": []}
        if flag(body, "clear_all"):
            execution = {}
            doc["script"] = {}
        fields = change_status(
            conn, doc, st.CREATED, force=True, reason="reset", message="reset",
            started=None, completed=None, published=None, enqueue_status=None,
            last_iteration=0, last_metrics={}, runtime={}, last_worker=None,
            last_worker_report=None, execution=execution,
        )
    fields.pop("execution", None)
    return {"updated": 1, "fields": fields, "dequeued": {"removed": dequeued}}


# --- status reports from the agent and the SDK ----------------------------------------------


def started(call: Call) -> dict[str, Any]:
    body = call.body
    task_id = required(body, "task", str)
    with call.store.write() as conn:
        doc = load(conn, task_id, for_update=True)
        force = flag(body, "force")
        if not force:
            handout.check_start(doc, call.worker)
        extra: dict[str, Any] = {handout.HANDOUT: None}
        if not doc.get("started"):
            extra["started"] = now_iso()
        if call.worker:
            extra["last_worker"] = call.worker
        queues.remove_task_entries(conn, task_id)
        fields = change_status(
            conn, doc, st.IN_PROGRESS, force=force,
            reason=optional(body, "status_reason", str, ""),
            message=optional(body, "status_message", str, ""), **extra,
        )
    fields.pop(handout.HANDOUT, None)
    return {"started": 1, "updated": 1, "fields": fields}


def _run_by_live_worker(conn: Connection, doc: dict[str, Any]) -> bool:
    """A registered worker that still reports runs it: only that worker can end the run."""
    return doc["status"] == st.IN_PROGRESS and workers_service.live(conn, doc.get("last_worker"))


def stop(call: Call) -> dict[str, Any]:
    """Abort. A task run by a live worker only gets status_message "stopping": the worker sees
    it, kills the run and reports `stopped`. Anything else is stopped at once: a queued or
    handed-out task, and a task whose worker is lost or was never registered."""
    body = call.body
    task_id = required(body, "task", str)
    force = flag(body, "force")
    with call.store.write() as conn:
        doc = load(conn, task_id, for_update=True)
        is_queued = doc["status"] == st.QUEUED
        development = DEVELOPMENT_TAG in doc.get("system_tags", [])
        reason = optional(body, "status_reason", str, "")
        if not development and _run_by_live_worker(conn, doc):
            fields = change_status(conn, doc, st.IN_PROGRESS, reason=reason,
                                   message="stopping", last_worker=doc.get("last_worker"))
        else:
            if is_queued:
                queues.remove_task_entries(conn, task_id)
            handout.revoke(doc)
            fields = change_status(conn, doc, st.STOPPED, force=force, reason=reason,
                                   message=f"Stopped by {call.identity.user}")
    return {"updated": 1, "fields": fields}


def _outcome(call: Call, new_status: str, **extra: Any) -> dict[str, Any]:
    body = call.body
    task_id = required(body, "task", str)
    force = flag(body, "force")
    with call.store.write() as conn:
        doc = load(conn, task_id, for_update=True)
        if not force:
            handout.check_report(doc, call.worker)
        fields = change_status(
            conn, doc, new_status, force=force,
            reason=optional(body, "status_reason", str, ""),
            message=optional(body, "status_message", str, ""), **extra,
        )
    return {"updated": 1, "fields": fields}


def stopped(call: Call) -> dict[str, Any]:
    return _outcome(call, st.STOPPED)


def completed(call: Call) -> dict[str, Any]:
    return _outcome(call, st.COMPLETED, completed=now_iso())


def failed(call: Call) -> dict[str, Any]:
    return _outcome(call, st.FAILED, completed=now_iso())


def close(call: Call) -> dict[str, Any]:
    return _outcome(call, st.CLOSED)


def publish(call: Call) -> dict[str, Any]:
    """Publish a finished task; with `publish_model` (the default) its output models too."""
    body = call.body
    task_id = required(body, "task", str)
    with call.store.write() as conn:
        doc = load(conn, task_id, for_update=True)
        fields = change_status(
            conn, doc, st.PUBLISHED, force=flag(body, "force"), allow_same=False,
            reason=optional(body, "status_reason", str, ""),
            message=optional(body, "status_message", str, ""), published=now_iso(),
        )
        if optional(body, "publish_model", bool, True):
            for entry in (doc.get("models") or {}).get("output") or []:
                try:
                    model = models_service.load(conn, entry.get("model") or "")
                except errors.ApiError:
                    continue  # a model deleted under its task is not the publisher's error
                model["ready"] = True
                models_service.save(conn, model)
    return {"updated": 1, "fields": fields}


def ping(call: Call) -> dict[str, Any]:
    task_id = required(call.body, "task", str)
    with call.store.write() as conn:
        doc = load(conn, task_id, for_update=True)
        doc["last_update"] = now_iso()
        if call.worker:
            doc["last_worker"] = call.worker
        save(conn, doc)
    return {}


ACTIONS = {
    "enqueue": enqueue, "dequeue": dequeue, "reset": reset, "started": started, "stop": stop,
    "stopped": stopped, "completed": completed, "failed": failed, "close": close,
    "publish": publish, "ping": ping,
}
