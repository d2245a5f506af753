"""events.*: console lines, scalars and other reports from a running task, and reading them back."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import orjson
import sqlalchemy as sa
from anyio import to_thread
from sqlalchemy.engine import Connection

from bosun.api import errors
from bosun.server import event_streams, schemas
from bosun.server.call import Call
from bosun.server.fields import optional, required, str_list
from bosun.server.services import tasks as tasks_service
from bosun.server.store.schema import events, tasks
from bosun.server.timestamps import now_ms

LOG = "log"
SCALAR = "training_stats_scalar"
PLOT = "plot"
DEBUG_IMAGE = "training_debug_image"
# The SDK reports `report_single_value` as a scalar at this iteration.
SINGLE_VALUE_ITER = -(2**31)
DEFAULT_BATCH = 500
MAX_BATCH = 10_000
MAX_SERIES_POINTS = 10_000
INGEST_GROUP = 5000  # events per transaction while a batch streams in


# --- ingest ----------------------------------------------------------------------------------


async def _event_groups(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[Any]]:
    """The body's events, parsed as they arrive, up to INGEST_GROUP at a time: JSON lines (one
    event per line, split on b"\n" only: a log message may hold other line separators such as
    U+2028). A body that starts with `[` is one JSON list, parsed whole."""
    pending = b""
    whole: list[bytes] | None = None
    items: list[Any] = []
    number = 0
    async for chunk in chunks:
        if whole is not None:
            whole.append(chunk)
            continue
        if not items and number == 0 and (pending + chunk).lstrip()[:1] == b"[":
            whole = [pending, chunk]
            continue
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            number += 1
            _parse_line(line, number, items)
        if len(items) >= INGEST_GROUP:
            yield items
            items = []
    if whole is not None:
        yield _parse_list(b"".join(whole))
        return
    _parse_line(pending, number + 1, items)
    if items:
        yield items


def _parse_line(line: bytes, number: int, into: list[Any]) -> None:
    if line.strip():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            into.append(ValueError(f"line {number} is not valid JSON"))
            return
        into.append(_without_nul(event, number) if b"\\u0000" in line else event)


def _parse_list(raw: bytes) -> list[Any]:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.ValidationError(f"malformed events body: {exc}") from exc
    items = parsed if isinstance(parsed, list) else [parsed]
    if b"\\u0000" in raw:
        items = [_without_nul(event, number) for number, event in enumerate(items, 1)]
    return items


def _without_nul(event: Any, number: int) -> Any:
    """A NUL in a console line (a task printed binary output) becomes U+FFFD rather than
    losing the line; anywhere else it makes the event unstorable (PostgreSQL can not hold it)."""
    if not isinstance(event, dict):
        return event
    if isinstance(event.get("msg"), str):
        event["msg"] = event["msg"].replace("\x00", "\ufffd")
    try:
        schemas.no_nul(event)
    except errors.ApiError as exc:
        return ValueError(f"event {number}: {exc.msg}")
    return event


def _row(event: dict[str, Any]) -> dict[str, Any]:
    kind = event["type"]
    timestamp = event.get("timestamp")
    row: dict[str, Any] = {
        "task": event["task"], "type": kind,
        "timestamp": int(timestamp) if isinstance(timestamp, int | float) else now_ms(),
        "iter": event.get("iter"), "metric": None, "variant": None, "value": None,
        "level": None, "worker": event.get("worker"), "msg": None, "doc": None,
    }
    if kind == LOG:
        msg = event.get("msg", "")
        row.update(level=event.get("level") or "info",
                   msg=msg if isinstance(msg, str) else orjson.dumps(msg).decode())
    else:
        row.update(metric=event.get("metric"), variant=event.get("variant"))
        value = event.get("value")
        if kind == SCALAR and isinstance(value, int | float):
            row["value"] = float(value)
        else:
            row["doc"] = event
    if not isinstance(row["iter"], int):
        row["iter"] = None
    return row


def _metric_key(name: str) -> str:
    # ClearML keys last_metrics by the md5 of the metric and variant names.
    return hashlib.md5(name.encode()).hexdigest()


def _update_last_metrics(conn: Connection, task_id: str, scalars: list[dict[str, Any]]) -> None:
    doc = tasks_service.load(conn, task_id, for_update=True)
    last = doc.get("last_metrics") or {}
    for row in scalars:
        metric, variant = row["metric"] or "", row["variant"] or ""
        entry = last.setdefault(_metric_key(metric), {}).setdefault(
            _metric_key(variant), {"metric": metric, "variant": variant, "value": row["value"],
                                   "min_value": row["value"], "max_value": row["value"]})
        entry["value"] = row["value"]
        entry["min_value"] = min(entry["min_value"], row["value"])
        entry["max_value"] = max(entry["max_value"], row["value"])
        if row["iter"] is not None:
            doc["last_iteration"] = max(doc.get("last_iteration") or 0, row["iter"])
    doc["last_metrics"] = last
    tasks_service.save(conn, doc)


async def add_batch(call: Call) -> dict[str, Any]:
    """A batch of any size, stored INGEST_GROUP events at a time as it arrives (never held
    whole). Each group is its own transaction: a batch cut short leaves the groups before the
    cut stored (numbered events make sending it again safe)."""
    added, errors_info = 0, defaultdict(int)
    assert call.chunks is not None
    async for items in _event_groups(call.chunks):
        result = await to_thread.run_sync(_ingest, call, items)
        added += result["added"]
        for message, count in result["errors_info"].items():
            errors_info[message] += count
    return {"added": added, "errors": sum(errors_info.values()), "errors_info": dict(errors_info)}


def add(call: Call) -> dict[str, Any]:
    """One event as the JSON body (`events.add`); answers as ClearML does, with no data."""
    event = {k: v for k, v in call.body.items() if k != "method"}
    result = _ingest(call, [event])
    if result["errors"]:
        message = next(iter(result["errors_info"]))
        if message.startswith("invalid task id"):
            raise errors.InvalidTaskId(message, id=event.get("task"))
        raise errors.ValidationError(message)
    return {}


def _ingest(call: Call, items: list[Any]) -> dict[str, Any]:
    parsed: list[tuple[dict[str, Any], event_streams.Position]] = []
    errors_info: dict[str, int] = defaultdict(int)
    for item in items:
        if isinstance(item, ValueError):
            errors_info[str(item)] += 1
        elif not isinstance(item, dict) or not item.get("task") or not item.get("type"):
            errors_info["an event needs 'task' and 'type'"] += 1
        elif (problem := schemas.event_problem(item)) is not None:
            errors_info[problem] += 1
        else:
            try:
                parsed.append((_row(item), event_streams.position(item)))
            except ValueError as exc:
                errors_info[str(exc)] += 1
    with call.store.write() as conn:
        task_ids = {r["task"] for r, _ in parsed}
        known = set(conn.scalars(sa.select(tasks.c.id).where(tasks.c.id.in_(task_ids)))) \
            if task_ids else set()
        for row, _ in parsed:
            if row["task"] not in known:
                errors_info[f"invalid task id: {row['task']}"] += 1
        parsed = [(r, where) for r, where in parsed if r["task"] in known]
        rows = event_streams.unseen(conn, call.store.is_sqlite, parsed)
        if rows:
            call.store.bulk_insert(conn, events, rows)
        scalars: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            if row["type"] == SCALAR and row["value"] is not None:
                scalars[row["task"]].append(row)
        for task_id, task_scalars in scalars.items():
            _update_last_metrics(conn, task_id, task_scalars)
    return {"added": len(rows), "errors": sum(errors_info.values()),
            "errors_info": dict(errors_info)}


# --- reading back ----------------------------------------------------------------------------


def _event(row: Any) -> dict[str, Any]:
    if row.doc is not None:
        return dict(row.doc)
    if row.type == LOG:
        return {"type": LOG, "task": row.task, "timestamp": row.timestamp, "level": row.level,
                "worker": row.worker, "msg": row.msg}
    return {"type": row.type, "task": row.task, "timestamp": row.timestamp, "iter": row.iter,
            "metric": row.metric, "variant": row.variant, "value": row.value,
            "worker": row.worker}


def _cursor(body: dict[str, Any]) -> int | None:
    scroll_id = body.get("scroll_id")
    if scroll_id in (None, ""):
        return None
    try:
        cursor = int(scroll_id)
    except (TypeError, ValueError) as exc:
        raise errors.InvalidScrollId(f"invalid scroll id: {scroll_id!r}") from exc
    if not 0 <= cursor < 2**62:
        raise errors.InvalidScrollId(f"invalid scroll id: {scroll_id!r}")
    return cursor


def _batch_size(body: dict[str, Any]) -> int:
    return min(max(optional(body, "batch_size", int, DEFAULT_BATCH), 1), MAX_BATCH)


def _page(call: Call, conditions: list[sa.ColumnElement[bool]], earlier: bool,
          order: str) -> dict[str, Any]:
    """One page of events in seq order; scroll_id is the seq to continue from."""
    body = call.body
    cursor = _cursor(body)
    query = sa.select(events).where(*conditions)
    if cursor is not None:
        query = query.where(events.c.seq < cursor if earlier else events.c.seq > cursor)
    query = query.order_by(events.c.seq.desc() if earlier else events.c.seq.asc())
    query = query.limit(_batch_size(body))
    with call.store.read() as conn:
        tasks_service.load(conn, required(body, "task", str))
        rows = list(conn.execute(query))
        total = conn.execute(sa.select(sa.func.count()).select_from(events)
                             .where(*conditions)).scalar_one()
    next_cursor = rows[-1].seq if rows else cursor
    if (earlier and order == "asc") or (not earlier and order == "desc"):
        rows.reverse()
    return {"events": [_event(r) for r in rows], "returned": len(rows), "total": total,
            "scroll_id": str(next_cursor) if next_cursor is not None else None}


def get_task_log(call: Call) -> dict[str, Any]:
    body = call.body
    task_id = required(body, "task", str)
    earlier = optional(body, "navigate_earlier", bool, True)
    conditions = [events.c.task == task_id, events.c.type == LOG]
    from_ts = optional(body, "from_timestamp", int, 0)
    if from_ts:
        conditions.append(events.c.timestamp < from_ts if earlier else events.c.timestamp > from_ts)
    order = optional(body, "order", str, "desc" if earlier else "asc")
    return _page(call, conditions, earlier, order)


def get_task_events(call: Call) -> dict[str, Any]:
    body = call.body
    task_id = required(body, "task", str)
    conditions = [events.c.task == task_id]
    event_type = optional(body, "event_type", str, "")
    if event_type:
        conditions.append(events.c.type == event_type)
    metrics = body.get("metrics")
    if isinstance(metrics, list) and metrics:
        names = [m.get("metric") for m in metrics if isinstance(m, dict)]
        conditions.append(events.c.metric.in_([n for n in names if n]))
    order = optional(body, "order", str, "asc")
    return _page(call, conditions, earlier=order == "desc", order=order)


def _scalar_rows(call: Call) -> tuple[str, list[Any]]:
    task_id = required(call.body, "task", str)
    with call.store.read() as conn:
        tasks_service.load(conn, task_id)
        rows = list(conn.execute(
            sa.select(events.c.metric, events.c.variant, events.c.iter, events.c.timestamp,
                      events.c.value)
            .where(events.c.task == task_id, events.c.type == SCALAR)
            .order_by(events.c.seq)))
    return task_id, rows


def scalar_metrics_iter_histogram(call: Call) -> dict[str, Any]:
    key = optional(call.body, "key", str, "iter")
    if key not in ("iter", "timestamp", "iso_time"):
        raise errors.ValidationError("field 'key' must be one of: iter, timestamp, iso_time")
    _, rows = _scalar_rows(call)
    # Points arrive in any order; a plot wants them along its x axis.
    rows.sort(key=lambda r: (r.iter if key == "iter" and r.iter is not None else r.timestamp))
    series: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        variant = series[row.metric or ""].setdefault(
            row.variant or "", {"name": row.variant or "", "x": [], "y": []})
        variant["x"].append(row.iter if key == "iter" else row.timestamp)
        variant["y"].append(row.value)
    for variants in series.values():
        for data in variants.values():
            step = max(1, len(data["x"]) // MAX_SERIES_POINTS)
            if step > 1:
                data["x"], data["y"] = data["x"][::step], data["y"][::step]
    return dict(series)


def get_scalar_metrics_and_variants(call: Call) -> dict[str, Any]:
    _, rows = _scalar_rows(call)
    metrics: dict[str, dict[str, Any]] = defaultdict(dict)
    for row in rows:
        metrics[row.metric or ""][row.variant or ""] = {"name": row.variant or ""}
    return {"metrics": dict(metrics)}


def get_task_single_value_metrics(call: Call) -> dict[str, Any]:
    """`Logger.report_single_value` values: the last one per (metric, variant) of each task."""
    task_ids = str_list(call.body, "tasks") or []
    result = []
    with call.store.read() as conn:
        for task_id in task_ids:
            rows = conn.execute(
                sa.select(events.c.metric, events.c.variant, events.c.value,
                          events.c.timestamp)
                .where(events.c.task == task_id, events.c.type == SCALAR,
                       events.c.iter == SINGLE_VALUE_ITER)
                .order_by(events.c.seq))
            values = {(r.metric, r.variant): {"metric": r.metric, "variant": r.variant,
                                              "value": r.value, "timestamp": r.timestamp}
                      for r in rows}
            result.append({"task": task_id, "values": list(values.values())})
    return {"tasks": result}


def _last_iterations(rows: list[Any], iters: int) -> list[Any]:
    """Rows of the `iters` latest iterations of each (metric, variant), in report order."""
    wanted: dict[tuple[str, str], set[Any]] = defaultdict(set)
    by_series: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in rows:
        by_series[(row.metric, row.variant)].append(row.iter)
    for series, its in by_series.items():
        wanted[series] = set(sorted(set(its), key=lambda i: (i is None, i or 0))[-iters:])
    return [r for r in rows if r.iter in wanted[(r.metric, r.variant)]]


def get_task_plots(call: Call) -> dict[str, Any]:
    """Plot events (tables, histograms, scatter, matplotlib) of the latest `iters` iterations.
    One page holds them all: `scroll_id` is returned for the clients' loop and means "done"."""
    body = call.body
    task_id = required(body, "task", str)
    iters = max(optional(body, "iters", int, 1), 1)
    if body.get("scroll_id"):
        return {"plots": [], "returned": 0, "total": 0, "scroll_id": body["scroll_id"]}
    with call.store.read() as conn:
        tasks_service.load(conn, task_id)
        rows = list(conn.execute(sa.select(events).where(
            events.c.task == task_id, events.c.type == PLOT).order_by(events.c.seq)))
    plots = [_event(r) for r in _last_iterations(rows, iters)]
    return {"plots": plots, "returned": len(plots), "total": len(plots), "scroll_id": "done"}


