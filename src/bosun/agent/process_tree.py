"""Starting a task's process in its own process group, and killing all of it on abort.

On Linux the task's process also dies with its agent: it gets SIGKILL from the kernel when the
agent *thread* that started it ends (prctl PR_SET_PDEATHSIG; the daemon starts each task from
the task's own thread, which lives as long as the task, and `execute` from its main thread).
That reaches only the direct child: what the task started itself (a shell script's commands,
DataLoader workers) survives it, which is what `task_records` is for.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import shutil
import signal
import subprocess
import sys
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


# Run by the agent's own interpreter between the fork and the task's exec (-I -S: no site, no
# PYTHON* variables, nothing of the task's imported): ask for SIGKILL when the parent thread
# ends (the setting survives exec), tell the parent so by closing `ready`, then become the task.
# Done here rather than in a `preexec_fn`, which runs Python code in the child of a
# multi-threaded process.
_DIE_WITH_PARENT = """\
import os, sys
parent, ready, lc_ctype, *argv = sys.argv[1:]
try:
    import ctypes
    ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
except Exception:
    pass
if os.getppid() != int(parent):  # the agent died before that: no task without its agent
    os._exit(137)
os.close(int(ready))
if lc_ctype == "-":  # set by Python's C-locale coercion (PEP 538), not by the agent
    os.environ.pop("LC_CTYPE", None)
else:
    os.environ["LC_CTYPE"] = lc_ctype[1:]
try:
    os.execvp(argv[0], argv)
except OSError as exc:
    print(f"bosun: could not start {argv[0]}: {exc.strerror}", file=sys.stderr, flush=True)
    os._exit(127)
"""


def start(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Own session and process group: a signal to the group reaches every child. On Linux the
    process gets SIGKILL when the calling thread ends (see the module's docstring), armed when
    this returns."""
    if not (sys.platform.startswith("linux") and sys.executable and argv):
        return _popen(list(argv), cwd, env, ())
    _check_program(argv[0], cwd, env)  # a missing program raises here, as Popen would
    lc_ctype = "=" + env["LC_CTYPE"] if "LC_CTYPE" in env else "-"
    ready, armed = os.pipe()
    try:
        proc = _popen([sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT, str(os.getpid()),
                       str(armed), lc_ctype, *argv], cwd, env, (armed,))
        os.close(armed)
        armed = -1
        os.read(ready, 1)  # end of file: armed (or the wrapper died)
    finally:
        os.close(ready)
        if armed >= 0:
            os.close(armed)
    return proc


def _popen(argv: list[str], cwd: Path, env: Mapping[str, str],
           fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True,
        pass_fds=(*_inherited_fds.get(), *fds),
    )


def _check_program(program: str, cwd: Path, env: Mapping[str, str]) -> None:
    if os.sep in program:
        found = (Path(cwd) / program).exists()
    else:
        search = os.pathsep.join(os.get_exec_path(dict(env)))
        found = shutil.which(program, path=search) is not None
    if not found:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


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
