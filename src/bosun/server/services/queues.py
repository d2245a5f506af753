"""queues.*: named FIFO queues of tasks, and the atomic hand-out to agents."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from anyio import to_thread
from sqlalchemy.engine import Connection

from bosun.api import errors
from bosun.api.ids import new_id
from bosun.server import handout, task_status
from bosun.server.call import Call
from bosun.server.fields import flag, optional, required, str_list
from bosun.server.filters import where_in, where_name
from bosun.server.projection import project
from bosun.server.queue_wakeups import RECHECK_SECONDS, Ticket
from bosun.server.store.schema import queue_entries, queues, tasks
from bosun.server.tags import TagFilter
from bosun.server.timestamps import now_iso

MAX_WAIT_SECONDS = 30.0
HANG_UP_CHECK_SECONDS = 1.0
DEFAULT_QUEUE = "default"


# --- building blocks shared with tasks.* ---------------------------------------------------


# Hot-path statements are built once: building a statement costs more than running it.
_LOAD = sa.select(queues.c.doc).where(queues.c.id == sa.bindparam("queue_id"))
_EXISTING = sa.select(queues.c.id).where(queues.c.id.in_(sa.bindparam("ids", expanding=True)))
_ANY_ENTRY = (sa.select(queue_entries.c.seq)
              .where(queue_entries.c.queue.in_(sa.bindparam("ids", expanding=True))).limit(1))
_INSERT_ENTRY = queue_entries.insert()
_REMOVE_TASK = queue_entries.delete().where(queue_entries.c.task == sa.bindparam("task_id"))
_REMOVE_TASK_FROM = _REMOVE_TASK.where(queue_entries.c.queue == sa.bindparam("queue_id"))
_TASK_STATUS = sa.select(tasks.c.status).where(tasks.c.id == sa.bindparam("task_id"))
_TASK_DOC = sa.select(tasks.c.doc).where(tasks.c.id == sa.bindparam("task_id"))


def _take_statement(skip_locked: bool) -> sa.Delete:
    """Delete the queue's first entry and return it, in one statement."""
    first = (
        sa.select(queue_entries.c.seq)
        .where(queue_entries.c.queue == sa.bindparam("queue_id"))
        .order_by(queue_entries.c.position, queue_entries.c.seq)
        .limit(1)
    )
    if skip_locked:  # PostgreSQL: concurrent callers take different entries without waiting
        first = first.with_for_update(skip_locked=True)
    return (queue_entries.delete().where(queue_entries.c.seq == first.scalar_subquery())
            .returning(queue_entries.c.task, queue_entries.c.added))


_TAKE = {skip: _take_statement(skip) for skip in (False, True)}


def load(conn: Connection, queue_id: str) -> dict[str, Any]:
    row = conn.execute(_LOAD, {"queue_id": queue_id}).first()
    if row is None:
        raise errors.InvalidQueueId(f"invalid queue id: {queue_id}", id=queue_id)
    return dict(row.doc)


def find_by_name(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(queues.c.doc).where(queues.c.name == name)).first()
    return dict(row.doc) if row else None


def insert(conn: Connection, call: Call, name: str, tags: list[str] | None = None,
           system_tags: list[str] | None = None) -> dict[str, Any]:
    if find_by_name(conn, name) is not None:
        raise errors.ExpectedUniqueData(f"a queue named '{name}' already exists", name=name)
    now = now_iso()
    doc = {
        "id": new_id(), "name": name, "user": call.identity.user,
        "company": call.identity.company, "created": now, "last_update": now,
        "tags": tags or [], "system_tags": system_tags or [], "metadata": {},
    }
    conn.execute(queues.insert().values(id=doc["id"], name=name, created=now, doc=doc))
    return doc


def ensure_default(conn: Connection) -> None:
    """ClearML Server always has a queue named `default`; clients rely on it."""
    if find_by_name(conn, DEFAULT_QUEUE) is None:
        now = now_iso()
        doc = {"id": new_id(), "name": DEFAULT_QUEUE, "user": "bosun", "company": "bosun",
               "created": now, "last_update": now, "tags": [], "system_tags": ["default"],
               "metadata": {}}
        conn.execute(queues.insert().values(id=doc["id"], name=DEFAULT_QUEUE, created=now,
                                            doc=doc))


