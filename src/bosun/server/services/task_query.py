"""tasks.get_all: ClearML's filters, ordering and paging over the tasks table.

Every key of the body is either a filter bosun applies, a paging or projection control, or one
of the few keys the clearml SDK sends that ClearML Server itself ignores; any other key is
refused with a 400 naming it, so that a filter is never silently dropped (a listing that
ignores its filter returns everything). A key whose value is null is absent (the SDK's
TriggerScheduler sends `name: null`).

Filters (ClearML's forms):
* lists of values: id, status, project, type, user, parent, execution.queue, hyperparams.*,
  runtime.* (one string or a list);
* regular expressions: name, comment; tags and system_tags with `-tag` and `__$` operators;
* times: created, started, completed, last_update, status_changed, last_change, published,
  as `[">=2026-12-05T10:00:00", "<2026-12-06"]`, a single `">2026-..."`, or `[low, high]`;
* numeric ranges `[low, high]` (either may be null): last_iteration,
  last_metrics.<metric md5>.<variant md5>.(value|min_value|max_value);
* `_any_` / `_or_` / `_all_` / `_and_`: `{fields, pattern}` (a case-insensitive regex over
  each field) or `{fields, datetime}` (a time condition on each);
* `search_text`: any of its words in name, id, comment, report, models, script.repository or
  script.entry_point (case-insensitive; ClearML uses a text index over the same fields).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from bosun.api import errors
from bosun.server import user_regex
from bosun.server.call import Call
from bosun.server.fields import flag, optional, str_list
from bosun.server.filters import (
    doc_number,
    doc_path,
    doc_text,
    regex_clause,
    time_clauses,
    where_in,
    where_name,
)
from bosun.server.projection import project
from bosun.server.services.tasks import public
from bosun.server.store.schema import tasks as tasks_table
from bosun.server.tags import TagFilter

C = tasks_table.c
DOC = C.doc
Clause = sa.ColumnElement[bool]

CONTROLS = frozenset({"method", "only_fields", "order_by", "page", "page_size", "size",
                      "scroll_id", "refresh_scroll", "search_hidden"})
# Sent by the clearml SDK (2.1.12) though ClearML Server applies no filter for them: accepted
# and ignored there as here, so that those SDK calls work as they do against ClearML.
IGNORED = {
    "pipeline_project": "PipelineController.get / _get_pipeline_task",
    "task_types": "TriggerScheduler's DatasetTrigger",
}
LIST_COLUMNS = (("id", C.id), ("status", C.status), ("project", C.project), ("type", C.type),
                ("user", C.user_id))
DOC_LISTS = frozenset({"parent", "execution.queue"})
DOC_LIST_PREFIXES = ("hyperparams.", "runtime.")
TIME_COLUMNS = {"created": C.created, "started": C.started, "completed": C.completed,
                "last_update": C.last_update}
TIME_DOC_FIELDS = ("status_changed", "last_change", "published")
TEXT_COLUMNS = {"id": C.id, "name": C.name, "status": C.status, "project": C.project,
                "type": C.type, "user": C.user_id}
MULTI_FIELD = {"_any_": sa.or_, "_or_": sa.or_, "_all_": sa.and_, "_and_": sa.and_}
SEARCH_TEXT_FIELDS = ("name", "id", "comment", "report", "models.input", "models.output",
                      "script.repository", "script.entry_point")
METRIC_VALUES = frozenset({"value", "min_value", "max_value"})
OTHER_FILTERS = frozenset({"name", "comment", "tags", "system_tags", "search_text",
                           "last_iteration"})

ORDER_COLUMNS = {
    "id": C.id, "name": C.name, "status": C.status, "type": C.type, "created": C.created,
    "started": C.started, "completed": C.completed, "last_update": C.last_update,
    "last_change": C.last_update, "project": C.project, "user": C.user_id,
}
NUMERIC_ORDER_FIELDS = frozenset({"last_iteration", "active_duration"})


def _is_metric_field(key: str) -> bool:
    parts = key.split(".")
    return len(parts) == 4 and parts[0] == "last_metrics" and parts[3] in METRIC_VALUES


def _known(key: str) -> bool:
    return (key in CONTROLS or key in IGNORED or key in TIME_COLUMNS or key in DOC_LISTS
            or key in TIME_DOC_FIELDS or key in MULTI_FIELD or key in OTHER_FILTERS
            or any(key == field for field, _ in LIST_COLUMNS)
            or key.startswith(DOC_LIST_PREFIXES) or _is_metric_field(key))


def check_keys(body: dict[str, Any]) -> None:
    for key, value in body.items():
        if value is not None and not _known(key):
            raise errors.ValidationError(
                f"tasks.get_all has no filter '{key}' (known: id, name, status, project, type, "
                "user, parent, tags, system_tags, comment, created, started, completed, "
                "last_update, status_changed, last_change, published, last_iteration, "
                "last_metrics.*, hyperparams.*, runtime.*, execution.queue, search_text, "
                "_any_, _all_)", field=key)


# --- the clauses -----------------------------------------------------------------------------


def _time_column(field: str) -> sa.ColumnElement[Any]:
    column = TIME_COLUMNS.get(field)
    return column if column is not None else doc_text(DOC, (field,))


def _number(value: Any, field: str) -> float | None:
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise errors.ValidationError(f"field '{field}': bounds must be numbers or null", field=field)


def _range(column: sa.ColumnElement[Any], value: Any, field: str) -> Clause:
    """ClearML's range: [low, high], both included; a null low also keeps missing values."""
    if not isinstance(value, list) or len(value) != 2:
        raise errors.ValidationError(f"field '{field}' must be a list [low, high]", field=field)
    low, high = (_number(v, field) for v in value)
    if low is None and high is None:
        raise errors.ValidationError(f"field '{field}': a range needs a lower or an upper "
                                     "bound", field=field)
    clauses = []
    if low is not None:
        clauses.append(column >= low)
    if high is not None:
        clauses.append(column <= high)
    clause = sa.and_(*clauses)
    return clause if low is not None else sa.or_(clause, column.is_(None))


