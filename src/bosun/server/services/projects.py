"""projects.*: named groups of tasks."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from bosun.api import errors
from bosun.api.ids import new_id
from bosun.server.call import Call
from bosun.server.fields import optional, required, str_list
from bosun.server.filters import where_in, where_name
from bosun.server.projection import project
from bosun.server.store.schema import projects
from bosun.server.timestamps import now_iso


def create(call: Call) -> dict[str, Any]:
    body = call.body
    name = required(body, "name", str).strip()
    if not name:
        raise errors.MissingRequiredFields("missing required field 'name'", fields=["name"])
    now = now_iso()
    doc = {
        "id": new_id(), "name": name, "basename": name.rsplit("/", 1)[-1],
        "description": optional(body, "description", str, ""),
        "tags": str_list(body, "tags") or [], "system_tags": str_list(body, "system_tags") or [],
        "default_output_destination": optional(body, "default_output_destination", str, ""),
        "user": call.identity.user, "company": call.identity.company,
        "created": now, "last_update": now,
    }
    with call.store.write() as conn:
        exists = conn.execute(sa.select(projects.c.id).where(projects.c.name == name)).first()
        if exists is not None:
            raise errors.ExpectedUniqueData(f"a project named '{name}' already exists",
                                            name=name, id=exists.id)
        conn.execute(projects.insert().values(id=doc["id"], name=name, created=now, doc=doc))
    return {"id": doc["id"]}


def get_by_id(call: Call) -> dict[str, Any]:
    project_id = required(call.body, "project", str)
    with call.store.read() as conn:
        row = conn.execute(sa.select(projects.c.doc).where(projects.c.id == project_id)).first()
    if row is None:
        raise errors.InvalidProjectId(f"invalid project id: {project_id}", id=project_id)
    return {"project": row.doc}


def get_all(call: Call) -> dict[str, Any]:
    body = call.body
    query = sa.select(projects.c.doc).order_by(projects.c.created)
    query = where_in(query, body, (("id", projects.c.id),))
    query = where_name(query, body, projects.c.name, sqlite=call.store.is_sqlite)
    page_size = optional(body, "page_size", int, 0)
    if page_size > 0:
        query = query.limit(page_size).offset(max(optional(body, "page", int, 0), 0) * page_size)
    only = str_list(body, "only_fields")
    with call.store.read() as conn:
        return {"projects": [project(r.doc, only) for r in conn.execute(query)]}


def update(call: Call) -> dict[str, Any]:
    """Change a project's name, description, tags or default output destination."""
    body = call.body
    project_id = required(body, "project", str)
    fields: dict[str, Any] = {}
    for key in ("description", "default_output_destination"):
        if body.get(key) is not None:
            fields[key] = optional(body, key, str, "")
    for key in ("tags", "system_tags"):
        value = str_list(body, key)
        if value is not None:
            fields[key] = value
    name = optional(body, "name", str, "").strip()
    with call.store.write() as conn:
        row = conn.execute(sa.select(projects.c.doc).where(projects.c.id == project_id)).first()
        if row is None:
            raise errors.InvalidProjectId(f"invalid project id: {project_id}", id=project_id)
        doc = dict(row.doc)
        if name and name != doc["name"]:
            taken = conn.execute(sa.select(projects.c.id).where(projects.c.name == name)).first()
            if taken is not None:
                raise errors.ExpectedUniqueData(f"a project named '{name}' already exists",
                                                name=name, id=taken.id)
            fields.update(name=name, basename=name.rsplit("/", 1)[-1])
        doc.update(fields, last_update=now_iso())
        conn.execute(projects.update().where(projects.c.id == project_id)
                     .values(name=doc["name"], doc=doc))
    return {"updated": 1, "fields": fields}


ACTIONS = {"create": create, "get_by_id": get_by_id, "get_all": get_all, "update": update}
