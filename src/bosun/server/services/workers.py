"""workers.*: agents announce themselves, report what they run and their machine's load."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bosun.api import errors
from bosun.server import handout, recovery, task_status, user_regex
from bosun.server.call import Call
from bosun.server.fields import flag, optional, required, str_list
from bosun.server.services import tasks as tasks_service
from bosun.server.store.schema import (
    projects,
    queue_entries,
    queues,
    runtime_properties,
    workers,
)
from bosun.server.timestamps import now_iso


def _load(conn: Connection, worker_id: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(workers.c.doc).where(workers.c.id == worker_id)).first()
    return dict(row.doc) if row else None


def _queue_ids(conn: Connection, names_or_ids: list[str]) -> list[str]:
    """Agents may give queue names or ids; store ids."""
    ids = []
    for value in names_or_ids:
        row = conn.execute(sa.select(queues.c.id).where(
            sa.or_(queues.c.id == value, queues.c.name == value))).first()
        ids.append(row.id if row else value)
    return ids


def _save(conn: Connection, doc: dict[str, Any], timeout: float) -> None:
    now = time.time()
    values = {"last_seen": now, "expires": now + timeout, "doc": doc}
    updated = conn.execute(workers.update().where(workers.c.id == doc["id"]).values(**values))
    if updated.rowcount == 0:
        conn.execute(workers.insert().values(id=doc["id"], **values))


def live(conn: Connection, worker_id: str | None) -> bool:
    """Whether `worker_id` is a registered worker that has not gone silent."""
    if not worker_id:
        return False
    row = conn.execute(sa.select(workers.c.expires).where(workers.c.id == worker_id)).first()
    return row is not None and row.expires > time.time()


def _new_doc(call: Call, worker_id: str) -> dict[str, Any]:
    now = now_iso()
    return {
        "id": worker_id, "user": {"id": call.identity.user, "name": call.identity.user},
        "company": {"id": call.identity.company, "name": call.identity.company},
        "register_time": now, "last_activity_time": now, "last_report_time": None,
        "queues": [], "tags": [], "task": None, "queue": None, "machine_stats": {},
        "timeout": call.state.recovery.worker_timeout,
    }


def register(call: Call) -> dict[str, Any]:
    """ClearML's `timeout` (seconds without a report before the worker is lost) is honoured;
    without it the server's --worker-timeout applies. bosun extension: `restarted: true` says
    the caller is a new agent process that runs nothing yet, so whatever task the server still
    thinks this worker id holds was lost with the previous process."""
    body = call.body
    worker_id = required(body, "worker", str)
    default = call.state.recovery.worker_timeout
    timeout = optional(body, "timeout", int, 0)
    if timeout < 0:
        raise errors.ValidationError("field 'timeout' must be a number of seconds >= 0",
                                     field="timeout")
    woken: list[str] = []
    with call.store.write() as conn:
        doc = _load(conn, worker_id) or _new_doc(call, worker_id)
        doc["queues"] = _queue_ids(conn, str_list(body, "queues") or [])
        doc["tags"] = str_list(body, "tags") or doc.get("tags", [])
        doc["timeout"] = timeout or default
        doc["last_activity_time"] = now_iso()
        _save(conn, doc, doc["timeout"])
        if flag(body, "restarted"):
            woken = recovery.release(conn, worker_id, f"worker {worker_id} restarted",
                                     call.state.recovery)
    for queue_id in woken:
        call.state.wakeups.notify(queue_id)
    return {"timeout": doc["timeout"]}


def unregister(call: Call) -> dict[str, Any]:
    worker_id = required(call.body, "worker", str)
    with call.store.write() as conn:
        conn.execute(workers.delete().where(workers.c.id == worker_id))
    return {}


def status_report(call: Call) -> dict[str, Any]:
    body = call.body
    worker_id = required(body, "worker", str)
    stats = optional(body, "machine_stats", dict, {})
    task_id = optional(body, "task", str, "")
    with call.store.write() as conn:
        doc = _load(conn, worker_id) or _new_doc(call, worker_id)
        now = now_iso()
        queue = optional(body, "queue", str, "")
        doc.update(last_activity_time=now, last_report_time=now, machine_stats=stats,
                   task=task_id or None, queue=_queue_ids(conn, [queue])[0] if queue else None)
        if body.get("queues") is not None:
            doc["queues"] = _queue_ids(conn, str_list(body, "queues") or [])
        if body.get("tags") is not None:
            doc["tags"] = str_list(body, "tags") or []
        _save(conn, doc, doc.get("timeout") or call.state.recovery.worker_timeout)
        if task_id:
            _mark_task(conn, task_id, worker_id, now)
    return {}


def _mark_task(conn: Connection, task_id: str, worker_id: str, now: str) -> None:
    """The task's last_worker tells `tasks.stop` that a live worker is running it."""
    try:
        task = tasks_service.load(conn, task_id, for_update=True)
    except errors.ApiError:
        return  # a report about a deleted task is not the worker's error
    if task["status"] != task_status.IN_PROGRESS or task.get(handout.REVOKED) == worker_id:
        return  # a late report from a worker the task was taken from claims nothing
    task.update(last_worker=worker_id, last_worker_report=now, last_update=now)
    tasks_service.save(conn, task)


