"""One schema per endpoint (pydantic), checked before the handler runs: a field of the wrong
type or size is a 400 naming the field (`field 'script.repository' must be a string`), never a
500 from the store nor a stored value a later call can not read. Strings anywhere in a body,
keys included, must not hold NUL (PostgreSQL can not store it)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticError
from pydantic_core import ErrorDetails

from bosun.api import errors
from bosun.server.schemas import events, others, tasks
from bosun.server.schemas.types import Body

SCHEMAS: dict[str, type[Body]] = {**tasks.SCHEMAS, **events.SCHEMAS, **others.SCHEMAS}
_EVENT = TypeAdapter(events.Event)

_KINDS = {
    "string_type": "a string", "int_type": "an integer", "bool_type": "a boolean",
    "dict_type": "an object", "list_type": "a list", "float_type": "a number",
    "model_type": "an object", "int_from_float": "an integer",
}


def validate(endpoint: str, body: dict[str, Any], *, may_hold_nul: bool = True) -> None:
    """Raise ValidationError (400/12) for the first field of `body` that does not fit.
    `may_hold_nul`: False when the body's JSON text has no `\\u0000` (nothing to look for)."""
    if may_hold_nul:
        no_nul(body)
    schema = SCHEMAS.get(endpoint)
    if schema is not None:
        _check(schema, body)


def event_problem(event: dict[str, Any]) -> str | None:
    """Why one event of a batch can not be stored, or None (NUL is looked for by the caller,
    which knows whether the event's text holds any)."""
    try:
        _EVENT.validate_python(event)
    except PydanticError as exc:
        return describe(exc.errors()[0])
    return None


def no_nul(value: Any) -> None:
    """Raise ValidationError naming the first string (or key) in `value` that holds NUL."""
    _no_nul(value, "")


def _check(schema: type[BaseModel], body: dict[str, Any]) -> None:
    try:
        schema.model_validate(body)
    except PydanticError as exc:
        found = exc.errors()
        raise errors.ValidationError(describe(found[0], found),
                                     field=_path(found[0]["loc"])) from exc


def describe(error: ErrorDetails, others: list[ErrorDetails] | None = None) -> str:
    field = _path(error["loc"])
    kind = error["type"]
    # A value that fits none of a union's members: one error per member, on the same field.
    same = [e for e in others or [] if _path(e["loc"]) == field]
    kinds = [_KINDS[e["type"]] for e in same if e["type"] in _KINDS]
    bounded = [e for e in same if e["type"] not in _KINDS]
    if len(same) > 1 and bounded:  # the right type, out of bounds: say that
        return describe(bounded[0])
    if len(kinds) > 1:
        return f"field '{field}' must be {' or '.join(dict.fromkeys(kinds))}"
    ctx = error.get("ctx") or {}
    if kind in _KINDS:
        return f"field '{field}' must be {_KINDS[kind]}"
    if kind == "string_too_long":
        return f"field '{field}' is longer than {ctx.get('max_length')} characters"
    if kind in ("less_than_equal", "greater_than_equal", "less_than", "greater_than"):
        return f"field '{field}' is out of range ({error['msg'].lower()})"
    return f"field '{field}': {error['msg']}"


def _path(loc: tuple[int | str, ...]) -> str:
    """('script', 'repository') -> script.repository; ('tags', 1) -> tags[1]. The tags pydantic
    adds for a union's members (`int`, `constrained-str`, `list[...]`) are left out."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _is_member_tag(part):
            text += f".{part}" if text else part
    return text or "body"


def _is_member_tag(part: str) -> bool:
    return part in ("int", "str", "float", "bool", "list", "dict") or any(
        c in part for c in "[-")


def _no_nul(value: Any, where: str) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise errors.ValidationError(f"field '{where or 'body'}' holds a NUL character",
                                         field=where)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                raise errors.ValidationError(f"a key of '{where or 'body'}' holds a NUL "
                                             "character", field=where)
            _no_nul(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _no_nul(item, f"{where}[{index}]")
