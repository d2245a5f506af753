"""Records of the task processes this machine's agents run, so that what an agent that died
(kill -9, the OOM killer) left running is killed by the next agent that starts, before it pulls
anything: the server requeues the task of a dead worker, and the same task must never run twice
at once, nor an orphan hold a GPU.

The task's direct child dies with its agent already (process_tree.start); these records are for
the rest of its tree (a shell script's commands, DataLoader workers) and for its container.

When a task's process starts, `track` writes `<state dir>/tasks/<task>.<agent pid>.<pid>.json`
(`<state dir>`: `$BOSUN_AGENT_STATE_DIR` or ~/.local/state/bosun, beside `agents/`)::

    {"task": "<task id>", "worker": "<worker id>", "pid": 4242, "sid": 4242, "pgid": 4242,
     "create_time": 1700000000.12, "agent_pid": 4200, "agent_create_time": 1699999990.5,
     "started": 1700000000.2, "container": {"engine": "docker", "name": "bosun-..."}}

(`container` only in container mode) and keeps an flock on the file while the task runs. At the
end, `TaskRecord.close` kills what the task left in its session (processes that outlived its
main process, output redirected: nothing may outlive the task) and removes the file.

`reap` (when a daemon starts, and before each task's record is written) looks at every record:
one whose flock is held, or whose agent process is alive (same pid and create_time), belongs to
a live agent and is never touched, so several agents can share the state dir. The others are
orphans' records: every process still in the recorded session or process group and created
after the task's process, and their descendants, get SIGKILL; the container is stopped and
removed (`<engine> stop -t 0`, `rm -f`); the record is deleted. A pid the kernel gave out again
is never killed: the task's own process must have its recorded create_time, and Linux reuses a
number only once no process is left in the session or group of that id. Not found: a process
that left the session (setsid) and whose parent died before the reap.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bosun.agent import worker_id
from bosun.agent.container_engine import ContainerError, Engine

log = logging.getLogger("bosun.agent")

# psutil derives create_time from clock ticks since boot: equal for the same process
_SAME_TIME = 0.05
_KILL_ROUNDS = 3


def records_dir() -> Path:
    path = worker_id.state_dir().parent / "tasks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return -1.0  # alive, but not ours to look at: never the same as a recorded time


def is_same_process(pid: int, create_time: float) -> bool:
    """Whether `pid` is still the process that was created at `create_time` (not a zombie)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(process.create_time() - create_time) < _SAME_TIME
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return False


class TaskRecord:
    """The record of one running task process; `close` when its process ended."""

    def __init__(self, path: Path | None, fd: int | None, data: dict[str, Any]) -> None:
        self.path = path
        self._fd = fd
        self.data = data

    def close(self) -> None:
        """Kill what is left of the task's session, remove the record, release its lock."""
        if self.data:
            try:
                killed = kill_leftovers(self.data)
            except (OSError, psutil.Error) as exc:
                log.warning("task %s: what it left running not killed: %s", self.data["task"],
                            exc)
                killed = 0
            if killed:
                log.warning("killed %d process%s task %s left running after it ended",
                            killed, "" if killed == 1 else "es", self.data["task"])
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)
            self.path = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def track(proc: subprocess.Popen[bytes], task_id: str, worker: str,
          container: tuple[str, str] | None = None) -> TaskRecord:
    """Record the task process `proc` just started (`container`: (engine binary, container
    name) in container mode). Dead agents' leftovers are reaped first. Never raises: without a
    writable state dir the task runs unrecorded."""
    data: dict[str, Any] = {}
    try:
        reap()
        data = _describe(proc.pid, task_id, worker, container)
        return _write(data)
    except (OSError, psutil.Error) as exc:
        log.warning("task %s: its process is not recorded (%s); if this agent dies, what the "
                    "task started may run on", task_id, exc)
        return TaskRecord(None, None, data)


def _describe(pid: int, task_id: str, worker: str,
              container: tuple[str, str] | None) -> dict[str, Any]:
    me = psutil.Process()
    data: dict[str, Any] = {
        "task": task_id, "worker": worker, "pid": pid, "sid": os.getsid(pid),
        "pgid": os.getpgid(pid), "create_time": psutil.Process(pid).create_time(),
        "agent_pid": me.pid, "agent_create_time": me.create_time(), "started": time.time(),
    }
    if container is not None:
        data["container"] = {"engine": container[0], "name": container[1]}
    return data


def _write(data: dict[str, Any]) -> TaskRecord:
    """Written beside its place, locked, then renamed into it: a reaper never sees a record
    that is not complete or not locked."""
    name = f"{data['task']}.{data['agent_pid']}.{data['pid']}.json".replace("/", "_")
    path = records_dir() / name
    temporary = path.with_name(f".{name}.tmp")
    fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps(data).encode())
        os.rename(temporary, path)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return TaskRecord(path, fd, data)


