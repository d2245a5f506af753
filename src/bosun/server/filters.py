"""The filters `get_all` actions share: field values as `IN` lists, and `name` as a regex."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from bosun.server import user_regex
from bosun.server.fields import optional, str_list


def where_in(query: sa.Select[Any], body: dict[str, Any],
             fields: Iterable[tuple[str, sa.ColumnElement[Any]]]) -> sa.Select[Any]:
    """For each (field, column): a field given in the body keeps the rows whose column is one
    of its values."""
    for field, column in fields:
        values = str_list(body, field)
        if values is not None:
            query = query.where(column.in_(values))
    return query


def where_name(query: sa.Select[Any], body: dict[str, Any], column: sa.ColumnElement[Any],
               *, sqlite: bool, ignore_case: bool = False) -> sa.Select[Any]:
    """The body's `name`, a regular expression (searched, as ClearML does; RE2 syntax, run in
    linear time); a malformed one is the caller's mistake, answered with InvalidRegex."""
    name = optional(body, "name", str, "")
    if not name:
        return query
    user_regex.checked(name, "name")
    if not ignore_case:
        return query.where(column.regexp_match(name))
    # SQLAlchemy drops `flags` on SQLite (our REGEXP is Python's re): inline them there.
    return query.where(column.regexp_match(f"(?i){name}") if sqlite
                       else column.regexp_match(name, flags="i"))
