"""tasks.delete: a task, its events and queue entries, and what it made, as ClearML does it.

* the task must be `created` (or archived) unless `force`; with published output models it
  also needs `force`;
* its draft output models (models whose `task` is it, and those in its `models.output`) are
  deleted (`delete_output_models`, default true), except those another task uses as an
  input model; those and the published ones stay, with no `task`; its child tasks' `parent`
  becomes `__DELETED__<id>`, as in ClearML;
* with `return_file_urls` the answer lists the URIs of its output artifacts, deleted models and
  debug images (bosun keeps no files: the clearml SDK deletes them itself).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bosun.api import errors
from bosun.server import event_streams
from bosun.server import task_status as st
from bosun.server.call import Call
from bosun.server.fields import flag, optional, required
from bosun.server.services import models as models_service
from bosun.server.services import queues
from bosun.server.services.tasks import load, public, save
from bosun.server.store.schema import events, models
from bosun.server.store.schema import tasks as tasks_table
from bosun.server.timestamps import now_iso

DELETED_PREFIX = "__DELETED__"
DEBUG_IMAGE = "training_debug_image"


def _output_models(conn: Connection, doc: dict[str, Any]) -> list[dict[str, Any]]:
    linked = [m.get("model") for m in (doc.get("models") or {}).get("output") or []
              if isinstance(m, dict) and isinstance(m.get("model"), str)]
    rows = conn.execute(sa.select(models.c.doc).where(
        sa.or_(models.c.task == doc["id"], models.c.id.in_(linked))))
    return [r.doc for r in rows]


def _used_as_input(conn: Connection, task_id: str, model_ids: set[str]) -> set[str]:
    """The ones of `model_ids` another task has among its input models."""
    if not model_ids:
        return set()
    text = sa.cast(tasks_table.c.doc, sa.Text)
    rows = conn.execute(sa.select(tasks_table.c.doc).where(
        tasks_table.c.id != task_id, sa.or_(*(text.contains(m) for m in model_ids))))
    used: set[str] = set()
    for row in rows:
        for entry in (row.doc.get("models") or {}).get("input") or []:
            if isinstance(entry, dict) and entry.get("model") in model_ids:
                used.add(entry["model"])
    return used


def _children(conn: Connection, task_id: str) -> list[dict[str, Any]]:
    parent = tasks_table.c.doc["parent"].as_string()
    return [r.doc for r in conn.execute(sa.select(tasks_table.c.doc)
                                        .where(parent == task_id))]


def _debug_image_urls(conn: Connection, task_id: str) -> list[str]:
    rows = conn.execute(sa.select(events.c.doc).where(events.c.task == task_id,
                                                      events.c.type == DEBUG_IMAGE))
    return sorted({r.doc["url"] for r in rows
                   if isinstance(r.doc, dict) and isinstance(r.doc.get("url"), str)})


def delete(call: Call) -> dict[str, Any]:
    body = call.body
    task_id = required(body, "task", str)
    force = flag(body, "force")
    delete_models = optional(body, "delete_output_models", bool, True)
    with call.store.write() as conn:
        doc = load(conn, task_id, for_update=True)
        archived = "archived" in doc.get("system_tags", [])
        if doc["status"] != st.CREATED and not archived and not force:
            raise errors.TaskCannotBeDeleted(
                f"task is {doc['status']}: only a created task can be deleted (use force=true)",
                status=doc["status"])
        made = _output_models(conn, doc)
        published = [m for m in made if m.get("ready")]
        if published and not force:
            raise errors.TaskCannotBeDeleted(
                f"task has {len(published)} published output model(s) (use force=true)",
                models=len(published))
        drafts = {m["id"]: m for m in made if not m.get("ready")}
        in_use = _used_as_input(conn, task_id, set(drafts))
        deleted_models, updated_models, model_urls = 0, 0, []
        for model in made:
            if model["id"] in drafts and delete_models and model["id"] not in in_use:
                conn.execute(models.delete().where(models.c.id == model["id"]))
                deleted_models += 1
                if model.get("uri"):
                    model_urls.append(model["uri"])
                continue
            model["task"] = None  # (ClearML: __DELETED__<id>, too long for the column)
            models_service.save(conn, model)
            updated_models += 1
        now = now_iso()
        children = _children(conn, task_id)
        for child in children:
            child.update(parent=DELETED_PREFIX + task_id, last_change=now)
            save(conn, child)
        artifact_urls = sorted({a["uri"] for a in public(doc)["execution"]["artifacts"]
                                if isinstance(a, dict) and a.get("mode", "output") == "output"
                                and isinstance(a.get("uri"), str) and a["uri"]})
        event_urls = _debug_image_urls(conn, task_id)
        queues.remove_task_entries(conn, task_id)
        removed_events = event_streams.delete_for_task(conn, task_id)
        conn.execute(tasks_table.delete().where(tasks_table.c.id == task_id))
    result: dict[str, Any] = {
        "deleted": True, "updated_children": len(children), "updated_models": updated_models,
        "deleted_models": deleted_models, "events": {"deleted": removed_events}}
    if flag(body, "return_file_urls"):
        result["urls"] = {"model_urls": sorted(model_urls), "event_urls": event_urls,
                          "artifact_urls": artifact_urls}
    return result


ACTIONS = {"delete": delete}
