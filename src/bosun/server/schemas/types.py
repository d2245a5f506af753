"""The field types request schemas are made of. Every field is optional here: which fields an
endpoint requires is checked by its handler (ClearML's "missing required field" answers); a
schema says what a field must be when it is given. Sizes are bounded so nothing reaches the
store that a column (or a later reader) can not hold."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr

# Bounds: ids and names fit their columns (PostgreSQL enforces VARCHAR lengths).
ID_LENGTH = 512
NAME_LENGTH = 1024
SHORT_NAME_LENGTH = 512  # queues and projects
TAG_LENGTH = 256
LINE_LENGTH = 64 * 1024  # one-line texts: status reasons, messages, comments' cousins
TEXT_LENGTH = 16 * 1024 * 1024  # long texts: a diff, a comment, a configuration value
BIG = 2**53  # integers a JSON reader anywhere can hold


def _one_or_many(value: Any) -> Any:
    """ClearML takes one string where a list of strings is expected."""
    return [value] if isinstance(value, str) else value


Id = Annotated[StrictStr, Field(max_length=ID_LENGTH)]
Name = Annotated[StrictStr, Field(max_length=NAME_LENGTH)]
ShortName = Annotated[StrictStr, Field(max_length=SHORT_NAME_LENGTH)]
Line = Annotated[StrictStr, Field(max_length=LINE_LENGTH)]
Text = Annotated[StrictStr, Field(max_length=TEXT_LENGTH)]
Tag = Annotated[StrictStr, Field(max_length=TAG_LENGTH)]
Ids = Annotated[list[Id], BeforeValidator(_one_or_many)]
Tags = Annotated[list[Tag], BeforeValidator(_one_or_many)]
Strings = Annotated[list[Line], BeforeValidator(_one_or_many)]
# ClearML's time conditions (">=2026-12-05T10:00:00", or a [low, high] range with nulls).
Times = Annotated[list[Line | None], BeforeValidator(_one_or_many)]
Flag = StrictBool
Count = Annotated[int, Field(strict=True, ge=0, le=BIG)]
Integer = Annotated[int, Field(strict=True, ge=-BIG, le=BIG)]
Number = Annotated[float, Field(ge=-1e300, le=1e300)]  # ints are numbers too; no bools
Timestamp = Annotated[float, Field(ge=-BIG, le=BIG)]  # milliseconds; fits a BIGINT column
Object = dict[str, Any]
Objects = list[dict[str, Any]]


class Body(BaseModel):
    """A request body: the fields named are checked, any other is let through (the ClearML
    clients send fields bosun does not read)."""

    model_config = ConfigDict(extra="allow", strict=True)


class TaskRef(Body):
    task: Id | None = None


class StatusChange(TaskRef):
    """The task status actions (started, stopped, completed, ...)."""

    force: Flag | None = None
    status_reason: Line | None = None
    status_message: Line | None = None


class Paging(Body):
    page: Integer | None = None
    page_size: Integer | None = None
    size: Integer | None = None
    only_fields: Strings | None = None
    order_by: Strings | None = None


class Listing(Paging):
    """A get_all that filters by id, name (a regex) and tags."""

    id: Ids | None = None
    name: Line | None = None
    tags: Strings | None = None
    system_tags: Strings | None = None


class ManyTasks(Body):
    tasks: Ids | None = None
