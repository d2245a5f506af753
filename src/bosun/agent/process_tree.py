"""Starting a task's process in its own process group, and killing all of it on abort."""

from __future__ import annotations

import contextlib
import contextvars
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import psutil

# Descriptors the task process started from this thread (context) inherits: the daemon's GPU
# locks, so that they last as long as the task's process does (see gpu_allocator).
_inherited_fds: contextvars.ContextVar[tuple[int, ...]] = contextvars.ContextVar(
    "inherited_fds", default=())


@contextlib.contextmanager
def inheriting(fds: Sequence[int]) -> Iterator[None]:
    """Task processes started inside this block (same thread) inherit `fds`."""
    token = _inherited_fds.set(tuple(fds))
    try:
        yield
    finally:
        _inherited_fds.reset(token)


def start(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Own session and process group: a signal to the group reaches every child."""
    return subprocess.Popen(
        list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True, pass_fds=_inherited_fds.get(),
    )


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def kill_tree(proc: subprocess.Popen[bytes], grace: float = 1.5) -> None:
    """SIGTERM the process group and every descendant (also those that left the group), then
    SIGKILL whatever is still alive after `grace` seconds."""
    family = [proc.pid, *(p.pid for p in _descendants(proc.pid))]
    _signal_all(proc.pid, family, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _alive(family[1:]):
            break
        time.sleep(0.05)
    family += [p.pid for p in _descendants(proc.pid)]
    _signal_all(proc.pid, family, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    _reap(family[1:])


def _signal_all(group: int, pids: list[int], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _alive(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            continue
    return False


def _reap(pids: list[int]) -> None:
    """Grandchildren re-parented to us (we may be a subreaper's child) must not stay zombies."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