def _text_of(field: str, name: str) -> sa.ColumnElement[Any]:
    column = TEXT_COLUMNS.get(field)
    return column if column is not None else doc_text(DOC, doc_path(field, name))


def _multi_field(key: str, value: Any, sqlite: bool) -> Clause | None:
    if not isinstance(value, dict):
        raise errors.ValidationError(f"field '{key}' must be an object {{fields, pattern}} or "
                                     "{fields, datetime}", field=key)
    fields = str_list(value, "fields") or []
    pattern, when = value.get("pattern"), value.get("datetime")
    if (pattern is None) == (when is None):
        raise errors.ValidationError(f"field '{key}' needs one of 'pattern' and 'datetime'",
                                     field=key)
    if not fields:
        return None  # ClearML: no fields, no condition
    combine: Callable[..., Clause] = MULTI_FIELD[key]
    if pattern is not None:
        if not isinstance(pattern, str):
            raise errors.ValidationError(f"field '{key}.pattern' must be a string",
                                         field=f"{key}.pattern")
        user_regex.checked(pattern, f"{key}.pattern")
        return combine(*(regex_clause(_text_of(f, f"{key}.fields"), pattern, sqlite=sqlite)
                         for f in fields))
    clauses = []
    for field in fields:
        if field not in TIME_COLUMNS and field not in TIME_DOC_FIELDS:
            raise errors.ValidationError(f"field '{key}.fields': '{field}' is not a time field",
                                         field=f"{key}.fields")
        clauses.append(sa.and_(*time_clauses(_time_column(field), when, f"{key}.datetime")))
    return combine(*clauses)


def _search_text(text: str) -> Clause | None:
    words = text.split()
    if not words:
        return None
    columns = [_text_of(f, "search_text") for f in SEARCH_TEXT_FIELDS]
    return sa.or_(*(column.icontains(word, autoescape=True)
                    for word in words for column in columns))


def _doc_in(key: str, values: list[str]) -> Clause:
    return doc_text(DOC, doc_path(key)).in_(values)


