"""Queue names as a user gives them (`--queue gpu` or an id) -> the server's queue ids, in the
given (priority) order; created on request."""

from __future__ import annotations

import re

from bosun.api.errors import ApiError
from bosun.api.ids import looks_like_id
from bosun.client import Session


class QueueNotFound(Exception):
    pass


def resolve_queues(session: Session, names: list[str], create: bool) -> list[dict[str, str]]:
    """Queue names or ids -> [{id, name}], in the given (priority) order."""
    resolved = []
    for name in names:
        found = []
        if looks_like_id(name):
            found = session.call("queues.get_all", {"id": [name]})["queues"]
        if not found:
            by_name = session.call("queues.get_all", {"name": f"^{re.escape(name)}$"})["queues"]
            found = [q for q in by_name if q["name"] == name]
        if not found:
            if not create:
                raise QueueNotFound(f"queue '{name}' does not exist on the server "
                                    "(use --create-queue to create it)")
            try:
                created = session.call("queues.create", {"name": name})["id"]
            except ApiError as exc:
                if exc.subcode != 801:  # not "another agent created it just now"
                    raise
                return resolve_queues(session, names, create=False)
            found = [{"id": created, "name": name}]
        resolved.append({"id": found[0]["id"], "name": found[0]["name"]})
    return resolved
