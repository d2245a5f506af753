"""How long the agent keeps trying to tell the server something it owes it (console lines,
a task's outcome): `Patience`, with back-off; and which failures are worth another try."""

from __future__ import annotations

import math
import threading
import time

from bosun.api.errors import ApiError
from bosun.client import ConnectionFailed

FIRST_WAIT_SECONDS = 0.5
LONGEST_WAIT_SECONDS = 5.0
STOP_GRACE_SECONDS = 10.0


def retryable(exc: BaseException) -> bool:
    """The server is away or overloaded (worth another try), rather than refusing the call."""
    if isinstance(exc, ConnectionFailed):
        return True
    return isinstance(exc, ApiError) and (exc.code >= 500 or exc.code in (429, 502, 509))


class Patience:
    """Retry for `seconds` (None: for as long as it takes), cut short to `grace` seconds once
    `stop` is set (the agent is shutting down: what is still owed goes to its outbox)."""

    def __init__(self, seconds: float | None = 0.0, stop: threading.Event | None = None,
                 grace: float = STOP_GRACE_SECONDS) -> None:
        self._deadline = math.inf if seconds is None else time.monotonic() + seconds
        self._stop = stop
        self._grace = grace
        self._stop_seen: float | None = None
        self._delay = FIRST_WAIT_SECONDS

    def wait(self) -> bool:
        """Sleep before the next try; False when it is time to give up."""
        now = time.monotonic()
        if self._stop is not None and self._stop.is_set() and self._stop_seen is None:
            self._stop_seen = now
        limit = self._deadline
        if self._stop_seen is not None:
            limit = min(limit, self._stop_seen + self._grace)
        if now >= limit:
            return False
        time.sleep(min(self._delay, limit - now))
        self._delay = min(self._delay * 2, LONGEST_WAIT_SECONDS)
        return True
