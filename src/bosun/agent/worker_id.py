"""Worker ids: `<name>:cpu` or `<name>:gpu0,1`, with `:N` added for the N-th daemon of the same
kind on this machine, so several daemons never clash. A daemon holds a lock file for its id while
it runs; the file also records its pid, which `bosun agent daemon --stop` uses."""

from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO

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

    def release(self) -> None:
        try:
            self.lock_path.unlink(missing_ok=True)
        finally:
            self.handle.close()


def _lock_name(worker_id: str) -> str:
    return worker_id.replace("/", "_") + ".lock"


def claim(worker_id: str | None, worker_name: str, gpus: list[str] | None,
          queues: list[str], log_file: str = "") -> WorkerSlot:
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
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "worker_id": candidate, "queues": queues,
                                 "log_file": log_file}))
        handle.flush()
        return WorkerSlot(candidate, path, handle)
    raise RuntimeError(f"too many daemons with worker id {base} on this machine")


@dataclass
class RunningDaemon:
    worker_id: str
    pid: int
    queues: list[str]
    log_file: str


def running_daemons() -> list[RunningDaemon]:
    """Daemons on this machine that hold their lock (stale files are cleaned up)."""
    found = []
    for path in sorted(state_dir().glob("*.lock")):
        with path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                try:
                    info = json.loads(handle.read() or "{}")
                except json.JSONDecodeError:
                    continue
                found.append(RunningDaemon(info.get("worker_id", path.stem), int(info["pid"]),
                                           info.get("queues", []), info.get("log_file", "")))
                continue
        path.unlink(missing_ok=True)  # nobody holds it: a daemon that died
    return found
