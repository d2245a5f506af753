"""Which GPUs are in use on this machine: one lock file per GPU, `flock`ed by whoever uses it.

`<state dir>/gpus/<index>.lock` (state dir: `$BOSUN_AGENT_STATE_DIR` or
`~/.local/state/bosun`). A `--dynamic-gpus` daemon takes an exclusive lock on each GPU it gives
a task; a daemon with a fixed `--gpus` list takes shared locks on its GPUs while it runs a task
(several such daemons may share a GPU, as in clearml-agent, but a dynamic daemon never hands
it out meanwhile). The descriptor holding the lock is also inherited by the task's process, so
the lock lasts until both the daemon's runner has let go and the task's process has exited.

The kernel drops the locks of a process that dies, so nothing is ever left locked by a crashed
daemon or task, and a restarted daemon sees exactly the GPUs that are still in use — also those
of a task whose daemon was killed but which still runs. Several daemons on one machine share the
lock files, so no GPU is given twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bosun.agent import worker_id as worker_ids


def gpu_lock_dir() -> Path:
    path = worker_ids.state_dir().parent / "gpus"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class GpuLease:
    """GPUs locked by this process; `release()` (or the process ending) lets them go."""

    gpus: list[str]
    fds: dict[str, int] = field(default_factory=dict)
    shared: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def keep(self, count: int) -> None:
        """Keep the first `count` GPUs, release the others."""
        with self._lock:
            for gpu in self.gpus[count:]:
                fd = self.fds.pop(gpu, None)
                if fd is not None:
                    os.close(fd)
            self.gpus = self.gpus[:count]

    def release(self) -> None:
        with self._lock:
            for fd in self.fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.fds.clear()

    def note(self, info: dict[str, object]) -> None:
        """Record who uses the GPUs (for `--status`); only with exclusive locks."""
        if self.shared:
            return
        text = json.dumps(info).encode()
        with self._lock:
            for fd in self.fds.values():
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, text, 0)

    def descriptors(self) -> list[int]:
        with self._lock:
            return list(self.fds.values())


class GpuLocks:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or gpu_lock_dir()
        self.root.mkdir(parents=True, exist_ok=True)

    def _open(self, gpu: str) -> int:
        return os.open(self.root / f"{gpu}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def _try(self, gpu: str, shared: bool) -> int | None:
        fd = self._open(gpu)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def free(self, gpus: list[str]) -> list[str]:
        """The GPUs of `gpus` nobody holds right now (a snapshot: take them with `take`)."""
        found = []
        for gpu in gpus:
            fd = self._try(gpu, shared=False)
            if fd is not None:
                os.close(fd)
                found.append(gpu)
        return found

    def available_shared(self, gpus: list[str]) -> bool:
        """No one holds any of `gpus` exclusively (shared holders are fine)."""
        lease = self.take_all(gpus, shared=True)
        if lease is None:
            return False
        lease.release()
        return True

    def take(self, gpus: list[str], at_most: int) -> GpuLease:
        """Exclusive locks on up to `at_most` of `gpus` (in order), whichever are free."""
        lease = GpuLease([])
        for gpu in gpus:
            if len(lease.gpus) >= at_most:
                break
            fd = self._try(gpu, shared=False)
            if fd is not None:
                lease.gpus.append(gpu)
                lease.fds[gpu] = fd
        return lease

    def take_all(self, gpus: list[str], shared: bool) -> GpuLease | None:
        """Locks on all of `gpus`, or None (and nothing held) when one is taken."""
        lease = GpuLease([], shared=shared)
        for gpu in gpus:
            fd = self._try(gpu, shared=shared)
            if fd is None:
                lease.release()
                return None
            lease.gpus.append(gpu)
            lease.fds[gpu] = fd
        return lease

    def holders(self, gpus: list[str]) -> dict[str, str]:
        """GPU -> what holds it ("free", "shared", or the note of its exclusive holder)."""
        out: dict[str, str] = {}
        for gpu in gpus:
            fd = self._try(gpu, shared=False)
            if fd is not None:
                os.close(fd)
                out[gpu] = "free"
                continue
            fd = self._try(gpu, shared=True)
            if fd is not None:
                os.close(fd)
                out[gpu] = "in use by a --gpus daemon's task"
                continue
            try:
                info = json.loads((self.root / f"{gpu}.lock").read_text() or "{}")
                out[gpu] = (f"task {info.get('task', '?')} (worker {info.get('worker', '?')}, "
                            f"since {time.strftime('%H:%M:%S', time.localtime(info['since']))})"
                            if "since" in info else "in use")
            except (OSError, ValueError, KeyError, TypeError):
                out[gpu] = "in use"
        return out