def default_queue(conn: Connection) -> dict[str, Any]:
    for (doc,) in conn.execute(sa.select(queues.c.doc).order_by(queues.c.created)):
        if "default" in doc.get("system_tags", []):
            return dict(doc)
    raise errors.NoDefaultQueue()


def entries(conn: Connection, queue_id: str) -> list[dict[str, str]]:
    rows = conn.execute(
        sa.select(queue_entries.c.task, queue_entries.c.added)
        .where(queue_entries.c.queue == queue_id)
        .order_by(queue_entries.c.position, queue_entries.c.seq)
    )
    return [{"task": r.task, "added": r.added} for r in rows]


def add_entry(conn: Connection, queue_id: str, task_id: str, front: bool = False) -> None:
    """Put the task at the back (or front) of the queue. A queue holds a task at most once:
    an older entry of it (say from queues.add_task before tasks.enqueue) would hand it out
    twice."""
    remove_task_entries(conn, task_id, queue_id)
    # Positions are times: the back of the queue is "now" without reading the queue first.
    position = time.time()
    if front:
        first = conn.execute(sa.select(sa.func.min(queue_entries.c.position))
                             .where(queue_entries.c.queue == queue_id)).scalar()
        position = min(first if first is not None else position, position) - 1.0
    conn.execute(_INSERT_ENTRY, {"queue": queue_id, "task": task_id, "position": position,
                                 "added": now_iso()})


def remove_task_entries(conn: Connection, task_id: str, queue_id: str | None = None) -> int:
    if queue_id is None:
        return conn.execute(_REMOVE_TASK, {"task_id": task_id}).rowcount
    return conn.execute(_REMOVE_TASK_FROM, {"task_id": task_id, "queue_id": queue_id}).rowcount


def pop_next(conn: Connection, queue_id: str, skip_locked: bool) -> dict[str, str] | None:
    """Take the first entry whose task is still queued; entries of other tasks are dropped."""
    while True:
        row = conn.execute(_TAKE[skip_locked], {"queue_id": queue_id}).first()
        if row is None:
            return None
        status = conn.execute(_TASK_STATUS, {"task_id": row.task}).scalar()
        if status == task_status.QUEUED:
            return {"task": row.task, "added": row.added}


def _with_entries(conn: Connection, doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "entries": entries(conn, doc["id"])}


def _touch(conn: Connection, doc: dict[str, Any]) -> None:
    doc["last_update"] = now_iso()
    conn.execute(queues.update().where(queues.c.id == doc["id"]).values(name=doc["name"], doc=doc))


# --- actions ---------------------------------------------------------------------------------


def create(call: Call) -> dict[str, Any]:
    name = required(call.body, "name", str)
    with call.store.write() as conn:
        doc = insert(conn, call, name, str_list(call.body, "tags"),
                     str_list(call.body, "system_tags"))
    return {"id": doc["id"]}


def get_by_id(call: Call) -> dict[str, Any]:
    queue_id = required(call.body, "queue", str)
    with call.store.read() as conn:
        return {"queue": _with_entries(conn, load(conn, queue_id))}


def get_all(call: Call) -> dict[str, Any]:
    body = call.body
    query = sa.select(queues.c.doc).order_by(queues.c.created)
    query = where_in(query, body, (("id", queues.c.id),))
    query = where_name(query, body, queues.c.name, sqlite=call.store.is_sqlite)
    with call.store.read() as conn:
        docs = [_with_entries(conn, dict(r.doc)) for r in conn.execute(query)]
    for field in ("tags", "system_tags"):
        wanted = str_list(body, field)
        if wanted:
            tag_filter = TagFilter.parse(wanted)
            docs = [d for d in docs if tag_filter.matches(d.get(field, []))]
    only = str_list(body, "only_fields")
    return {"queues": [project(d, only) for d in docs]}


def get_num_entries(call: Call) -> dict[str, Any]:
    queue_id = required(call.body, "queue", str)
    with call.store.read() as conn:
        load(conn, queue_id)
        count = conn.execute(sa.select(sa.func.count()).select_from(queue_entries)
                             .where(queue_entries.c.queue == queue_id)).scalar_one()
    return {"num": count}


