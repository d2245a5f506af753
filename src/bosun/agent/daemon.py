"""The worker loop: register, pull a task from the queues (in priority order, or round-robin
with order fairness), run it, report, repeat; machine stats are reported in the background.

SIGTERM or Ctrl-C once: finish the running task, unregister, exit. Twice: abort the running task
first. One failing task never ends the loop.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from bosun.agent.config import Config, ConfigError, load_config
from bosun.agent.machine_stats import MachineStats
from bosun.agent.task_run import TaskRun
from bosun.api.errors import ApiError
from bosun.api.ids import looks_like_id
from bosun.client import ConnectionFailed, Session

log = logging.getLogger("bosun.agent")

LONG_POLL_SECONDS = 5.0
STATUS_REPORT_SECONDS = 5.0


class QueueNotFound(Exception):
    pass


def resolve_queues(session: Session, names: list[str], create: bool) -> list[dict[str, str]]:
    """Queue names or ids -> [{id, name}], in the given (priority) order."""
    resolved = []
    for name in names:
        found = []
        if looks_like_id(name):
            found = session.call("queues.get_all", {"id": [name]})["queues"]
        if not found:
            by_name = session.call("queues.get_all", {"name": f"^{re.escape(name)}$"})["queues"]
            found = [q for q in by_name if q["name"] == name]
        if not found:
            if not create:
                raise QueueNotFound(f"queue '{name}' does not exist on the server "
                                    "(use --create-queue to create it)")
            try:
                created = session.call("queues.create", {"name": name})["id"]
            except ApiError as exc:
                if exc.subcode != 801:  # not "another agent created it just now"
                    raise
                return resolve_queues(session, names, create=False)
            found = [{"id": created, "name": name}]
        resolved.append({"id": found[0]["id"], "name": found[0]["name"]})
    return resolved


class Daemon:
    def __init__(self, session: Session, config: Config, worker_id: str,
                 queues: list[dict[str, str]], *, order_fairness: bool = False,
                 polling_interval: float = 5.0, extra_env: dict[str, str] | None = None,
                 echo: Callable[[str], None] | None = None) -> None:
        self.session = session
        self.config = config
        self.worker_id = worker_id
        self.queues = queues
        self.order_fairness = order_fairness
        self.polling_interval = polling_interval
        self.extra_env = extra_env or {}
        self.echo = echo
        self.stopping = threading.Event()
        self.current: TaskRun | None = None
        self._current_queue: str | None = None
        self._long_poll = False
        self._stats = MachineStats()
        self._stats_lock = threading.Lock()

    # --- lifecycle -----------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: Any) -> None:
            if not self.stopping.is_set():
                log.warning("received %s: finishing the running task, then exiting "
                            "(signal again to abort it)", signal.Signals(signum).name)
                self.stopping.set()
            elif self.current is not None:
                log.warning("aborting the running task")
                self.current.abort("agent shut down")

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def run(self) -> None:
        self._long_poll = self._server_long_polls()
        self.session.call("workers.register", {"worker": self.worker_id,
                                               "queues": [q["id"] for q in self.queues]})
        names = ", ".join(q["name"] for q in self.queues)
        log.info("worker %s listening on %s%s", self.worker_id, names,
                 " (order fairness)" if self.order_fairness else "")
        reporter = threading.Thread(target=self._report_loop, daemon=True)
        reporter.start()
        try:
            while not self.stopping.is_set():
                try:
                    pulled = self._next_task()
                except (ApiError, ConnectionFailed) as exc:
                    log.warning("pulling a task failed: %s; retrying", exc)
                    self.stopping.wait(self.polling_interval)
                    continue
                if pulled is not None:
                    self._run_task(*pulled)
        finally:
            try:
                self.session.call("workers.unregister", {"worker": self.worker_id})
            except (ApiError, ConnectionFailed) as exc:
                log.warning("unregistering failed: %s", exc)
            log.info("worker %s stopped", self.worker_id)

    def _server_long_polls(self) -> bool:
        try:
            return self.session.call("server.info").get("server") == "bosun"
        except (ApiError, ConnectionFailed):
            return False

    # --- pulling -------------------------------------------------------------------------------

    def _served(self, queue_id: str) -> None:
        """With order fairness the queue that just served goes to the back of the line."""
        if self.order_fairness:
            index = next(i for i, q in enumerate(self.queues) if q["id"] == queue_id)
            self.queues = self.queues[index + 1:] + self.queues[:index + 1]

    def _next_task(self) -> tuple[str, str] | None:
        order = list(self.queues)
        if self._long_poll:
            data = self.session.call("queues.get_next_task", {
                "queue": order[0]["id"], "queues": [q["id"] for q in order],
                "wait_sec": LONG_POLL_SECONDS, "get_task_info": True,
            }, timeout=LONG_POLL_SECONDS + 30)
            if data.get("entry"):
                return data["entry"]["task"], data.get("queue") or order[0]["id"]
            return None
        for queue in order:
            data = self.session.call("queues.get_next_task", {"queue": queue["id"]})
            if data.get("entry"):
                return data["entry"]["task"], queue["id"]
        self.stopping.wait(self.polling_interval)
        return None

    # --- running -------------------------------------------------------------------------------

    def _run_task(self, task_id: str, queue_id: str) -> None:
        self._served(queue_id)
        if self.config.agent.reload_config:
            self._reload_config()
        try:
            self.session.call("tasks.started", {"task": task_id,
                                                "status_reason": "pulled by agent"})
        except ApiError as exc:
            log.warning("task %s could not be started (%s); skipping it", task_id, exc)
            return
        log.info("running task %s from queue %s", task_id, queue_id)
        self._current_queue = queue_id
        self.current = TaskRun(self.session, self.config, self.worker_id, task_id,
                               echo=self.echo, extra_env=self.extra_env)
        self._report_status()
        try:
            outcome = self.current.execute()
            log.info("task %s %s%s", task_id, outcome.status,
                     f": {outcome.reason}" if outcome.status != "completed" else "")
        finally:
            self.current = None
            self._current_queue = None
            self._report_status()

    def _reload_config(self) -> None:
        try:
            self.config = load_config(self.config.source)
        except ConfigError as exc:
            log.warning("configuration not reloaded, keeping the previous one: %s", exc)

    def _report_loop(self) -> None:
        while not self.stopping.wait(STATUS_REPORT_SECONDS):
            self._report_status()

    def _report_status(self) -> None:
        current = self.current
        with self._stats_lock:
            stats = self._stats.sample()
        body: dict[str, Any] = {
            "worker": self.worker_id, "timestamp": int(time.time() * 1000),
            "machine_stats": stats, "queues": [q["id"] for q in self.queues],
        }
        if current is not None:
            body["task"] = current.task_id
            if self._current_queue:
                body["queue"] = self._current_queue
        try:
            self.session.call("workers.status_report", body)
        except (ApiError, ConnectionFailed) as exc:
            log.debug("status report failed: %s", exc)
