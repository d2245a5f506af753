"""Reading request bodies: required and optional fields with clear errors for wrong types."""

from __future__ import annotations

from typing import Any, TypeVar

from bosun.api import errors

T = TypeVar("T")
_MISSING: Any = object()

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", dict: "an object",
               list: "a list", float: "a number"}


def _check(name: str, value: Any, kind: type[T]) -> T:
    ok = isinstance(value, kind)
    if kind is int and isinstance(value, bool):
        ok = False
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # type: ignore[return-value]
    if not ok:
        raise errors.ValidationError(
            f"field '{name}' must be {_TYPE_NAMES.get(kind, kind.__name__)}",
            field=name,
        )
    return value


def required(body: dict[str, Any], name: str, kind: type[T]) -> T:
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None or value == "":
        raise errors.MissingRequiredFields(f"missing required field '{name}'", fields=[name])
    return _check(name, value, kind)


def optional(body: dict[str, Any], name: str, kind: type[T], default: T) -> T:
    value = body.get(name)
    if value is None:
        return default
    return _check(name, value, kind)


def str_list(body: dict[str, Any], name: str) -> list[str] | None:
    """A field that may be one string or a list of strings (ClearML accepts both)."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise errors.ValidationError(f"field '{name}' must be a string or a list of strings",
                                 field=name)


def flag(body: dict[str, Any], name: str) -> bool:
    return optional(body, name, bool, False)