def conditions(body: dict[str, Any], *, sqlite: bool) -> list[Clause]:
    """The WHERE clauses of a tasks.get_all body (its keys already checked)."""
    out: list[Clause] = []
    for key, value in body.items():
        if value is None:
            continue
        if key in TIME_COLUMNS or key in TIME_DOC_FIELDS:
            out.extend(time_clauses(_time_column(key), value, key))
        elif key in DOC_LISTS or key.startswith(DOC_LIST_PREFIXES):
            out.append(_doc_in(key, str_list(body, key) or []))
        elif _is_metric_field(key):
            path = doc_path(key)
            out.append(_range(doc_number(DOC, path, sqlite=sqlite), value, key))
        elif key == "last_iteration":
            out.append(_range(doc_number(DOC, (key,), sqlite=sqlite), value, key))
        elif key in MULTI_FIELD:
            clause = _multi_field(key, value, sqlite)
            if clause is not None:
                out.append(clause)
        elif key == "search_text":
            clause = _search_text(optional(body, key, str, ""))
            if clause is not None:
                out.append(clause)
        elif key == "comment":
            pattern = user_regex.checked(optional(body, key, str, ""), key)
            if pattern:
                out.append(regex_clause(doc_text(DOC, ("comment",)), pattern, sqlite=sqlite))
        elif key in ("tags", "system_tags"):
            wanted = str_list(body, key)
            clause = TagFilter.parse(wanted).clause(C.tags if key == "tags"
                                                    else C.system_tags) if wanted else None
            if clause is not None:
                out.append(clause)
    return out


# --- ordering and paging ---------------------------------------------------------------------


def _order_expression(field: str, sqlite: bool) -> sa.ColumnElement[Any] | None:
    column = ORDER_COLUMNS.get(field)
    if column is not None:
        return column
    if field.startswith(("@", "$")):
        return None  # ClearML's text score: bosun's search has no score to order by
    path = doc_path(field, "order_by")
    if path[0] == "last_metrics" or field in NUMERIC_ORDER_FIELDS:
        return doc_number(DOC, path, sqlite=sqlite)
    return doc_text(DOC, path)


def order_by(body: dict[str, Any], sqlite: bool) -> list[sa.ColumnElement[Any]]:
    """ClearML's order: '-' for descending; missing values first ascending and last
    descending (as MongoDB sorts them)."""
    order = []
    for item in str_list(body, "order_by") or []:
        descending = item.startswith("-")
        expression = _order_expression(item.lstrip("-+"), sqlite)
        if expression is not None:
            order.append(expression.desc().nulls_last() if descending
                         else expression.asc().nulls_first())
    return order or [C.created.desc()]


def _offset(body: dict[str, Any]) -> int:
    scroll_id = body.get("scroll_id")
    if scroll_id in (None, ""):
        return max(optional(body, "page", int, 0), 0) * optional(body, "size", int, 0)
    if not isinstance(scroll_id, str) or not scroll_id.isdigit() or len(scroll_id) > 15:
        raise errors.InvalidScrollId(f"invalid scroll id: {scroll_id!r}")
    return int(scroll_id)


def get_all(call: Call) -> dict[str, Any]:
    body = call.body
    check_keys(body)
    sqlite = call.store.is_sqlite
    query = sa.select(DOC)
    query = where_in(query, body, LIST_COLUMNS)
    query = where_name(query, body, C.name, sqlite=sqlite, ignore_case=True)
    query = query.where(*conditions(body, sqlite=sqlite))
    if not flag(body, "search_hidden"):
        query = query.where(~C.system_tags.contains("\x1fhidden\x1f"))
    query = query.order_by(*order_by(body, sqlite), C.id)
    page_size = optional(body, "page_size", int, 0)
    size = optional(body, "size", int, 0)
    scroll: int | None = None
    if page_size > 0:
        query = query.limit(page_size).offset(max(optional(body, "page", int, 0), 0) * page_size)
    elif size > 0:  # ClearML's scrolling: each call with the last scroll_id gets the next size
        start = _offset(body)
        if flag(body, "refresh_scroll"):
            query = query.limit(start + size)
            start = 0
        else:
            query = query.limit(size).offset(start)
        scroll = start
    only = str_list(body, "only_fields")
    with call.store.read() as conn:
        found = [project(public(r.doc), only) for r in conn.execute(query)]
    result: dict[str, Any] = {"tasks": found}
    if scroll is not None:
        result["scroll_id"] = str(scroll + len(found))
    return result


ACTIONS = {"get_all": get_all}