def _queue_entry(conn: Connection, queue_id: str) -> dict[str, Any]:
    """ClearML's QueueEntry: {id, name, num_tasks, next_task: {id, name}}."""
    row = conn.execute(sa.select(queues.c.name).where(queues.c.id == queue_id)).first()
    count = conn.execute(sa.select(sa.func.count()).select_from(queue_entries)
                         .where(queue_entries.c.queue == queue_id)).scalar_one()
    entry: dict[str, Any] = {"id": queue_id, "name": row.name if row else queue_id,
                             "num_tasks": count, "next_task": None}
    first = conn.execute(sa.select(queue_entries.c.task).where(
        queue_entries.c.queue == queue_id).order_by(queue_entries.c.position,
                                                    queue_entries.c.seq).limit(1)).first()
    if first is not None:
        task = tasks_service.find(conn, first.task)
        entry["next_task"] = {"id": first.task, "name": task.get("name") if task else None}
    return entry


def _running_ms(started: Any) -> int:
    """Milliseconds since the task started; 0 for one that has not (as ClearML)."""
    try:
        begun = datetime.fromisoformat(started)
    except (TypeError, ValueError):
        return 0
    return max(int((datetime.now(UTC) - begun).total_seconds() * 1000), 0)


def _public(conn: Connection, doc: dict[str, Any]) -> dict[str, Any]:
    """A worker as ClearML answers it (clearml's Worker model): `queues` and `queue` are
    QueueEntry objects, `task` a CurrentTaskEntry {id, name, running_time (ms),
    last_iteration}, `project` the running task's {id, name}. The ids are what is stored."""
    out = dict(doc)
    out["queues"] = [_queue_entry(conn, q) for q in doc.get("queues") or []
                     if isinstance(q, str)]
    queue = doc.get("queue")
    out["queue"] = _queue_entry(conn, queue) if isinstance(queue, str) and queue else None
    out["project"] = None
    task_id = doc.get("task")
    if isinstance(task_id, str) and task_id:
        task = tasks_service.find(conn, task_id)
        if task is None:
            out["task"] = {"id": task_id, "name": None, "running_time": None,
                           "last_iteration": None}
        else:
            out["task"] = {"id": task_id, "name": task.get("name"),
                           "running_time": _running_ms(task.get("started")),
                           "last_iteration": task.get("last_iteration", 0)}
            project_id = task.get("project")
            if project_id:
                row = conn.execute(sa.select(projects.c.name)
                                   .where(projects.c.id == project_id)).first()
                out["project"] = {"id": project_id, "name": row.name if row else None}
    else:
        out["task"] = None
    return out


def get_all(call: Call) -> dict[str, Any]:
    body = call.body
    now = time.time()
    query = sa.select(workers.c.doc).where(workers.c.expires > now).order_by(workers.c.id)
    last_seen = optional(body, "last_seen", int, 0)
    if last_seen > 0:
        query = query.where(workers.c.last_seen >= now - last_seen)
    pattern = user_regex.checked(optional(body, "worker_pattern", str, ""), "worker_pattern")
    with call.store.read() as conn:
        docs = [_public(conn, dict(r.doc)) for r in conn.execute(query)
                if not pattern or user_regex.search(pattern, r.doc["id"])]
    return {"workers": docs}


def get_runtime_properties(call: Call) -> dict[str, Any]:
    worker_id = required(call.body, "worker", str)
    now = time.time()
    with call.store.read() as conn:
        rows = conn.execute(
            sa.select(runtime_properties).where(
                runtime_properties.c.worker == worker_id,
                sa.or_(runtime_properties.c.expires.is_(None),
                       runtime_properties.c.expires > now),
            ).order_by(runtime_properties.c.key)
        )
        props = [{"key": r.key, "value": r.value,
                  "expiry": int(r.expires - now) if r.expires else None} for r in rows]
    return {"runtime_properties": props}


def set_runtime_properties(call: Call) -> dict[str, Any]:
    """Each item: {key, value, expiry}. No expiry: kept until changed; expiry N > 0: gone after
    N seconds; expiry 0: the property is deleted (ClearML's documented way to remove one)."""
    body = call.body
    worker_id = required(body, "worker", str)
    items = required(body, "runtime_properties", list)
    added: list[str] = []
    removed: list[str] = []
    errs: list[dict[str, Any]] = []
    now = time.time()
    with call.store.write() as conn:
        for item in items:
            problem = _property_problem(item)
            if problem:
                errs.append({"item": item, "error": problem})
                continue
            key, expiry = item["key"], item.get("expiry")
            conn.execute(runtime_properties.delete().where(
                runtime_properties.c.worker == worker_id, runtime_properties.c.key == key))
            if expiry == 0:
                removed.append(key)
                continue
            conn.execute(runtime_properties.insert().values(
                worker=worker_id, key=key, value=str(item.get("value", "")),
                expires=now + float(expiry) if expiry else None))
            added.append(key)
    return {"added": added, "removed": removed, "errors": errs}


MAX_PROPERTY_KEY = 512  # its column's size


def _property_problem(item: Any) -> str:
    if not isinstance(item, dict) or not isinstance(item.get("key"), str):
        return "each property needs a string 'key'"
    if len(item["key"]) > MAX_PROPERTY_KEY:
        return f"a property key is at most {MAX_PROPERTY_KEY} characters"
    expiry = item.get("expiry")
    if expiry is not None and (isinstance(expiry, bool) or not isinstance(expiry, int | float)
                               or expiry < 0):
        return "'expiry' must be a number of seconds >= 0 (0 deletes the property)"
    return ""


ACTIONS = {
    "register": register, "unregister": unregister, "status_report": status_report,
    "get_all": get_all, "get_runtime_properties": get_runtime_properties,
    "set_runtime_properties": set_runtime_properties,
}

