"""Regular expressions from callers (`get_all name=...`), run in linear time.

Python's `re` backtracks: `^(a+)+$` against 30 `a`s and a `!` takes seconds, holding the GIL,
so one call froze the whole server. RE2 (google-re2 from PyPI) matches in time linear in the
text, whatever the pattern. It has no backreferences and no lookaround; a pattern that uses
them is refused with a clear message.
"""

from __future__ import annotations

import functools

import re2

from bosun.api import errors

MAX_PATTERN_LENGTH = 1000
# RE2's compiled program for one pattern is bounded too (a{1000}{1000} and the like).
_MAX_MEMORY = 8 << 20


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _MAX_MEMORY
    return options


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re2._Regexp:
    return re2.compile(pattern, _options())


def checked(pattern: str, field: str) -> str:
    """`pattern` if RE2 can run it; InvalidRegex naming `field` otherwise."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise errors.InvalidRegex(
            f"regular expression for {field} is longer than {MAX_PATTERN_LENGTH} characters",
            field=field)
    try:
        _compiled(pattern)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(
            exc.args[0], bytes) else str(exc)
        raise errors.InvalidRegex(
            f"malformed or unsupported regular expression for {field}: {reason} (RE2 syntax: "
            "no backreferences or lookaround)", field=field) from exc
    return pattern


def search(pattern: str, value: str | None) -> bool:
    """True if `pattern` matches somewhere in `value` (SQLite's REGEXP)."""
    if value is None:
        return False
    try:
        return _compiled(pattern).search(value) is not None
    except re2.error:
        return False