def debug_images(call: Call) -> dict[str, Any]:
    """Debug sample events of the latest `iters` iterations per metric, newest iteration first,
    all on one page (a call with the returned `scroll_id` gets no more)."""
    body = call.body
    metrics = required(body, "metrics", list)
    iters = max(optional(body, "iters", int, 1), 1)
    done = bool(body.get("scroll_id"))
    result = []
    with call.store.read() as conn:
        for item in metrics:
            if not isinstance(item, dict) or not isinstance(item.get("task"), str):
                raise errors.ValidationError("each item of 'metrics' needs a 'task'")
            conditions = [events.c.task == item["task"], events.c.type == DEBUG_IMAGE]
            if item.get("metric"):
                conditions.append(events.c.metric == item["metric"])
            variants = item.get("variants")
            if isinstance(variants, list) and variants:
                conditions.append(events.c.variant.in_(variants))
            rows = [] if done else list(conn.execute(
                sa.select(events).where(*conditions).order_by(events.c.seq)))
            by_iter: dict[Any, list[dict[str, Any]]] = defaultdict(list)
            for row in _last_iterations(rows, iters):
                by_iter[row.iter].append(_event(row))
            ordered = sorted(by_iter, key=lambda i: i or 0, reverse=True)
            result.append({"task": item["task"], "metric": item.get("metric"),
                           "iterations": [{"iter": i, "events": by_iter[i]} for i in ordered]})
    return {"metrics": result, "scroll_id": "done"}


def delete_for_task(call: Call) -> dict[str, Any]:
    task_id = required(call.body, "task", str)
    with call.store.write() as conn:
        tasks_service.load(conn, task_id)
        deleted = event_streams.delete_for_task(conn, task_id)
    return {"deleted": deleted}


ACTIONS = {
    "add_batch": add_batch, "add": add,
    "get_task_single_value_metrics": get_task_single_value_metrics,
    "get_task_plots": get_task_plots, "debug_images": debug_images,
    "get_task_log": get_task_log, "get_task_events": get_task_events,
    "scalar_metrics_iter_histogram": scalar_metrics_iter_histogram,
    "get_scalar_metrics_and_variants": get_scalar_metrics_and_variants,
    "delete_for_task": delete_for_task,
}