def get_default(call: Call) -> dict[str, Any]:
    with call.store.read() as conn:
        doc = default_queue(conn)
    return {"id": doc["id"], "name": doc["name"]}


def update(call: Call) -> dict[str, Any]:
    queue_id = required(call.body, "queue", str)
    fields: dict[str, Any] = {}
    with call.store.write() as conn:
        doc = load(conn, queue_id)
        name = optional(call.body, "name", str, "")
        if name and name != doc["name"]:
            if find_by_name(conn, name) is not None:
                raise errors.ExpectedUniqueData(f"a queue named '{name}' already exists")
            fields["name"] = name
        for key in ("tags", "system_tags"):
            value = str_list(call.body, key)
            if value is not None:
                fields[key] = value
        metadata = optional(call.body, "metadata", dict, None)  # type: ignore[arg-type]
        if metadata is not None:
            fields["metadata"] = metadata
        doc.update(fields)
        _touch(conn, doc)
    return {"updated": 1, "fields": fields}


def delete(call: Call) -> dict[str, Any]:
    queue_id = required(call.body, "queue", str)
    with call.store.write() as conn:
        load(conn, queue_id)
        queued = entries(conn, queue_id)
        if queued and not flag(call.body, "force"):
            raise errors.QueueNotEmpty(
                f"queue has {len(queued)} task(s); dequeue them first or use force=true",
                tasks=len(queued),
            )
        for entry in queued:
            _return_to_created(conn, entry["task"])
        conn.execute(queue_entries.delete().where(queue_entries.c.queue == queue_id))
        conn.execute(queues.delete().where(queues.c.id == queue_id))
    return {"deleted": 1}


def _return_to_created(conn: Connection, task_id: str) -> None:
    """A task whose queue is deleted under it goes back to `created`, as ClearML does."""
    row = conn.execute(sa.select(tasks.c.doc).where(tasks.c.id == task_id)).first()
    if row is None or row.doc.get("status") != task_status.QUEUED:
        return
    doc = dict(row.doc)
    now = now_iso()
    doc.update(status=task_status.CREATED, status_reason="queue deleted", status_message="",
               status_changed=now, last_update=now)
    conn.execute(tasks.update().where(tasks.c.id == task_id)
                 .values(status=doc["status"], last_update=now, doc=doc))


def _task_exists(conn: Connection, task_id: str) -> None:
    if conn.execute(sa.select(tasks.c.id).where(tasks.c.id == task_id)).first() is None:
        raise errors.InvalidTaskId(f"invalid task id: {task_id}", id=task_id)


def add_task(call: Call) -> dict[str, Any]:
    queue_id = required(call.body, "queue", str)
    task_id = required(call.body, "task", str)
    with call.store.write() as conn:
        load(conn, queue_id)
        _task_exists(conn, task_id)
        exists = conn.execute(sa.select(queue_entries.c.seq).where(
            queue_entries.c.queue == queue_id, queue_entries.c.task == task_id)).first()
        if exists is None:
            add_entry(conn, queue_id, task_id)
            handout.clear(conn, task_id)  # an agent gave back a task it was handed
    call.state.wakeups.notify(queue_id)
    return {"added": 0 if exists else 1}


def remove_task(call: Call) -> dict[str, Any]:
    queue_id = required(call.body, "queue", str)
    task_id = required(call.body, "task", str)
    with call.store.write() as conn:
        load(conn, queue_id)
        removed = remove_task_entries(conn, task_id, queue_id)
    return {"removed": removed}


def _move(call: Call, front: bool) -> dict[str, Any]:
    queue_id = required(call.body, "queue", str)
    task_id = required(call.body, "task", str)
    with call.store.write() as conn:
        load(conn, queue_id)
        if not remove_task_entries(conn, task_id, queue_id):
            raise errors.TaskNotQueued(f"task {task_id} is not in queue {queue_id}")
        add_entry(conn, queue_id, task_id, front=front)
        order = [e["task"] for e in entries(conn, queue_id)]
    return {"position": order.index(task_id)}


def move_task_to_front(call: Call) -> dict[str, Any]:
    return _move(call, front=True)


