"""The filters `get_all` actions share: field values as `IN` lists, `name` as a regex, fields
inside the JSON documents, and ClearML's datetime conditions."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from bosun.api import errors
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
    return query.where(regex_clause(column, name, sqlite=sqlite, ignore_case=ignore_case))


# --- fields inside the JSON document -------------------------------------------------------

MAX_PATH_DEPTH = 8
_BAD_SEGMENT = re.compile(r'["\\\x00-\x1f]')


def doc_path(field: str, name: str | None = None) -> tuple[str, ...]:
    """`a.b.c` as the segments of a path into a document; a malformed one (empty segments,
    quotes, control characters, too deep) is the caller's mistake, answered naming `name`."""
    parts = tuple(field.split("."))
    if (not field or len(parts) > MAX_PATH_DEPTH
            or any(not p or _BAD_SEGMENT.search(p) for p in parts)):
        raise errors.ValidationError(f"field '{name or field}': '{field}' is not a field path",
                                     field=name or field)
    return parts


def doc_text(doc: sa.ColumnElement[Any], path: tuple[str, ...]) -> sa.ColumnElement[str]:
    """The value at `path` as text (a string as itself, an object or list as JSON)."""
    return doc[path].as_string()


def doc_number(doc: sa.ColumnElement[Any], path: tuple[str, ...], *,
               sqlite: bool) -> sa.ColumnElement[float]:
    """The value at `path` if it is a number, else NULL (never a cast error)."""
    if sqlite:
        json_path = "$" + "".join(f'."{p}"' for p in path)
        value = sa.func.json_extract(doc, json_path)
        return sa.case((sa.func.typeof(value).in_(["integer", "real"]), value))
    element = doc[path]
    return sa.case((sa.func.json_typeof(element) == "number", element.as_float()))


def regex_clause(column: sa.ColumnElement[Any], pattern: str, *, sqlite: bool,
                 ignore_case: bool = True) -> sa.ColumnElement[bool]:
    """`pattern` searched in `column` (SQLAlchemy drops `flags` on SQLite, whose REGEXP is
    ours: inline them there)."""
    if not ignore_case:
        return column.regexp_match(pattern)
    return (column.regexp_match(f"(?i){pattern}") if sqlite
            else column.regexp_match(pattern, flags="i"))


# --- times: ClearML's datetime conditions ----------------------------------------------------

_OPERATORS: dict[str, Callable[[Any, str], sa.ColumnElement[bool]]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
}


def parse_time(text: str, field: str) -> datetime:
    """An ISO 8601 time (a date alone, `T` or a space, any offset; none means UTC) or epoch
    seconds."""
    value = text.strip()
    try:
        if re.fullmatch(r"-?\d+(\.\d+)?", value):
            return datetime.fromtimestamp(float(value), UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError) as exc:
        raise errors.ValidationError(
            f"field '{field}': '{text}' is not a time (ISO 8601 or epoch seconds, after an "
            "optional >, >=, < or <=)", field=field) from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _stored(moment: datetime) -> str:
    """A time the way bosun stores them (see timestamps.now_iso): comparable as text."""
    return moment.isoformat(timespec="milliseconds")


def time_clauses(column: sa.ColumnElement[Any], value: Any,
                 field: str) -> list[sa.ColumnElement[bool]]:
    """ClearML's datetime filter: one string or a list, each `>`, `>=`, `<` or `<=` and a
    time; a list of two plain times is the range between them (both included; either may be
    null); a plain time alone is that exact time. Stored times have milliseconds: a bound
    with finer digits is moved to the millisecond that keeps the comparison exact."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise errors.ValidationError(f"field '{field}' must be a time condition or a list of "
                                     "them", field=field)
    if len(items) == 2 and not any(isinstance(i, str) and i.strip()[:1] in "<>"
                                   for i in items if i is not None):
        low, high = items
        if low is None and high is None:
            raise errors.ValidationError(f"field '{field}': a range needs a lower or an upper "
                                         "bound", field=field)
        items = [f">={low}" if low is not None else None,
                 f"<={high}" if high is not None else None]
    clauses = []
    for item in items:
        if item is None:
            continue
        if not isinstance(item, str):
            raise errors.ValidationError(f"field '{field}' must hold strings", field=field)
        text = item.strip()
        op = next((o for o in (">=", "<=", ">", "<") if text.startswith(o)), "")
        moment = parse_time(text[len(op):], field)
        bound = _stored(moment)
        finer = moment.microsecond % 1000 != 0
        if not op:
            clauses.append(column == bound if not finer else sa.false())
        elif finer and op in (">", ">="):
            clauses.append(column > bound)  # x >= 10.1235 <=> x > 10.123 for whole ms
        elif finer:
            clauses.append(column <= bound)  # x < 10.1235 <=> x <= 10.123
        else:
            clauses.append(_OPERATORS[op](column, bound))
    return clauses