def reap() -> int:
    """Kill what dead agents' tasks left running (see the module's docstring); the number of
    records handled. Never raises."""
    try:
        paths = sorted(records_dir().glob("*.json"))
    except OSError as exc:
        log.warning("task records not read: %s", exc)
        return 0
    handled = 0
    for path in paths:
        try:
            handled += _reap_one(path)
        except (OSError, psutil.Error) as exc:
            log.warning("leftovers of %s not reaped: %s", path.name, exc)
    return handled


def _reap_one(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0  # its task just ended
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # its agent runs it (or another agent reaps it right now)
        if not path.exists():
            return 0  # ended (or reaped) between the open and the lock
        try:
            data = json.loads(path.read_text())
            agent_pid, agent_time = int(data["agent_pid"]), float(data["agent_create_time"])
        except (ValueError, KeyError, TypeError):
            log.warning("removing unreadable task record %s", path.name)
            path.unlink(missing_ok=True)
            return 1
        if is_same_process(agent_pid, agent_time):
            return 0  # a live agent's record, whatever its lock says
        _reap_record(data)
        path.unlink(missing_ok=True)
        return 1
    finally:
        os.close(fd)


def _reap_record(data: dict[str, Any]) -> None:
    task, agent = data.get("task", "?"), data.get("agent_pid", "?")
    killed = kill_leftovers(data)
    if killed:
        log.warning("killed %d leftover process%s of task %s from a dead agent (pid %s)",
                    killed, "" if killed == 1 else "es", task, agent)
    else:
        log.info("task %s of a dead agent (pid %s) left no process running", task, agent)
    container = data.get("container")
    if isinstance(container, dict) and container.get("name"):
        _remove_container(str(container.get("engine") or "docker"), str(container["name"]),
                          task, agent)


@dataclass(frozen=True)
class _Member:
    pid: int
    create_time: float


def leftovers(data: dict[str, Any]) -> list[_Member]:
    """The processes of the recorded task still alive: its own process (same create_time), the
    members of its session or process group and their descendants, none older than it."""
    pid, created = int(data["pid"]), float(data["create_time"])
    sid, pgid = int(data.get("sid", pid)), int(data.get("pgid", pid))
    now_time = _create_time(pid)
    if now_time is not None and abs(now_time - created) >= _SAME_TIME:
        # The number belongs to another process: the kernel reuses it only once no process is
        # left in a session or group of that id, so nothing of the task is left there.
        return []
    found: dict[int, _Member] = {}
    for process in psutil.process_iter(["pid", "create_time"]):
        info = process.info
        if info["create_time"] is None or info["create_time"] < created - _SAME_TIME:
            continue
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            member = info["pid"] == pid or os.getsid(info["pid"]) == sid or \
                os.getpgid(info["pid"]) == pgid
        except (OSError, psutil.Error):
            continue
        if not member:
            continue
        found[info["pid"]] = _Member(info["pid"], info["create_time"])
        with contextlib.suppress(psutil.Error):
            for child in process.children(recursive=True):
                child_time = child.create_time()
                if child_time >= created - _SAME_TIME:
                    found.setdefault(child.pid, _Member(child.pid, child_time))
    return list(found.values())


def kill_leftovers(data: dict[str, Any]) -> int:
    """SIGKILL the recorded task's `leftovers`, each checked to be the same process just before;
    look again (a process may have forked meanwhile) until none is left. Returns how many were
    killed."""
    killed: set[int] = set()
    for _ in range(_KILL_ROUNDS):
        victims = []
        for member in leftovers(data):
            try:
                process = psutil.Process(member.pid)
                if abs(process.create_time() - member.create_time) >= _SAME_TIME:
                    continue
                process.send_signal(signal.SIGKILL)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except psutil.AccessDenied:
                log.warning("not allowed to kill process %d of task %s", member.pid,
                            data.get("task"))
                continue
            victims.append(process)
            killed.add(member.pid)
        if not victims:
            break
        _wait_gone(victims, 5.0)
    return len(killed)


def _wait_gone(processes: list[psutil.Process], timeout: float) -> None:
    """Until each is gone or a zombie (its new parent may be slow to reap it)."""
    deadline = time.monotonic() + timeout
    for process in processes:
        while time.monotonic() < deadline:
            try:
                if process.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)


def _remove_container(binary: str, name: str, task: str, agent: Any) -> None:
    engine = Engine(binary)
    try:
        if not engine.exists(name):
            return
        engine.remove(name, grace=0)
        gone = not engine.exists(name)
    except ContainerError as exc:
        log.warning("container %s of task %s from a dead agent (pid %s) not removed: %s",
                    name, task, agent, exc.reason)
        return
    if gone:
        log.warning("removed container %s of task %s from a dead agent (pid %s)",
                    name, task, agent)
    else:
        log.warning("container %s of task %s from a dead agent (pid %s) could not be removed",
                    name, task, agent)