def move_task_to_back(call: Call) -> dict[str, Any]:
    return _move(call, front=False)


def _queue_ids(body: dict[str, Any]) -> list[str]:
    # bosun extension: `queues`, a list in priority order, besides ClearML's single `queue`.
    ids = str_list(body, "queues") or str_list(body, "queue")
    if not ids:
        raise errors.MissingRequiredFields("missing required field 'queue'", fields=["queue"])
    return ids


def _has_entries(call: Call, queue_ids: list[str]) -> bool:
    """A read-only look first: an idle agent's poll then never takes the write lock."""
    with call.store.read() as conn:
        existing = set(conn.scalars(_EXISTING, {"ids": queue_ids}))
        for queue_id in queue_ids:
            if queue_id not in existing:
                raise errors.InvalidQueueId(f"invalid queue id: {queue_id}", id=queue_id)
        return conn.execute(_ANY_ENTRY, {"ids": queue_ids}).first() is not None


def _pop_first(call: Call, queue_ids: list[str]) -> dict[str, Any]:
    if not _has_entries(call, queue_ids):
        return {}
    with call.store.write() as conn:
        for queue_id in queue_ids:
            entry = pop_next(conn, queue_id, skip_locked=not call.store.is_sqlite)
            if entry is None:
                continue
            worker = call.worker or optional(call.body, "worker", str, "") or None
            handout.record(conn, entry["task"], worker, queue_id)
            result: dict[str, Any] = {"entry": entry, "queue": queue_id}
            if flag(call.body, "get_task_info"):
                doc = conn.execute(_TASK_DOC, {"task_id": entry["task"]}).scalar() or {}
                result["task_info"] = {"company": doc.get("company"), "user": doc.get("user")}
            return result
    return {}


async def get_next_task(call: Call) -> dict[str, Any]:
    """Hand out the next queued task, once. With `wait_sec` (bosun extension, <= 30 s) wait for
    one to arrive instead of answering empty at once. A caller that hangs up while waiting is
    given nothing, and a task taken for it just as it hung up goes back to the front."""
    queue_ids = _queue_ids(call.body)
    wait = min(max(optional(call.body, "wait_sec", float, 0.0), 0.0), MAX_WAIT_SECONDS)
    deadline = time.monotonic() + wait
    wakeups = call.state.wakeups
    while True:
        ticket = wakeups.register(queue_ids)
        try:
            result = await to_thread.run_sync(_pop_first, call, queue_ids)
            if result:
                if ticket.woken:
                    # The wake-up was meant for a task we did not take: pass it on.
                    for queue_id in queue_ids:
                        wakeups.wake(queue_id)
                if wait and await call.gone():
                    await _put_back(call, result["queue"], result["entry"]["task"])
                    return {}
                return result
            if deadline - time.monotonic() <= 0 or not await _wait(call, ticket, deadline):
                return {}
        finally:
            wakeups.release(ticket)


async def _wait(call: Call, ticket: Ticket, deadline: float) -> bool:
    """Sleep until woken, the re-check time or the deadline; False if the caller hung up."""
    until = min(deadline, time.monotonic() + RECHECK_SECONDS)
    while not ticket.woken:
        left = until - time.monotonic()
        if left <= 0:
            break
        await call.state.wakeups.wait(ticket, min(left, HANG_UP_CHECK_SECONDS))
        if await call.gone():
            return False
    return True


async def _put_back(call: Call, queue_id: str, task_id: str) -> None:
    def put_back() -> None:
        with call.store.write() as conn:
            if conn.execute(_TASK_STATUS, {"task_id": task_id}).scalar() == task_status.QUEUED:
                add_entry(conn, queue_id, task_id, front=True)
                handout.clear(conn, task_id)

    await to_thread.run_sync(put_back)
    call.state.wakeups.wake(queue_id)


ACTIONS = {
    "create": create,
    "get_by_id": get_by_id,
    "get_all": get_all,
    "get_default": get_default,
    "get_num_entries": get_num_entries,
    "update": update,
    "delete": delete,
    "add_task": add_task,
    "remove_task": remove_task,
    "move_task_to_front": move_task_to_front,
    "move_task_to_back": move_task_to_back,
    "get_next_task": get_next_task,
}
