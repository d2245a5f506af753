"""The worker loop: register, pull tasks from the queues (in priority order, or round-robin with
order fairness), run them, report, repeat; machine stats are reported in the background.

The loop is a scheduler of concurrent task runs, each a `TaskRun` in its own thread:

- plain mode: one task at a time (the task sees `--gpus`, or no GPU with `--cpu-only`);
- services mode (`services` = N, 0 for no limit): up to N tasks at once, each reported under its
  own worker id `<id>:service:<task>`;
- dynamic GPUs (`dynamic_gpus` = queue id -> (min, max)): as many tasks at once as the free GPUs
  allow, each with the number its queue asks for, under the worker id `<id>:gpu<list>`. Only
  queues whose minimum fits the free GPUs are asked, and the GPUs of a pulled task are locked
  at once (see gpu_allocator), so a task waits in its queue rather than starting short of GPUs,
  and no GPU is given twice, also across daemons.

Before each pull the worker decides which of its queues it may pull from (schedule.decide:
queue tags > runtime property `force` > uptime/downtime); when none, it stays registered and
pulls nothing.

SIGTERM or Ctrl-C once: finish the running tasks, unregister, exit. Twice: abort them first.
One failing task never ends the loop nor touches the other running tasks.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bosun.agent import long_poll, outbox, process_tree, task_records
from bosun.agent.config import Config, ConfigError, load_config
from bosun.agent.delivery import Patience
from bosun.agent.gpu_allocator import GpuLease, GpuLocks
from bosun.agent.gpus import visible_devices_env
from bosun.agent.machine_stats import MachineStats
from bosun.agent.schedule import Clock, Decision, Schedule, decide, force_value
from bosun.agent.task_run import TaskRun

if TYPE_CHECKING:
    from bosun.agent.container_run import ContainerMode
from bosun.api.errors import ApiError
from bosun.client import ConnectionFailed, Session

log = logging.getLogger("bosun.agent")

LONG_POLL_SECONDS = 5.0
# A dynamic daemon asks only the queues whose tasks fit the GPUs free when it asks; a shorter
# poll lets it notice sooner that GPUs were freed and more queues fit.
DYNAMIC_LONG_POLL_SECONDS = 2.0
STATUS_REPORT_SECONDS = 5.0
OVERRIDES_REFRESH_SECONDS = 2.0  # how often queue tags and the force property are read
IDLE_WAIT_SECONDS = 1.0  # between looks while the worker is off
GPU_WAIT_SECONDS = 0.25  # between looks while too few GPUs are free


@dataclass
class Running:
    """A task this daemon runs."""

    task_id: str
    queue_id: str
    worker_id: str  # what it reports as: the daemon's id, or a sub-worker id
    session: Session
    run: TaskRun
    gpus: list[str]
    lease: GpuLease | None
    started: float = field(default_factory=time.time)
    thread: threading.Thread | None = None


class Daemon:
    # --docker / --podman: every task (each service too) runs in its own container
    container: ContainerMode | None = None

    def __init__(self, session: Session, config: Config, worker_id: str,
                 queues: list[dict[str, str]], *, order_fairness: bool = False,
                 polling_interval: float = 5.0, extra_env: dict[str, str] | None = None,
                 echo: Callable[[str], None] | None = None,
                 gpus: list[str] | None = None, cpu_only: bool = False,
                 dynamic_gpus: dict[str, tuple[int, int]] | None = None,
                 services: int | None = None, schedule: Schedule | None = None,
                 now: Clock = datetime.now, gpu_locks: GpuLocks | None = None,
                 on_state: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.session = session
        self.config = config
        self.worker_id = worker_id
        self.queues = queues
        self.order_fairness = order_fairness
        self.polling_interval = polling_interval
        self.extra_env = extra_env or {}
        self.echo = echo
        self.gpus = list(gpus or [])
        self.cpu_only = cpu_only
        self.dynamic_gpus = dynamic_gpus
        self.services = services
        self.schedule = schedule
        self.now = now
        self.on_state = on_state
        if dynamic_gpus is not None and not self.gpus:
            raise ValueError("dynamic GPU allocation needs a list of GPUs")
        uses_locks = bool(self.gpus) and not cpu_only
        self.locks = gpu_locks or (GpuLocks() if uses_locks else None)
        self.stopping = threading.Event()
        self.running: dict[str, Running] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._long_poll = False
        self._stats = MachineStats([] if cpu_only else (self.gpus or None))
        self._stats_lock = threading.Lock()
        # Held while reports are sent and while workers unregister: a report sent after its
        # worker unregistered would register it again.
        self._report_lock = threading.Lock()
        self._unregistered = False
        self._last_stats: dict[str, Any] = {}
        self._decision: Decision | None = None
        self._decision_at = -1e9
        self._props_supported = True
        self._last_force: str | None = None
        self._last_tags: dict[str, list[str]] = {}
        self._waiting_note = ""
        self._threads: list[threading.Thread] = []
        self.report_interval = STATUS_REPORT_SECONDS

    @property
    def mode(self) -> str:
        if self.dynamic_gpus is not None:
            return "dynamic"
        if self.services is not None:
            return "services"
        return "single"

    @property
    def current(self) -> TaskRun | None:
        """The running task in plain mode (any one of them in the other modes)."""
        running = list(self.running.values())
        return running[0].run if running else None

    # --- lifecycle -----------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: Any) -> None:
            # The main thread never waits on `stopping` (it polls it), so setting it here cannot
            # deadlock on the event's lock.
            if not self.stopping.is_set():
                log.warning("received %s: finishing the running task(s), then exiting "
                            "(signal again to abort them)", signal.Signals(signum).name)
                self.stopping.set()
                return
            running = list(self.running.values())
            if running:
                log.warning("aborting %d running task(s)", len(running))
            for item in running:
                item.run.abort("agent shut down")

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def run(self) -> None:
        task_records.reap()  # what an agent killed before left running, before pulling anything
        self._pay_debts()
        self._long_poll = self.session.is_bosun()
        registered = self.session.call("workers.register", {
            "worker": self.worker_id, "queues": [q["id"] for q in self.queues],
            **self._restarted()})
        self._follow_timeout(registered)
        names = ", ".join(q["name"] for q in self.queues)
        log.info("worker %s listening on %s%s%s", self.worker_id, names,
                 " (order fairness)" if self.order_fairness else "", self._mode_text())
        reporter = threading.Thread(target=self._report_loop, name="status-report", daemon=True)
        reporter.start()
        try:
            failing_since: float | None = None
            while not self.stopping.is_set():
                try:
                    self._step()
                except (ApiError, ConnectionFailed) as exc:
                    if failing_since is None:  # said once, not every few seconds
                        failing_since = time.monotonic()
                        log.warning("pulling a task failed: %s; pulling nothing until it "
                                    "works again (retrying every %g s)", exc,
                                    self.polling_interval)
                    self._sleep(self.polling_interval)
                    continue
                if failing_since is not None:
                    log.warning("pulling works again after %.0f s",
                                time.monotonic() - failing_since)
                    failing_since = None
        finally:
            self._publish_state()  # says `stopping` (read by `agent daemon --stop`)
            self._drain()
            with self._report_lock:
                self._unregistered = True
                try:
                    self.session.call("workers.unregister", {"worker": self.worker_id})
                except (ApiError, ConnectionFailed) as exc:
                    log.warning("unregistering failed: %s", exc)
            log.info("worker %s stopped", self.worker_id)

    def _pay_debts(self) -> None:
        """Send what an agent stopped while the server was away still owed it (its outbox),
        before this worker registers: the outcome of a finished task must arrive before the
        server is told that this worker id runs nothing any more."""
        outbox.deliver(self._sub_session, Patience(None, self.stopping, grace=0))

    def _restarted(self) -> dict[str, Any]:
        """bosun servers only (a ClearML server may refuse unknown fields): whatever the server
        thinks a worker id of ours still runs was lost with a previous agent process, so it is
        requeued at once instead of after the worker timeout."""
        return {"restarted": True} if self._long_poll else {}

    def _follow_timeout(self, registered: dict[str, Any]) -> None:
        """Report often enough for the server's worker timeout (4 reports per timeout)."""
        timeout = registered.get("timeout")
        if isinstance(timeout, int | float) and timeout > 0:
            self.report_interval = min(STATUS_REPORT_SECONDS, max(0.5, timeout / 4))

    def _mode_text(self) -> str:
        if self.mode == "dynamic":
            assert self.dynamic_gpus is not None
            wants = ", ".join(
                f"{q['name']}={low}" + (f"-{high}" if high != low else "")
                for q in self.queues for low, high in [self.dynamic_gpus[q["id"]]])
            return f"; dynamic GPUs {','.join(self.gpus)} ({wants})"
        text = ""
        if self.mode == "services":
            text += f"; services mode (up to {self.services or 'any number of'} tasks)"
        if self.cpu_only:
            text += "; CPU only"
        elif self.gpus:
            text += f"; GPUs {','.join(self.gpus)}"
        if self.schedule is not None:
            text += f"; {self.schedule.describe()}"
        return text

    def _drain(self) -> None:
        """Wait for the running tasks (a second signal aborts them meanwhile), then for their
        threads to finish reporting."""
        while True:
            with self._lock:
                if not self.running:
                    break
            self._changed.wait(0.5)
            self._changed.clear()
        for thread in self._threads:
            thread.join(30)
            if thread.is_alive():
                log.warning("%s did not finish; exiting without it", thread.name)


    def _sleep(self, seconds: float) -> None:
        """Sleep until a task ends, the daemon is told to stop, or `seconds` pass."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._changed.wait(min(left, 0.25)):
                self._changed.clear()
                return

    # --- on / off ------------------------------------------------------------------------------

    def decision(self) -> Decision:
        """Which queues may be pulled from now (the server's overrides read every few s)."""
        if time.monotonic() - self._decision_at >= OVERRIDES_REFRESH_SECONDS:
            self._refresh_overrides()
            self._decision_at = time.monotonic()
        ids = [q["id"] for q in self.queues]
        decision = decide(self.schedule, self._last_force, self._last_tags, ids, self.now())
        if decision != self._decision:  # (the queues' order, which fairness rotates, aside)
            names = {q["id"]: q["name"] for q in self.queues}
            summary = decision.summary(names)
            if decision.active:
                log.info("worker %s pulls from %s: %s", self.worker_id,
                         ", ".join(names[q] for q in decision.active), summary)
            else:
                log.info("worker %s is idle (pulls nothing): %s", self.worker_id, summary)
            self._decision = decision
            self._publish_state()
        return decision

    def _refresh_overrides(self) -> None:
        if self._props_supported:
            try:
                props = self.session.call("workers.get_runtime_properties",
                                          {"worker": self.worker_id})
                self._last_force = force_value(props.get("runtime_properties") or [])
            except ApiError as exc:
                if exc.code in (400, 404) and "endpoint" in exc.msg.lower():
                    self._props_supported = False
                log.debug("runtime properties not read: %s", exc)
            except ConnectionFailed as exc:
                log.debug("runtime properties not read: %s", exc)
        try:
            found = self.session.call("queues.get_all", {
                "id": [q["id"] for q in self.queues], "only_fields": ["id", "tags"]})["queues"]
            self._last_tags = {q["id"]: list(q.get("tags") or []) for q in found}
        except (ApiError, ConnectionFailed) as exc:
            log.debug("queue tags not read: %s", exc)

    def _publish_state(self) -> None:
        if self.on_state is None:
            return
        decision = self._decision
        with self._lock:
            running = [{"task": r.task_id, "queue": r.queue_id, "worker": r.worker_id,
                        "gpus": r.gpus, "since": r.started} for r in self.running.values()]
        names = {q["id"]: q["name"] for q in self.queues}
        state: dict[str, Any] = {
            "mode": self.mode, "running": running,
            "schedule": self.schedule.describe() if self.schedule else "",
            "waiting": self._waiting_note, "stopping": self.stopping.is_set(),
        }
        if decision is not None:
            summary = decision.summary(names)
            state.update(state="on" if decision.active else "off", state_reason=summary,
                         active_queues=[names[q] for q in decision.active])
        try:
            self.on_state(state)
        except Exception as exc:  # the state file is informational
            log.debug("state not published: %s", exc)

    # --- pulling -------------------------------------------------------------------------------

    def _step(self) -> None:
        if self.mode != "dynamic" and self._full():
            self._sleep(1.0)
            return
        decision = self.decision()
        active_ids = set(decision.active)
        active = [q for q in self.queues if q["id"] in active_ids]
        if not active:
            self._sleep(IDLE_WAIT_SECONDS)
            return
        if self.mode == "dynamic":
            self._step_dynamic(active)
        else:
            self._step_fixed(active)

    def _full(self) -> bool:
        """Plain mode runs one task at a time, services mode up to `services` (0: no limit)."""
        capacity = (self.services or None) if self.mode == "services" else 1
        with self._lock:
            return capacity is not None and len(self.running) >= capacity

    def _step_fixed(self, active: list[dict[str, str]]) -> None:
        if self.locks is not None and not self.locks.available_shared(self.gpus):
            self._note_waiting(f"GPUs {','.join(self.gpus)} are in use by a dynamic daemon")
            self._sleep(GPU_WAIT_SECONDS * 4)
            return
        self._note_waiting("")
        pulled = self._next_task(active, LONG_POLL_SECONDS)
        if pulled is None:
            if not self._long_poll:
                self._sleep(self.polling_interval)
            return
        task_id, queue_id = pulled
        lease = None
        if self.locks is not None:
            lease = self.locks.take_all(self.gpus, shared=True)
            if lease is None:
                self._requeue(task_id, queue_id, "its GPUs were taken meanwhile")
                return
        self._launch(task_id, queue_id, self.gpus, lease)

    def _step_dynamic(self, active: list[dict[str, str]]) -> None:
        """Ask only the queues whose minimum the free GPUs cover; lock the GPUs of the task
        pulled at once. Nothing is held while asking: a daemon that held GPUs while it waited on
        the server would keep them from the other daemons of the machine (two daemons holding
        half of the free GPUs each could block a big task for good). When another daemon took
        GPUs in between and too few are left, the task goes back to the front of its queue."""
        assert self.dynamic_gpus is not None and self.locks is not None
        wants = self.dynamic_gpus
        free = self.locks.free(self.gpus)
        eligible = [q for q in active if wants[q["id"]][0] <= len(free)]
        if not eligible:
            self._note_waiting(f"{len(free)} of {len(self.gpus)} GPUs free, too few for "
                               f"{', '.join(q['name'] for q in active)}")
            self._sleep(GPU_WAIT_SECONDS)
            return
        self._note_waiting("")
        pulled = self._next_task(eligible, DYNAMIC_LONG_POLL_SECONDS)
        if pulled is None:
            if not self._long_poll:
                self._sleep(self.polling_interval)
            return
        task_id, queue_id = pulled
        low, high = wants[queue_id]
        lease = self.locks.take(self.gpus, high)
        if len(lease.gpus) < low:
            lease.release()
            self._requeue(task_id, queue_id, f"only {len(lease.gpus)} GPUs are free now, "
                          f"it needs {low}")
            self._sleep(random.uniform(0.2, 0.5))
            return
        self._launch(task_id, queue_id, list(lease.gpus), lease)

    def _note_waiting(self, note: str) -> None:
        if note != self._waiting_note:
            if note:
                log.info("waiting: %s", note)
            self._waiting_note = note
            self._publish_state()

    def _served(self, queue_id: str) -> None:
        """With order fairness the queue that just served goes to the back of the line."""
        if self.order_fairness:
            index = next(i for i, q in enumerate(self.queues) if q["id"] == queue_id)
            self.queues = self.queues[index + 1:] + self.queues[:index + 1]

    def _next_task(self, order: list[dict[str, str]], wait: float) -> tuple[str, str] | None:
        """(task id, queue id) from the first of `order` that has one; None when all are empty
        (after waiting up to `wait` s on a bosun server, at once on a ClearML one)."""
        if self._long_poll:
            data = self._poll_until_stopped({
                "queue": order[0]["id"], "queues": [q["id"] for q in order],
                "wait_sec": wait, "get_task_info": True,
            }, timeout=wait + 30)
            if data.get("entry"):
                return data["entry"]["task"], data.get("queue") or order[0]["id"]
            return None
        for queue in order:
            data = self.session.call("queues.get_next_task", {"queue": queue["id"]})
            if data.get("entry"):
                return data["entry"]["task"], queue["id"]
        return None

    def _poll_until_stopped(self, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        def give_back(task_id: str, queue_id: str) -> None:
            self._requeue(task_id, queue_id, "the agent is shutting down")

        return long_poll.next_task(self.session, body, timeout, self.stopping, give_back)

    def _requeue(self, task_id: str, queue_id: str, why: str) -> None:
        """Put a pulled task back at the front of its queue (it is still `queued`)."""
        log.info("putting task %s back into its queue: %s", task_id, why)
        try:
            self.session.call("queues.add_task", {"queue": queue_id, "task": task_id})
            self.session.call("queues.move_task_to_front", {"queue": queue_id, "task": task_id})
        except (ApiError, ConnectionFailed) as exc:
            log.warning("could not put task %s back into its queue: %s", task_id, exc)

    # --- running -------------------------------------------------------------------------------

    def _task_worker_id(self, task_id: str, gpus: list[str]) -> str:
        if self.mode == "services":
            return f"{self.worker_id}:service:{task_id}"
        if self.mode == "dynamic":
            return f"{self.worker_id}:gpu{','.join(gpus)}"
        return self.worker_id

    def _sub_session(self, worker: str) -> Session:
        return self.session.for_worker(worker)

    def _launch(self, task_id: str, queue_id: str, gpus: list[str],
                lease: GpuLease | None) -> None:
        if self.stopping.is_set():  # pulled while a signal came in: leave it to others
            if lease is not None:
                lease.release()
            self._requeue(task_id, queue_id, "the agent is shutting down")
            return
        self._served(queue_id)
        if self.config.agent.reload_config:
            self._reload_config()
        worker = self._task_worker_id(task_id, gpus)
        session = self.session
        if worker != self.worker_id:
            session = self._sub_session(worker)
        try:
            if worker != self.worker_id:
                session.call("workers.register", {"worker": worker, "queues": [],
                                                  **self._restarted()})
            session.call("tasks.started", {"task": task_id, "status_reason": "pulled by agent"})
        except (ApiError, ConnectionFailed) as exc:
            log.warning("task %s could not be started (%s); skipping it", task_id, exc)
            if lease is not None:
                lease.release()
            if worker != self.worker_id:
                self._unregister(session, worker)
            return
        env = {**self.extra_env, **visible_devices_env(gpus, self.cpu_only)}
        run = TaskRun(session, self.config, worker, task_id, echo=self.echo, extra_env=env,
                      container=self.container, stopping=self.stopping,
                      numbered=self._long_poll)
        item = Running(task_id, queue_id, worker, session, run, gpus, lease)
        if lease is not None:
            lease.note({"pid": os.getpid(), "worker": worker, "task": task_id,
                        "since": time.time()})
        queue_name = next((q["name"] for q in self.queues if q["id"] == queue_id), queue_id)
        log.info("running task %s from queue %s%s%s", task_id, queue_name,
                 f" on GPUs {','.join(gpus)}" if gpus and not self.cpu_only else "",
                 f" as worker {worker}" if worker != self.worker_id else "")
        with self._lock:
            self.running[task_id] = item
        item.thread = threading.Thread(target=self._run_one, args=(item,),
                                       name=f"task-{task_id[:8]}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [item.thread]
        item.thread.start()
        self._publish_state()
        self._report_status()

    def _run_one(self, item: Running) -> None:
        try:
            fds = item.lease.descriptors() if item.lease is not None else []
            with process_tree.inheriting(fds):
                outcome = item.run.execute()
            log.info("task %s %s%s", item.task_id, outcome.status,
                     f": {outcome.reason}" if outcome.status != "completed" else "")
        except BaseException:  # TaskRun.execute catches everything; this is the last guard
            log.exception("task %s: agent error", item.task_id)
        finally:
            if item.lease is not None:
                item.lease.release()
            with self._lock:
                self.running.pop(item.task_id, None)
            if item.worker_id != self.worker_id:
                self._unregister(item.session, item.worker_id)
                item.session.close()
            self._changed.set()
            self._publish_state()
            self._report_status()

    def _unregister(self, session: Session, worker: str) -> None:
        with self._report_lock:
            try:
                session.call("workers.unregister", {"worker": worker})
            except (ApiError, ConnectionFailed) as exc:
                log.debug("unregistering %s failed: %s", worker, exc)

    def _reload_config(self) -> None:
        try:
            self.config = load_config(self.config.source)
        except ConfigError as exc:
            log.warning("configuration not reloaded, keeping the previous one: %s", exc)

    # --- reporting -----------------------------------------------------------------------------

    def _report_loop(self) -> None:
        while not self.stopping.wait(self.report_interval):
            self._report_status(sample=True)
        # after the signal: keep reporting while the running tasks finish
        while True:
            with self._lock:
                if not self.running:
                    return
            time.sleep(self.report_interval)
            self._report_status(sample=True)

    def _report_status(self, sample: bool = False) -> None:
        with self._stats_lock:
            if sample or not self._last_stats:
                self._last_stats = self._stats.sample()
            stats = self._last_stats
        with self._report_lock:
            if not self._unregistered:
                self._send_reports(stats)

    def _send_reports(self, stats: dict[str, Any]) -> None:
        with self._lock:
            running = list(self.running.values())
        reports: list[tuple[Session, dict[str, Any]]] = []
        queues = [q["id"] for q in self.queues]
        main: dict[str, Any] = {"worker": self.worker_id, "machine_stats": stats,
                                "queues": queues}
        if self.mode == "single" and running:
            main.update(task=running[0].task_id, queue=running[0].queue_id)
        reports.append((self.session, main))
        for item in running:
            if item.worker_id != self.worker_id:
                reports.append((item.session, {"worker": item.worker_id, "machine_stats": stats,
                                               "task": item.task_id, "queue": item.queue_id}))
        for session, body in reports:
            body["timestamp"] = int(time.time() * 1000)
            try:
                session.call("workers.status_report", body)
            except (ApiError, ConnectionFailed) as exc:
                log.debug("status report failed: %s", exc)
            except Exception as exc:  # e.g. a sub-session closed as its task ended
                log.debug("status report failed: %s", exc)

