"""projects.*: named groups of tasks."""

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
from bosun.server.store.schema import projects
from bosun.server.timestamps import now_iso

SEPARATOR = "/"


def normalized(name: str) -> str:
    """ClearML's project path: parts stripped, empty parts (`a//b`, a trailing `/`) dropped."""
    return SEPARATOR.join(p.strip() for p in name.split(SEPARATOR) if p.strip())


def _new_doc(call: Call, name: str, body: dict[str, Any]) -> dict[str, Any]:
    now = now_iso()
    return {
        "id": new_id(), "name": name, "basename": name.rsplit(SEPARATOR, 1)[-1],
        "description": optional(body, "description", str, ""),
        "tags": str_list(body, "tags") or [], "system_tags": str_list(body, "system_tags") or [],
        "default_output_destination": optional(body, "default_output_destination", str, ""),
        "user": call.identity.user, "company": call.identity.company,
        "created": now, "last_update": now,
    }


def _insert(conn: Connection, doc: dict[str, Any]) -> None:
    conn.execute(projects.insert().values(id=doc["id"], name=doc["name"], created=doc["created"],
                                          doc=doc))


def _id_of(conn: Connection, name: str) -> str | None:
    row = conn.execute(sa.select(projects.c.id).where(projects.c.name == name)).first()
    return row.id if row else None


def _ensure_parents(call: Call, conn: Connection, name: str) -> None:
    """Create the missing projects above `name` (`a` and `a/sub` for `a/sub/leaf`), plain
    ones, as ClearML does; projects.get_all's `parent` and `shallow_search` rely on them."""
    parts = name.split(SEPARATOR)
    for depth in range(1, len(parts)):
        above = SEPARATOR.join(parts[:depth])
        if _id_of(conn, above) is None:
            _insert(conn, _new_doc(call, above, {}))


def create(call: Call) -> dict[str, Any]:
    body = call.body
    name = normalized(required(body, "name", str))
    if not name:
        raise errors.MissingRequiredFields("missing required field 'name'", fields=["name"])
    doc = _new_doc(call, name, body)
    with call.store.write() as conn:
        exists = _id_of(conn, name)
        if exists is not None:
            raise errors.ExpectedUniqueData(f"a project named '{name}' already exists",
                                            name=name, id=exists)
        _ensure_parents(call, conn, name)
        _insert(conn, doc)
    return {"id": doc["id"]}


def _with_tree(doc: dict[str, Any], ids_by_name: dict[str, str]) -> dict[str, Any]:
    """`parent` (the project right above) and `path` (the ids of all those above, top
    first), found from the names, so that a database older than these fields reads the same."""
    parts = doc["name"].split(SEPARATOR)
    path = [ids_by_name[above] for above in
            (SEPARATOR.join(parts[:depth]) for depth in range(1, len(parts)))
            if above in ids_by_name]
    return {**doc, "parent": path[-1] if path else None, "path": path}


def _names(conn: Connection) -> dict[str, str]:
    return {r.name: r.id for r in conn.execute(sa.select(projects.c.id, projects.c.name))}


def get_by_id(call: Call) -> dict[str, Any]:
    project_id = required(call.body, "project", str)
    with call.store.read() as conn:
        row = conn.execute(sa.select(projects.c.doc).where(projects.c.id == project_id)).first()
        if row is None:
            raise errors.InvalidProjectId(f"invalid project id: {project_id}", id=project_id)
        return {"project": _with_tree(row.doc, _names(conn))}


def get_all(call: Call) -> dict[str, Any]:
    """ClearML's `parent` (ids) and `shallow_search`: with both, the direct children of those
    parents; `parent` alone, all their descendants; `shallow_search` alone, the top-level
    projects."""
    body = call.body
    query = sa.select(projects.c.doc).order_by(projects.c.created, projects.c.id)
    query = where_in(query, body, (("id", projects.c.id),))
    query = where_name(query, body, projects.c.name, sqlite=call.store.is_sqlite)
    parents = str_list(body, "parent")
    shallow = flag(body, "shallow_search")
    with call.store.read() as conn:
        ids_by_name = _names(conn)
        docs = [_with_tree(r.doc, ids_by_name) for r in conn.execute(query)]
    if parents is not None and shallow:
        docs = [d for d in docs if d["parent"] in parents]
    elif parents is not None:
        docs = [d for d in docs if set(d["path"]) & set(parents)]
    elif shallow:
        docs = [d for d in docs if d["parent"] is None]
    page_size = optional(body, "page_size", int, 0)
    if page_size > 0:
        start = max(optional(body, "page", int, 0), 0) * page_size
        docs = docs[start:start + page_size]
    only = str_list(body, "only_fields")
    return {"projects": [project(d, only) for d in docs]}


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
    name = normalized(optional(body, "name", str, ""))
    with call.store.write() as conn:
        row = conn.execute(sa.select(projects.c.doc).where(projects.c.id == project_id)).first()
        if row is None:
            raise errors.InvalidProjectId(f"invalid project id: {project_id}", id=project_id)
        doc = dict(row.doc)
        if name and name != doc["name"]:
            taken = _id_of(conn, name)
            if taken is not None:
                raise errors.ExpectedUniqueData(f"a project named '{name}' already exists",
                                                name=name, id=taken)
            if name.startswith(doc["name"] + SEPARATOR):
                raise errors.ValidationError("a project can not move under itself",
                                             field="name")
            _rename_children(conn, doc["name"], name)
            _ensure_parents(call, conn, name)
            fields.update(name=name, basename=name.rsplit(SEPARATOR, 1)[-1])
        doc.update(fields, last_update=now_iso())
        conn.execute(projects.update().where(projects.c.id == project_id)
                     .values(name=doc["name"], doc=doc))
    return {"updated": 1, "fields": fields}


def _rename_children(conn: Connection, old: str, new: str) -> None:
    """As ClearML: the projects under a renamed one move with it."""
    prefix = old + SEPARATOR
    rows = conn.execute(sa.select(projects.c.id, projects.c.doc).where(
        projects.c.name.startswith(prefix, autoescape=True)))
    now = now_iso()
    for row in list(rows):
        doc = dict(row.doc)
        doc.update(name=new + SEPARATOR + doc["name"][len(prefix):], last_update=now)
        conn.execute(projects.update().where(projects.c.id == row.id)
                     .values(name=doc["name"], doc=doc))


ACTIONS = {"create": create, "get_by_id": get_by_id, "get_all": get_all, "update": update}
