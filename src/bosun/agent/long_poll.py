"""A long poll for the next task that a stop signal never waits for.

`queues.get_next_task` with `wait_sec` runs in a helper thread; when the agent is told to stop
meanwhile, the caller returns at once and the poll is abandoned. An abandoned poll is harmless:
the server hands nothing to a caller that hung up (the agent exits), and a task that still
arrives is given back (`give_back`, which puts it at the front of its queue).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from bosun.client import Session


def next_task(session: Session, body: dict[str, Any], timeout: float,
              stopping: threading.Event, give_back: Callable[[str, str], None]
              ) -> dict[str, Any]:
    """The answer of `queues.get_next_task` (raised errors included), or {} once `stopping` is
    set."""
    outcome: dict[str, Any] = {}
    lock = threading.Lock()
    done = threading.Event()

    def poll() -> None:
        try:
            outcome["data"] = session.call("queues.get_next_task", body, timeout=timeout)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc
        with lock:
            done.set()
            abandoned = outcome.get("abandoned", False)
        data = outcome.get("data") or {}
        if abandoned and data.get("entry"):
            give_back(data["entry"]["task"], data.get("queue") or body["queue"])

    threading.Thread(target=poll, name="long-poll", daemon=True).start()
    while not done.wait(0.1):
        if stopping.is_set():
            with lock:
                if not done.is_set():
                    outcome["abandoned"] = True
                    return {}
    if "error" in outcome:
        raise outcome["error"]
    return outcome["data"]
