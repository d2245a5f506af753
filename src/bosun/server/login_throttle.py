"""Failed logins slowed down: after 10 failed key/secret checks within a minute for one access
key, or 30 from one client address, further checks for it are refused (429, with the seconds
to wait) until the oldest failure leaves the window. A secret check costs
~50 ms of scrypt, so this also keeps a guessing client from eating the server's CPU.

Counted per server process (`--workers N` allows N times as many); bounded in memory.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from bosun.api import errors

MAX_FAILURES_PER_KEY = 10
MAX_FAILURES_PER_ADDRESS = 30
WINDOW_SECONDS = 60.0
MAX_TRACKED = 10_000


class LoginThrottle:
    def __init__(self, per_key: int = MAX_FAILURES_PER_KEY,
                 per_address: int = MAX_FAILURES_PER_ADDRESS,
                 window: float = WINDOW_SECONDS) -> None:
        self._limits = {"key": per_key, "address": per_address}
        self._window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, access_key: str, address: str | None) -> None:
        """Raise TooManyFailedLogins if this key or address failed too often lately."""
        now = time.monotonic()
        with self._lock:
            for kind, who in self._names(access_key, address):
                recent = self._recent(who, now)
                if recent is not None and len(recent) >= self._limits[kind]:
                    wait = max(1, int(recent[0] + self._window - now + 1))
                    raise errors.TooManyFailedLogins(
                        f"too many failed logins {who}; try again in {wait} s",
                        retry_after=wait)

    def failed(self, access_key: str, address: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) >= MAX_TRACKED:
                self._failures.clear()  # bounded: forgetting errs on the side of letting in
            for kind, who in self._names(access_key, address):
                self._failures.setdefault(who, deque(maxlen=self._limits[kind])).append(now)

    def _recent(self, who: str, now: float) -> deque[float] | None:
        recent = self._failures.get(who)
        if recent is None:
            return None
        while recent and recent[0] <= now - self._window:
            recent.popleft()
        if not recent:
            del self._failures[who]
            return None
        return recent

    @staticmethod
    def _names(access_key: str, address: str | None) -> list[tuple[str, str]]:
        names = [("key", f"for access key {access_key!r}")]
        if address:
            names.append(("address", f"from {address}"))
        return names
