"""`bosun agent daemon --stop`: signal the daemons of this machine and wait until they are gone.

A daemon finishes its running tasks on the first SIGTERM and aborts them on the second, so
`--stop` signals a daemon once (twice with --abort) and then waits for its process to be gone.
It leaves a marker `stopping-<pid>.json` beside the lock files so that a later `--stop` (to wait
longer) does not send the second SIGTERM that would abort the tasks. A daemon counts as gone
when its process is: the pid no longer exists, is a zombie, or is another process by now (its
start time differs); the lock file (released at exit) only tells what it is still doing, and
whether it is stopping already (a SIGTERM from elsewhere: Ctrl-C, systemd).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bosun.agent import worker_id as worker_ids

if TYPE_CHECKING:
    import psutil

STOP_TIMEOUT_SECONDS = 600.0  # --stop waits this long by default: a running task must end first
STOP_REPORT_SECONDS = 5.0  # --stop says what a daemon it waits for is doing this often


@dataclass
class _Stopping:
    daemon: worker_ids.RunningDaemon
    process: psutil.Process
    info: dict[str, Any]
    holds_lock: bool = True
    aborted: bool = False

    @property
    def name(self) -> str:
        return f"worker {self.daemon.worker_id} (pid {self.daemon.pid})"

    def tasks(self) -> list[str]:
        if not self.holds_lock:
            return []
        return [str(t["task"]) for t in self.info.get("running") or []
                if isinstance(t, dict) and t.get("task")]

    def doing(self) -> str:
        tasks = self.tasks()
        if not tasks:
            return ""
        verb = "aborting" if self.aborted else "finishing"
        return f"{verb} task{'s' if len(tasks) > 1 else ''} {', '.join(tasks)}"


def _process(pid: int) -> psutil.Process | None:
    import psutil  # not at import time: every `bosun` command would pay for it
    try:
        process = psutil.Process(pid)
    except psutil.Error:
        return None
    return process if _alive(process) else None


def _alive(process: psutil.Process) -> bool:
    """The very process (not a later one with its pid), and not a zombie its parent has yet to
    reap."""
    import psutil
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _marker(pid: int) -> Path:
    return worker_ids.state_dir() / f"stopping-{pid}.json"


def _signalled_before(process: psutil.Process) -> dict[str, Any] | None:
    """What an earlier `--stop` wrote when it signalled this very process, if it did."""
    import psutil
    try:
        marker = json.loads(_marker(process.pid).read_text())
        if abs(float(marker["create_time"]) - process.create_time()) < 0.01:
            return marker
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        pass
    return None


def _forget_stale_markers() -> None:
    for path in worker_ids.state_dir().glob("stopping-*.json"):
        try:
            marker = json.loads(path.read_text())
            process = _process(int(marker["pid"]))
            stale = process is None or _signalled_before(process) is None
        except (OSError, ValueError, KeyError, TypeError):
            stale = True
        if stale:
            path.unlink(missing_ok=True)


def _terminate(target: _Stopping, aborting: bool) -> None:
    """SIGTERM, and note it for a later `--stop`."""
    import psutil
    target.process.send_signal(signal.SIGTERM)
    with contextlib.suppress(OSError, psutil.Error):
        _marker(target.daemon.pid).write_text(json.dumps({
            "pid": target.daemon.pid, "worker_id": target.daemon.worker_id,
            "create_time": target.process.create_time(), "since": time.time(),
            "aborted": aborting}))


def stop_daemons(ids: list[str], timeout: float, abort: bool) -> int:
    import psutil
    running = worker_ids.running_daemons()
    targets = [d for d in running if not ids or d.worker_id in ids]
    unknown = set(ids) - {d.worker_id for d in running}
    if unknown:
        print(f"bosun: no running daemon with worker id {', '.join(sorted(unknown))}",
              file=sys.stderr)
    if not targets:
        print("no bosun agent daemon is running on this machine")
        return 1 if ids else 0
    _forget_stale_markers()
    failed = bool(unknown)
    waiting: list[_Stopping] = []
    second: list[_Stopping] = []  # --abort: SIGTERM again in a moment
    for daemon in targets:
        process = _process(daemon.pid)
        if process is None:
            print(f"stopped worker {daemon.worker_id} (pid {daemon.pid}): it had exited already",
                  flush=True)
            continue
        target = _Stopping(daemon, process, daemon.info, aborted=abort)
        earlier = _signalled_before(process)
        if earlier is None and daemon.info.get("stopping"):  # signalled by someone else
            earlier = {"since": None, "aborted": False}
        try:
            if earlier is None:
                _terminate(target, abort)
                if abort:
                    second.append(target)
            elif abort:
                _terminate(target, abort)  # its second SIGTERM: it aborts its tasks
            else:
                since = earlier.get("since")
                when = f"got SIGTERM {max(0, int(time.time() - float(since)))} s ago and " \
                    if since else ""
                print(f"{target.name} {when}is stopping; not signalling it again (a second "
                      "SIGTERM would abort its tasks)", flush=True)
                target.aborted = bool(earlier.get("aborted"))
        except psutil.NoSuchProcess:
            print(f"stopped worker {daemon.worker_id} (pid {daemon.pid})", flush=True)
            continue
        except psutil.Error as exc:
            print(f"bosun: cannot signal {target.name}: {exc}", file=sys.stderr)
            failed = True
            continue
        waiting.append(target)
    if second:
        time.sleep(0.5)
        for target in second:
            if _alive(target.process):
                with contextlib.suppress(psutil.Error):
                    target.process.send_signal(signal.SIGTERM)
                    if target.tasks():
                        print(f"{target.name}: {target.doing()}", flush=True)
    waiting = _wait_for_exit(waiting, timeout)
    for target in waiting:
        print(f"bosun: {_still_running(target)}", file=sys.stderr)
    return 1 if failed or waiting else 0


def _wait_for_exit(targets: list[_Stopping], timeout: float) -> list[_Stopping]:
    """Wait until the targets' processes are gone or `timeout` s pass, saying what they are
    doing at the start (after 1 s if none runs a task) and every STOP_REPORT_SECONDS; returns those
    still running."""
    started = time.monotonic()
    deadline = started + timeout
    next_report = started if any(t.tasks() for t in targets) else started + 1.0
    while targets:
        held = {(d.worker_id, d.pid): d for d in worker_ids.running_daemons()}
        still = []
        for target in targets:
            if not _alive(target.process):
                print(f"stopped worker {target.daemon.worker_id} (pid {target.daemon.pid})",
                      flush=True)
                _marker(target.daemon.pid).unlink(missing_ok=True)
                continue
            now_held = held.get((target.daemon.worker_id, target.daemon.pid))
            target.holds_lock = now_held is not None
            if now_held is not None:
                target.info = now_held.info
            still.append(target)
        targets = still
        now = time.monotonic()
        if not targets or now >= deadline:
            break
        if now >= next_report:
            for target in targets:
                doing = target.doing()
                print(f"waiting for {target.name}" + (f": {doing}," if doing else " to exit,")
                      + f" {now - started:.0f} s so far", flush=True)
            next_report = now + STOP_REPORT_SECONDS
        time.sleep(min(0.2, max(0.0, deadline - now)))
    return targets


def _still_running(target: _Stopping) -> str:
    doing = target.doing()
    what = f" ({doing})" if doing else ""
    again = f"bosun agent daemon --stop {target.daemon.worker_id}"
    if target.aborted:
        return (f"{target.name} is still running{what}; it got SIGTERM twice and is aborting "
                f"its tasks; run `{again}` again to wait more, or kill -9 {target.daemon.pid}")
    ends = "when its task ends" if len(target.tasks()) == 1 else \
        "when its tasks end" if target.tasks() else "soon"
    return (f"{target.name} is still running{what}; it got SIGTERM and will exit {ends}; run "
            f"`{again}` again to wait more (it is not signalled again), or `{again} --abort` "
            "to abort its tasks")
