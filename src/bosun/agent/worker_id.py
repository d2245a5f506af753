"""Worker ids: `<name>:cpu` or `<name>:gpu0,1`, with `:N` added for the N-th daemon of the same
kind on this machine, so several daemons never clash. A daemon holds a lock file for its id while
it runs; the file also records its pid, which `bosun agent daemon --stop` uses."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import platformdirs


def state_dir() -> Path:
    path = Path(os.environ.get("BOSUN_AGENT_STATE_DIR") or platformdirs.user_state_dir("bosun"))
    path = path / "agents"
    path.mkdir(parents=True, exist_ok=True)
    return path


def base_id(worker_name: str, gpus: list[str] | None) -> str:
    name = worker_name or socket.gethostname()
    return f"{name}:gpu{','.join(gpus)}" if gpus else f"{name}:cpu"


@dataclass
class WorkerSlot:
    worker_id: str
    lock_path: Path
    handle: IO[str]
    info: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def update(self, **changes: Any) -> None:
        """Merge `changes` into the JSON the lock file holds (read by `--stop`, `--status`)."""
        with self._lock:
            self.info.update(changes)
            text = json.dumps(self.info)
            try:
                # opened for appending: empty it first, then the write lands at the start
                self.handle.seek(0)
                self.handle.truncate(0)
                self.handle.write(text)
                self.handle.flush()
            except (OSError, ValueError):
                pass

    def release(self) -> None:
        try:
            self.lock_path.unlink(missing_ok=True)
        finally:
            self.handle.close()


def _lock_name(worker_id: str) -> str:
    return worker_id.replace("/", "_") + ".lock"


def claim(worker_id: str | None, worker_name: str, gpus: list[str] | None,
          queues: list[str], log_file: str = "", extra: dict[str, Any] | None = None
          ) -> WorkerSlot:
    """Take the first free slot (or exactly `worker_id` when it is configured)."""
    base = worker_id or base_id(worker_name, gpus)
    for number in range(1000):
        candidate = base if number == 0 else f"{base}:{number}"
        path = state_dir() / _lock_name(candidate)
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            if worker_id:
                raise RuntimeError(f"worker id '{worker_id}' is already used by a running "
                                   "daemon on this machine") from None
            continue
        slot = WorkerSlot(candidate, path, handle)
        slot.update(pid=os.getpid(), worker_id=candidate, queues=queues, log_file=log_file,
                    **(extra or {}))
        return slot
    raise RuntimeError(f"too many daemons with worker id {base} on this machine")


@dataclass
class RunningDaemon:
    worker_id: str
    pid: int
    queues: list[str]
    log_file: str
    info: dict[str, Any] = field(default_factory=dict)


def _read_info(handle: IO[str]) -> dict[str, Any] | None:
    """The lock file's JSON; a daemon may be rewriting it this instant, so try a few times."""
    for _ in range(5):
        handle.seek(0)
        try:
            info = json.loads(handle.read() or "{}")
        except json.JSONDecodeError:
            time.sleep(0.02)
            continue
        if isinstance(info, dict) and "pid" in info:
            return info
        time.sleep(0.02)
    return None


def running_daemons() -> list[RunningDaemon]:
    """Daemons on this machine that hold their lock (stale files are cleaned up)."""
    found = []
    for path in sorted(state_dir().glob("*.lock")):
        with path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = _read_info(handle)
                if info is None:
                    continue
                found.append(RunningDaemon(info.get("worker_id", path.stem), int(info["pid"]),
                                           info.get("queues", []), info.get("log_file", ""),
                                           info))
                continue
        path.unlink(missing_ok=True)  # nobody holds it: a daemon that died
    return found
