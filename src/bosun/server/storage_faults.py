"""A database that can not take a write (the disk is full, the file or disk is read-only, an
I/O error) is a fault of the server's machine, not of the call: the caller is told what
happened in words it can act on (500, which agents retry until the fault is cleared: nothing
they owe is lost), the log says it once a minute rather than a traceback per call, and the
server stays up and works again as soon as the fault is gone."""

from __future__ import annotations

import logging
import threading
import time

import sqlalchemy as sa

log = logging.getLogger("bosun.server")

_KINDS = (
    # (words in the driver's message, what the caller is told)
    (("database or disk is full", "no space left on device", "could not extend file",
      "disk full"),
     "the server's database is full: free space on the disk that holds it (nothing was "
     "stored; the call can be repeated once there is room)"),
    (("readonly database", "read-only file system", "read-only transaction"),
     "the server's database is read-only (its file, folder or disk can not be written; "
     "nothing was stored)"),
    (("disk i/o error", "input/output error", "could not write"),
     "the server's database had an I/O error writing to its disk (nothing was stored)"),
    # After its disk failed, SQLite reads zeroes or nothing and says so in these words.
    (("database disk image is malformed", "file is not a database",
      "unable to open database file"),
     "the server's database can not be read from its disk (an I/O error, a disk gone away "
     "or a damaged file; the call was not carried out)"),
)
LOG_EVERY_SECONDS = 60.0


class _Said:
    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def once_a_while(self, message: str, detail: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(message, -LOG_EVERY_SECONDS) < LOG_EVERY_SECONDS:
                return
            self._last[message] = now
        log.error("%s: %s", message, detail)


_said = _Said()


def describe(exc: BaseException) -> str | None:
    """The caller's message for a storage fault, or None if `exc` is not one."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return None
    detail = str(exc.orig or exc).splitlines()[0] if str(exc.orig or exc) else repr(exc)
    text = detail.lower()
    for words, message in _KINDS:
        if any(word in text for word in words):
            _said.once_a_while(message, detail)
            return message
    return None
