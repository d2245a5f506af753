"""models.*: trained-model records (a name, a weights URI, the task that made it), as the
clearml SDK registers them from `OutputModel`, framework auto-logging and `Model.query_models`.

bosun stores the record only; the weights stay wherever the URI points.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bosun.api import errors
from bosun.api.ids import new_id
from bosun.server.call import Call
from bosun.server.fields import flag, optional, required, str_list
from bosun.server.filters import where_in, where_name
from bosun.server.projection import project
from bosun.server.store.schema import models, projects
from bosun.server.tags import TagFilter
from bosun.server.timestamps import now_iso

ARCHIVED = "archived"
# Fields a client sets through create / edit / update.
EDITABLE = ("name", "comment", "tags", "system_tags", "framework", "design", "labels", "uri",
            "ready", "project", "parent", "task", "metadata")
ORDER_FIELDS = ("name", "created", "last_update", "framework", "uri", "ready", "user", "id")


# --- storage ---------------------------------------------------------------------------------


def load(conn: Connection, model_id: str) -> dict[str, Any]:
    row = conn.execute(sa.select(models.c.doc).where(models.c.id == model_id)).first()
    if row is None:
        raise errors.InvalidModelId(f"invalid model id: {model_id}", id=model_id)
    return row.doc  # a fresh object per query: the JSON is decoded for every row


def _columns(doc: dict[str, Any]) -> dict[str, Any]:
    return {"name": doc.get("name") or "", "project": doc.get("project"),
            "task": doc.get("task"), "created": doc["created"], "doc": doc}


def insert(conn: Connection, doc: dict[str, Any]) -> None:
    conn.execute(models.insert().values(id=doc["id"], **_columns(doc)))


def save(conn: Connection, doc: dict[str, Any]) -> None:
    doc["last_update"] = now_iso()
    conn.execute(models.update().where(models.c.id == doc["id"]).values(**_columns(doc)))


def _check_project(conn: Connection, project_id: Any) -> None:
    if project_id in (None, ""):
        return
    if not isinstance(project_id, str):
        raise errors.ValidationError("field 'project' must be a string")
    if conn.execute(sa.select(projects.c.id).where(projects.c.id == project_id)).first() is None:
        raise errors.InvalidProjectId(f"invalid project id: {project_id}", id=project_id)


def _metadata(items: Any) -> dict[str, dict[str, Any]]:
    """ClearML takes metadata as a list of {key, type, value} and keeps it keyed by `key`."""
    if isinstance(items, dict):
        items = list(items.values())
    if not isinstance(items, list):
        raise errors.ValidationError("field 'metadata' must be a list of {key, type, value}")
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise errors.ValidationError("each metadata item needs a string 'key'")
        out[item["key"]] = dict(item)
    return out


def _changes(body: dict[str, Any]) -> dict[str, Any]:
    changes = {k: body[k] for k in EDITABLE if k in body and body[k] is not None}
    if "metadata" in changes:
        changes["metadata"] = _metadata(changes["metadata"])
    for key in ("tags", "system_tags"):
        if key in changes:
            changes[key] = str_list(changes, key) or []
    return changes


def new_doc(call: Call, name: str, uri: str) -> dict[str, Any]:
    now = now_iso()
    return {
        "id": new_id(), "name": name, "uri": uri, "comment": "", "tags": [], "system_tags": [],
        "framework": "", "design": {}, "labels": {}, "ready": False, "project": None,
        "parent": None, "task": None, "user": call.identity.user,
        "company": call.identity.company, "created": now, "last_update": now, "metadata": {},
    }


# --- actions ---------------------------------------------------------------------------------


def create(call: Call) -> dict[str, Any]:
    body = call.body
    doc = new_doc(call, required(body, "name", str), required(body, "uri", str))
    doc.update(_changes(body))
    with call.store.write() as conn:
        _check_project(conn, doc.get("project"))
        insert(conn, doc)
    return {"id": doc["id"], "created": True}


def get_by_id(call: Call) -> dict[str, Any]:
    model_id = required(call.body, "model", str)
    with call.store.read() as conn:
        return {"model": load(conn, model_id)}


def get_by_task_id(call: Call) -> dict[str, Any]:
    """The last output model of a task."""
    task_id = required(call.body, "task", str)
    with call.store.read() as conn:
        row = conn.execute(sa.select(models.c.doc).where(models.c.task == task_id)
                           .order_by(models.c.created.desc())).first()
    if row is None:
        raise errors.InvalidModelId(f"no model for task {task_id}", task=task_id)
    return {"model": row.doc}


def _sort_key(field: str) -> Any:
    def key(doc: dict[str, Any]) -> tuple[bool, str]:
        value = doc.get(field)
        return value is None, "" if value is None else str(value)

    return key


def get_all(call: Call) -> dict[str, Any]:
    body = call.body
    query = sa.select(models.c.doc).order_by(models.c.created.desc(), models.c.id)
    query = where_in(query, body, (("id", models.c.id), ("project", models.c.project),
                                   ("task", models.c.task)))
    query = where_name(query, body, models.c.name, sqlite=call.store.is_sqlite,
                       ignore_case=True)
    with call.store.read() as conn:
        docs = [r.doc for r in conn.execute(query)]
    for field in ("tags", "system_tags"):
        wanted = str_list(body, field)
        if wanted:
            tag_filter = TagFilter.parse(wanted)
            docs = [d for d in docs if tag_filter.matches(d.get(field) or [])]
    for field in ("framework", "uri", "user"):
        wanted = str_list(body, field)
        if wanted is not None:
            docs = [d for d in docs if d.get(field) in wanted]
    if body.get("ready") is not None:
        ready = flag(body, "ready")
        docs = [d for d in docs if bool(d.get("ready")) == ready]
    for item in reversed(str_list(body, "order_by") or []):
        field = item.lstrip("-+")
        if field in ORDER_FIELDS:
            docs.sort(key=_sort_key(field), reverse=item.startswith("-"))
    page_size = optional(body, "page_size", int, 0) or optional(body, "size", int, 0)
    if page_size > 0:
        start = max(optional(body, "page", int, 0), 0) * page_size
        docs = docs[start:start + page_size]
    only = str_list(body, "only_fields")
    return {"models": [project(d, only) for d in docs]}


def edit(call: Call) -> dict[str, Any]:
    """`models.edit` and `models.update`: change the given fields."""
    body = call.body
    model_id = required(body, "model", str)
    changes = _changes(body)
    with call.store.write() as conn:
        doc = load(conn, model_id)
        if "project" in changes:
            _check_project(conn, changes["project"])
        doc.update(changes)
        save(conn, doc)
    return {"updated": 1, "fields": changes}


def update_for_task(call: Call) -> dict[str, Any]:
    """Register (or re-point) the output model of a task; older SDKs' way of saving weights."""
    from bosun.server.services import tasks as tasks_service  # tasks imports this module

    body = call.body
    task_id = required(body, "task", str)
    uri = optional(body, "uri", str, "")
    override = optional(body, "override_model_id", str, "")
    if bool(uri) == bool(override):
        raise errors.ValidationError("give exactly one of 'uri' and 'override_model_id'")
    with call.store.write() as conn:
        task = tasks_service.load(conn, task_id, for_update=True)
        created = not override
        if override:
            doc = load(conn, override)
        else:
            doc = new_doc(call, optional(body, "name", str, "") or task.get("name") or "model",
                          uri)
            doc.update(project=task.get("project"), task=task_id)
        for key in ("name", "comment", "tags", "system_tags"):
            if body.get(key) is not None:
                doc[key] = body[key]
        if created:
            insert(conn, doc)
        else:
            save(conn, doc)
        tasks_service.set_model(task, "output", doc["name"], doc["id"])
        iteration = optional(body, "iteration", int, 0)
        if iteration:
            task["last_iteration"] = max(task.get("last_iteration") or 0, iteration)
        tasks_service.save(conn, task)
    return {"id": doc["id"], "created": created, "updated": 0 if created else 1, "fields": {}}


