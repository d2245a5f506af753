"""events.*: reading a task's reports back, and one event as events.add / add_batch send it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StrictStr

from bosun.server.schemas.types import (
    ID_LENGTH,
    SHORT_NAME_LENGTH,
    Body,
    Flag,
    Id,
    Integer,
    Line,
    ManyTasks,
    Number,
    TaskRef,
    Text,
    Timestamp,
)

Metric = Annotated[StrictStr, Field(max_length=SHORT_NAME_LENGTH)]
Cursor = Annotated[StrictStr, Field(max_length=64)] | Integer


class Event(Body):
    """One event (extra fields are kept as sent: plots and images carry more)."""

    task: Id | None = None
    type: Annotated[StrictStr, Field(max_length=64)] | None = None
    timestamp: Timestamp | None = None
    iter: Integer | None = None
    metric: Metric | None = None
    variant: Metric | None = None
    value: Number | None = None
    level: Annotated[StrictStr, Field(max_length=16)] | None = None
    worker: Annotated[StrictStr, Field(max_length=ID_LENGTH)] | None = None
    msg: Text | None = None
    stream: Annotated[StrictStr, Field(max_length=64)] | None = None
    seq: Integer | None = None


class Page(TaskRef):
    scroll_id: Cursor | None = None
    batch_size: Integer | None = None
    navigate_earlier: Flag | None = None
    from_timestamp: Timestamp | None = None
    order: Line | None = None
    event_type: Line | None = None
    metrics: list[Any] | None = None


class ScalarHistogram(TaskRef):
    key: Line | None = None
    samples: Integer | None = None


class Plots(TaskRef):
    iters: Integer | None = None
    scroll_id: Cursor | None = None
    metrics: list[Any] | None = None


class DebugImages(Body):
    metrics: list[Any] | None = None
    iters: Integer | None = None
    scroll_id: Cursor | None = None


SCHEMAS: dict[str, type[Body]] = {
    "events.add": Event,
    "events.add_batch": Body,  # streamed: each event is checked as an Event when it arrives
    "events.get_task_log": Page,
    "events.get_task_events": Page,
    "events.scalar_metrics_iter_histogram": ScalarHistogram,
    "events.get_scalar_metrics_and_variants": TaskRef,
    "events.get_task_single_value_metrics": ManyTasks,
    "events.get_task_plots": Plots,
    "events.debug_images": DebugImages,
    "events.delete_for_task": TaskRef,
}
