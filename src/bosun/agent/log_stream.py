"""Streams a task's console to the server: the task's first output and any line after a quiet
spell are sent at once (a user sees the task start without delay); while output flows, lines are
batched into `events.add_batch` once per `flush_interval`; whatever is left is sent on close.

Progress bars rewrite their line with `\\r`; only the last state of such a line is kept.
Lines are masked before they leave the machine, so no credential reaches the server.

While the server is unreachable, lines are kept (in memory, up to MAX_PENDING_LINES) and sent
in order once it is back; the outage is logged once when it starts and once when it ends. At
the end of a task, `close` keeps trying for as long as it is allowed (see `Patience`).

Every line is also written ahead to the run's `ConsoleJournal` before it is sent, so what the
server has not acknowledged survives a `kill -9` of the agent: the next agent sends it. With a
`stream` (a bosun server), each line carries `stream` and `seq` and the server stores it once,
however often it is sent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from bosun.agent.console_journal import ConsoleJournal
from bosun.agent.delivery import Patience, retryable
from bosun.agent.secret_mask import SecretMasker
from bosun.client import ConnectionFailed, Session

log = logging.getLogger("bosun.agent")

MAX_PENDING_LINES = 200_000
MAX_BATCH = 1000


def collapse_carriage_returns(line: str) -> str:
    """`a\\rb\\rc` -> `c`: what a terminal would show. A trailing `\\r` is ignored."""
    line = line.rstrip("\r")
    return line.rsplit("\r", 1)[-1]


class TaskLog:
    def __init__(self, session: Session, task_id: str, worker: str, masker: SecretMasker,
                 *, flush_interval: float = 0.5, echo: Callable[[str], None] | None = None,
                 journal: ConsoleJournal | None = None, stream: str | None = None) -> None:
        self._session = session
        self._task_id = task_id
        self._worker = worker
        self._masker = masker
        self._echo = echo
        self._flush_interval = flush_interval
        self._journal = journal
        self._stream = stream
        self._seq = 0
        self._pending: deque[dict[str, Any]] = deque()
        self._partial = ""
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._dropped = 0
        self._last_send = 0.0
        self._task_spoke = False
        self._down_since: float | None = None
        self._sent_since_down = 0
        self._thread = threading.Thread(target=self._pump, name=f"log-{task_id[:8]}", daemon=True)
        self._thread.start()

    # --- input -------------------------------------------------------------------------------

    def write(self, line: str, level: str = "info") -> None:
        """One line from the agent itself (progress, errors)."""
        self._append(line.splitlines() or [""], level)

    def feed(self, text: str) -> None:
        """Raw console output of the task process, in any chunking."""
        with self._lock:
            data = self._partial + text
            *lines, self._partial = data.split("\n")
        if not lines:
            return
        self._append([collapse_carriage_returns(line) for line in lines], "info")
        if not self._task_spoke:
            self._task_spoke = True
            self._wake.set()

    def _append(self, lines: list[str], level: str) -> None:
        masked = [self._masker.mask(line) for line in lines]
        if self._echo is not None:
            for line in masked:
                self._echo(line)
        now = int(time.time() * 1000)
        made = [{"type": "log", "task": self._task_id, "level": level, "worker": self._worker,
                 "msg": line, "timestamp": now} for line in masked]
        with self._lock:
            if self._stream is not None:
                for event in made:
                    self._seq += 1
                    event["stream"], event["seq"] = self._stream, self._seq
            if self._journal is not None:  # on disk before it can be sent
                self._journal.append(made)
            for event in made:
                if len(self._pending) >= MAX_PENDING_LINES:
                    self._pending.popleft()
                    self._dropped += 1
                self._pending.append(event)
        if time.monotonic() - self._last_send >= self._flush_interval:
            self._wake.set()

    # --- output ------------------------------------------------------------------------------

    def _pump(self) -> None:
        while not self._closed:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            self.flush(retry_for=0.0)
            if self._down_since is not None and self._journal is not None:
                self._journal.sync()

    def flush(self, retry_for: float = 0.0, patience: Patience | None = None) -> bool:
        """Send what is pending, retrying for `retry_for` seconds (or as `patience` allows);
        returns False if something could not be sent."""
        patience = patience or Patience(retry_for)
        with self._send_lock:
            while True:
                with self._lock:
                    batch = [self._pending[i] for i in range(min(MAX_BATCH, len(self._pending)))]
                if not batch:
                    return True
                try:
                    self._session.add_events(batch)
                except ConnectionFailed as exc:
                    self._outage(exc)
                    if not patience.wait():
                        return False
                    continue
                except Exception as exc:
                    if not retryable(exc):  # the server refuses the batch: never resend it
                        log.warning("task %s: %d log lines refused by the server: %s",
                                    self._task_id, len(batch), exc)
                    else:
                        self._outage(exc)
                        if not patience.wait():
                            return False
                        continue
                self._back(len(batch))
                self._last_send = time.monotonic()
                with self._lock:
                    for _ in batch:
                        self._pending.popleft()
                    if self._journal is not None:
                        self._journal.sent(self._pending)

    def _outage(self, exc: Exception) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._sent_since_down = 0
            log.warning("server unreachable (%s); the console of task %s is kept until it is "
                        "back", exc, self._task_id)

    def _back(self, sent: int) -> None:
        if self._down_since is None:
            return
        self._sent_since_down += sent
        with self._lock:
            left = len(self._pending) - sent
        if left <= 0:
            log.warning("server back after %.0f s; %d log lines of task %s sent",
                        time.monotonic() - self._down_since, self._sent_since_down,
                        self._task_id)
            self._down_since = None

    def close(self, retry_for: float = 30.0, patience: Patience | None = None) -> bool:
        """Send everything, the last unterminated line included, before the task is reported.
        Returns False if some lines could not be sent (they stay in `unsent()`)."""
        with self._lock:
            rest, self._partial = self._partial, ""
        if rest:
            self._append([collapse_carriage_returns(rest)], "info")
        if self._dropped:
            self._append([f"bosun: {self._dropped} log lines were dropped while the server was "
                          "unreachable"], "warning")
        self._closed = True
        self._wake.set()
        self._thread.join(5)
        return self.flush(retry_for=retry_for, patience=patience)

    def unsent(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._pending)

    @property
    def journal(self) -> ConsoleJournal | None:
        return self._journal