def set_ready(call: Call) -> dict[str, Any]:
    """Publish a model. bosun does not publish the task with it (`publish_task` is ignored)."""
    model_id = required(call.body, "model", str)
    with call.store.write() as conn:
        doc = load(conn, model_id)
        doc["ready"] = True
        save(conn, doc)
    return {"updated": 1, "published_task": None}


def delete(call: Call) -> dict[str, Any]:
    model_id = required(call.body, "model", str)
    with call.store.write() as conn:
        doc = load(conn, model_id)
        conn.execute(models.delete().where(models.c.id == model_id))
    return {"deleted": True, "url": doc.get("uri")}


def add_or_update_metadata(call: Call) -> dict[str, Any]:
    body = call.body
    model_id = required(body, "model", str)
    items = _metadata(required(body, "metadata", list))
    with call.store.write() as conn:
        doc = load(conn, model_id)
        current = {} if flag(body, "replace_metadata") else (doc.get("metadata") or {})
        doc["metadata"] = {**current, **items}
        save(conn, doc)
    return {"updated": 1}


def delete_metadata(call: Call) -> dict[str, Any]:
    body = call.body
    model_id = required(body, "model", str)
    keys = str_list(body, "keys") or []
    with call.store.write() as conn:
        doc = load(conn, model_id)
        metadata = doc.get("metadata") or {}
        doc["metadata"] = {k: v for k, v in metadata.items() if k not in keys}
        save(conn, doc)
    return {"updated": 1}


def _set_archived(call: Call, archived: bool) -> dict[str, Any]:
    ids = str_list(call.body, "ids")
    if not ids:
        raise errors.MissingRequiredFields("missing required field 'ids'", fields=["ids"])
    succeeded, failed = [], []
    with call.store.write() as conn:
        for model_id in ids:
            try:
                doc = load(conn, model_id)
            except errors.ApiError as exc:
                failed.append({"id": model_id, "error": {"codes": [exc.code, exc.subcode],
                                                         "msg": exc.msg, "data": {}}})
                continue
            tags = [t for t in doc.get("system_tags") or [] if t != ARCHIVED]
            doc["system_tags"] = [*tags, ARCHIVED] if archived else tags
            save(conn, doc)
            succeeded.append({"id": model_id, "archived" if archived else "unarchived": True})
    return {"succeeded": succeeded, "failed": failed}


def archive_many(call: Call) -> dict[str, Any]:
    return _set_archived(call, True)


def unarchive_many(call: Call) -> dict[str, Any]:
    return _set_archived(call, False)


ACTIONS = {
    "create": create, "get_by_id": get_by_id, "get_by_task_id": get_by_task_id,
    "get_all": get_all, "edit": edit, "update": edit, "update_for_task": update_for_task,
    "set_ready": set_ready, "delete": delete, "add_or_update_metadata": add_or_update_metadata,
    "delete_metadata": delete_metadata, "archive_many": archive_many,
    "unarchive_many": unarchive_many,
}
