"""bosun's agent side by side with clearml-agent on one bosun server, plus the server rows.

Both agents run the same tasks (same task definitions, same queue, same bosun server), one
daemon at a time, in rounds that alternate between the agents. Each round starts the agent's
daemon with empty caches and measures, in this order:

1. cold environment: the ML task (numpy, scipy, scikit-learn, pandas) with empty caches:
   enqueue -> completed, and the environment-build part of it;
2. warm environment: the same task again (environment cache hit): enqueue -> completed, and the
   environment-build part;
3. pickup + abort: a task without requirements (its environment warm) that prints a first
   line, starts a child process and ticks: enqueue -> that first line on the server (pickup),
   then `tasks.stop` -> every process of the task gone (abort).

Then both daemons idle side by side on an empty queue (RSS and CPU of each daemon's process
tree), and `server_throughput.py` gives the server rows (SQLite and PostgreSQL).

One markdown table goes to stdout, progress to stderr, everything measured to a JSON file.
Run `bench/run --quick` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _path in (str(ROOT), str(BENCH)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import server_throughput  # noqa: E402

from bosun.client import Session  # noqa: E402
from tests.support.agent_env import make_repo  # noqa: E402
from tests.support.clearml_clients import (  # noqa: E402
    CLEARML_AGENT_VERSION,
    CLEARML_VERSION,
    ClearmlClients,
    clearml_clients,
)
from tests.support.server_process import ServerProcess  # noqa: E402

KEY, SECRET = "bench", "bench"
QUEUE = "bench"
AGENTS = ("bosun", "clearml")
LABELS = {"bosun": "bosun agent", "clearml": f"clearml-agent {CLEARML_AGENT_VERSION}"}

ML_PACKAGES = ("numpy", "scipy", "scikit-learn", "pandas")
# clearml-agent accepts no --polling-interval below 5 s ("Minimum is 5" in its help, and
# max(value, 5) in its code); its abort check in `clearml-agent execute` runs at the same
# interval. Its environment variable CLEARML_AGENT_QUEUE_POLL_FREQ_SEC (not in --help) skips
# that minimum: --clearml-polling-interval below 5 sets it.
CLEARML_POLL_S = 5.0
POLL_S = 0.02  # how often the benchmark looks at the server / the processes

TARGET_PICKUP_S = 0.5
TARGET_PICKUP_RATIO = 10.0
TARGET_COLD_RATIO = 5.0
TARGET_WARM_ENV_S = 0.3
TARGET_ABORT_S = 1.0
TARGET_RSS_RATIO = 2.0

ML_SCRIPT = """\
import time
print(f"BENCH_START {time.time():.6f}", flush=True)
import numpy, pandas, scipy, sklearn
print("BENCH_VERSIONS numpy", numpy.__version__, "scipy", scipy.__version__,
      "scikit-learn", sklearn.__version__, "pandas", pandas.__version__, flush=True)
"""

HELLO_SCRIPT = """\
import time
print(f"BENCH_START {time.time():.6f}", flush=True)
"""

ABORT_SCRIPT = """\
import subprocess, sys, time
print(f"BENCH_START {time.time():.6f}", flush=True)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(f"BENCH_CHILD {child.pid}", flush=True)
for i in range(6000):
    print("tick", i, flush=True)
    time.sleep(0.1)
"""


@dataclass(frozen=True)
class Plan:
    rounds: int
    idle_s: float
    idle_settle_s: float
    # Measure the idle daemons while the server rows run (quick mode, to save the window's
    # time): their RSS does not depend on the load, their CPU time hardly does.
    idle_overlap: bool
    server: server_throughput.Sizes
    clearml_poll_s: float = CLEARML_POLL_S


# The server rows in --quick: server_throughput's quick set, halved, to leave more of the time
# to the agents (clearml-agent alone needs about 100 s per round here).
QUICK_SERVER = dataclasses.replace(server_throughput.QUICK, pairs=1000, log_batches=10,
                                   agent_tasks=150, empty_calls=100)
QUICK = Plan(rounds=2, idle_s=20.0, idle_settle_s=3.0, idle_overlap=True,
             server=QUICK_SERVER)
FULL = Plan(rounds=5, idle_s=60.0, idle_settle_s=5.0, idle_overlap=False,
            server=server_throughput.FULL)


_BEGAN = time.perf_counter()


def say(message: str) -> None:
    print(f"[bench {time.perf_counter() - _BEGAN:6.1f}s] {message}", file=sys.stderr, flush=True)


# --- following log files with a timestamp per line -------------------------------------------


class LogFollower:
    """Reads growing files every POLL_S and keeps (perf_counter, line) for every new line.

    `watch` adds files while it runs: clearml-agent names the file its `execute` process writes
    in its own log, and that file is followed from its start.
    """

    def __init__(self) -> None:
        self.lines: dict[Path, list[tuple[float, str]]] = {}
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, str] = {}
        self._hooks: list[Callable[[Path, str], None]] = []
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()  # one reader at a time, or lines would repeat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def watch(self, path: Path) -> None:
        with self._lock:
            if path not in self._offsets:
                self._offsets[path] = 0
                self._partial[path] = ""
                self.lines[path] = []

    def on_line(self, hook: Callable[[Path, str], None]) -> None:
        self._hooks.append(hook)

    def snapshot(self, path: Path) -> list[tuple[float, str]]:
        self.poll_once()
        with self._lock:
            return list(self.lines.get(path, []))

    def poll_once(self) -> None:
        with self._poll_lock:
            self._poll()

    def _poll(self) -> None:
        with self._lock:
            paths = list(self._offsets)
        for path in paths:
            try:
                with path.open("rb") as handle:
                    handle.seek(self._offsets[path])
                    data = handle.read()
            except OSError:
                continue
            if not data:
                continue
            now = time.perf_counter()
            with self._lock:
                self._offsets[path] += len(data)
                text = self._partial[path] + data.decode("utf-8", errors="replace")
                *complete, self._partial[path] = text.split("\n")
                self.lines[path].extend((now, line) for line in complete)
            for line in complete:
                for hook in self._hooks:
                    hook(path, line)

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            self.poll_once()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


# --- the two agents --------------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    """The benchmark's environment without anything that points a client or an installer
    elsewhere (ClearML/bosun settings, pip's and uv's configuration, an active venv)."""
    drop = ("CLEARML_", "TRAINS_", "BOSUN_", "PIP_", "UV_", "VIRTUAL_ENV", "PYTHONPATH",
            "PYTHONHOME", "CONDA_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _entries(folder: Path) -> set[str]:
    """Entries of a venv cache folder (each tool keeps one folder per environment)."""
    try:
        return {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    except OSError:
        return set()


class AgentDaemon:
    """Daemon processes of one kind, started and stopped once per round. Everything it keeps
    lives under `home`: the venv cache, the build folder, the VCS cache and, per round, a
    fresh download cache (`downloads-<tag>`)."""

    kind = ""
    # Whether a task without requirements gets a venv-cache entry (then the warm-up puts one
    # there before the rounds, so that pickup is measured with warm caches).
    caches_bare_env = True
    # Seconds between the daemon's looks at the queue while idle (0: it waits in a long poll,
    # so when a task is enqueued does not matter).
    poll_cycle_s = 0.0
    # Seconds between a running task's looks at its status (how it learns of an abort).
    abort_cycle_s = 0.0

    def __init__(self, server: ServerProcess, home: Path, worker_id: str,
                 follower: LogFollower) -> None:
        self.server = server
        self.home = home
        self.worker_id = worker_id
        self.follower = follower
        self.tag = "first"
        self.log_path = home / "daemon-first.log"
        self.proc: subprocess.Popen[bytes] | None = None
        home.mkdir(parents=True, exist_ok=True)

    @property
    def venvs_cache(self) -> Path:
        return self.home / "venvs-cache"

    @property
    def downloads(self) -> Path:
        return self.home / f"downloads-{self.tag}"

    def argv_env(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def empty_caches(self, tag: str, keep: set[str]) -> None:
        """Before a cold run: no download cache, no venv but those in `keep`, no build left."""
        assert self.proc is None or self.proc.poll() is not None, "stop the daemon first"
        for entry in _entries(self.venvs_cache) - keep:
            shutil.rmtree(self.venvs_cache / entry, ignore_errors=True)
        for old in self.home.glob("downloads-*"):
            shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(self.home / "venvs-builds", ignore_errors=True)
        self.tag = tag

    def start(self, api: Session, timeout: float = 60.0) -> AgentDaemon:
        argv, env = self.argv_env()
        self.log_path = self.home / f"daemon-{self.tag}.log"
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.home, start_new_session=True)
        self.follower.watch(self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} daemon exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            workers = api.call("workers.get_all", {})["workers"]
            if any(w.get("id") == self.worker_id for w in workers):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} daemon did not register within {timeout:.0f}s:\n"
                           f"{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def wait_idle(self, since: float, timeout: float = 30.0) -> None:
        """Returns once the daemon waits for work again (after `since`, a perf_counter)."""
        raise NotImplementedError

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def env_build_seconds(self, task_id: str, events: list[dict[str, Any]]) -> float | None:
        raise NotImplementedError

    def cache_hit(self, task_id: str, events: list[dict[str, Any]]) -> bool | None:
        raise NotImplementedError

    def timeline(self, task_id: str, events: list[dict[str, Any]], t0: float,
                 wall0: float) -> list[tuple[float, str]]:
        """Milestones of a run, seconds after the enqueue."""
        raise NotImplementedError


class BosunDaemon(AgentDaemon):
    kind = "bosun"
    abort_cycle_s = 0.5  # the run's watcher polls the task's status twice a second
    MILESTONES = ("bosun: running task", "environment: building", "environment: ready",
                  "environment: cache hit", "bosun: starting", "BENCH_START", "bosun: task ",
                  "bosun: aborted", "stopping the task")

    def argv_env(self) -> tuple[list[str], dict[str, str]]:
        home = self.home
        config = home / "clearml.conf"
        config.write_text(f"""
api {{
  api_server: "{self.server.url}"
  credentials {{ access_key: "{KEY}", secret_key: "{SECRET}" }}
}}
agent {{
  worker_id: "{self.worker_id}"
  venvs_dir: "{home}/venvs-builds"
  venvs_cache {{ path: "{self.venvs_cache}", free_space_threshold_gb: 0 }}
  vcs_cache {{ enabled: true, path: "{home}/vcs-cache" }}
  pip_download_cache {{ enabled: true, path: "{self.downloads}" }}
}}
""")
        env = _clean_env()
        env.update(BOSUN_AGENT_STATE_DIR=str(home / "state"), UV_CACHE_DIR=str(self.downloads))
        argv = [sys.executable, "-m", "bosun", "agent", "--config-file", str(config), "daemon",
                "--queue", QUEUE]
        return argv, env

    def wait_idle(self, since: float, timeout: float = 30.0) -> None:
        # The daemon is back in its long poll right after it reported the task.
        time.sleep(max(0.0, since + 0.2 - time.perf_counter()))

    def env_build_seconds(self, task_id: str, events: list[dict[str, Any]]) -> float | None:
        for event in events:
            msg = event.get("msg") or ""
            found = (re.search(r"environment: ready in ([\d.]+) s", msg)
                     or re.search(r"environment: cache hit \S+ \(([\d.]+) s\)", msg))
            if found:
                return float(found.group(1))
        return None

    def cache_hit(self, task_id: str, events: list[dict[str, Any]]) -> bool | None:
        text = "\n".join(e.get("msg") or "" for e in events)
        if "environment: cache hit" in text:
            return True
        if "environment: ready in" in text:
            return "cache hit after waiting" in text
        return None

    def timeline(self, task_id: str, events: list[dict[str, Any]], t0: float,
                 wall0: float) -> list[tuple[float, str]]:
        out = []
        for event in events:
            msg = (event.get("msg") or "").strip()
            if any(m in msg for m in self.MILESTONES):
                out.append((round(event["timestamp"] / 1000.0 - wall0, 3), msg[:70]))
        return out


class ClearmlDaemon(AgentDaemon):
    kind = "clearml"
    # clearml-agent does not look in its venv cache for a task without requirements: it runs it
    # in the venv left in its build folder (by the round's warm run), so no warm-up is needed.
    caches_bare_env = False
    SLEEPING = "No tasks in Queues, sleeping"
    MILESTONES = ("pulled from", "Executing task id", "acquiring lock", "Using Cached environment",
                  "Creating virtual environment", "lock for repo cache folder", "root: ",
                  "Collecting", "Adding venv into cache", "Running task id",
                  "Environment setup completed", "Starting Task Execution", "BENCH_START",
                  "User aborted", "ABORTED", "Process completed", "Process aborted")

    def __init__(self, server: ServerProcess, home: Path, worker_id: str,
                 follower: LogFollower, clients: ClearmlClients,
                 poll_s: float = CLEARML_POLL_S) -> None:
        super().__init__(server, home, worker_id, follower)
        self.clients = clients
        self.poll_cycle_s = poll_s
        self.abort_cycle_s = poll_s  # `execute`'s monitor thread, at the polling interval
        self.task_files: list[Path] = []
        follower.on_line(self._on_line)

    def _on_line(self, path: Path, line: str) -> None:
        if path.parent != self.home or not path.name.startswith("daemon-"):
            return
        found = re.search(r"Storing stdout and stderr log to '([^']+)'", line)
        if found:
            out = Path(found.group(1))
            self.task_files.append(out)
            self.follower.watch(out)

    def argv_env(self) -> tuple[list[str], dict[str, str]]:
        home = self.home
        config = home / "clearml.conf"
        # As `clearml-agent init` writes it, with the venv cache switched on (it is off unless
        # `venvs_cache.path` is set; bosun's is on by default) and every cache under `home`.
        config.write_text(f"""
api {{
  api_server: "{self.server.url}"
  web_server: "{self.server.url}"
  files_server: "{self.server.url}"
  credentials {{ access_key: "{KEY}", secret_key: "{SECRET}" }}
}}
agent {{
  worker_id: "{self.worker_id}"
  python_binary: "{self.clients.python}"
  package_manager {{ type: pip }}
  venvs_dir: "{home}/venvs-builds"
  venvs_cache {{ path: "{self.venvs_cache}", free_space_threshold_gb: 0 }}
  vcs_cache {{ enabled: true, path: "{home}/vcs-cache" }}
  pip_download_cache {{ enabled: true, path: "{self.downloads}/pip-download-cache" }}
  docker_pip_cache: "{home}/docker-pip-cache"
  docker_apt_cache: "{home}/docker-apt-cache"
}}
""")
        env = _clean_env()
        # pip reads no configuration file (this machine's points at local package mirrors; uv,
        # which bosun uses, never reads it), so both agents download from the same index.
        env.update(CLEARML_CONFIG_FILE=str(config), PIP_CONFIG_FILE=os.devnull,
                   PIP_CACHE_DIR=str(self.downloads / "pip-cache"),
                   PIP_DISABLE_PIP_VERSION_CHECK="1")
        if self.poll_cycle_s < CLEARML_POLL_S:
            env["CLEARML_AGENT_QUEUE_POLL_FREQ_SEC"] = str(self.poll_cycle_s)
        argv = [str(self.clients.agent), "daemon", "--queue", QUEUE, "--foreground",
                "--polling-interval", str(max(int(CLEARML_POLL_S), round(self.poll_cycle_s)))]
        return argv, env

    def wait_idle(self, since: float, timeout: float = 30.0) -> None:
        """Until the daemon logs that it found no task and sleeps (after `since`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for stamp, line in reversed(self.follower.snapshot(self.log_path)):
                if stamp < since:
                    break
                if self.SLEEPING in line:
                    return
            time.sleep(POLL_S)
        raise RuntimeError(f"clearml-agent did not go idle within {timeout:.0f}s:\n"
                           f"{self.log_tail()}")

    def _task_lines(self, task_id: str) -> list[tuple[float, str]]:
        for path in reversed(self.task_files):
            lines = self.follower.snapshot(path)
            if any(f"task id [{task_id}]" in line for _, line in lines):
                return lines
        return []

    def env_build_seconds(self, task_id: str, events: list[dict[str, Any]]) -> float | None:
        """From the `execute` process's own output, timed as it was written: the venv phase
        (cache lookup, venv, pip, requirements, storing the venv in the cache, the summary of
        installed packages) up to "Environment setup completed", less the repository clone that
        clearml-agent does in the middle of it."""
        lines = self._task_lines(task_id)

        def first(pattern: str) -> float | None:
            return next((t for t, line in lines if re.search(pattern, line)), None)

        start = first(r"acquiring lock .* for cache folder")
        end = first(r"Environment setup completed successfully")
        if start is None or end is None:
            return None
        git_start = first(r"lock for repo cache folder")
        git_end = first(r"^root: ")
        git = (git_end - git_start) if git_start is not None and git_end is not None else 0.0
        return max(0.0, end - start - git)

    def cache_hit(self, task_id: str, events: list[dict[str, Any]]) -> bool | None:
        lines = self._task_lines(task_id)
        if not lines:
            return None
        return any("Using Cached environment" in line for _, line in lines)

    def timeline(self, task_id: str, events: list[dict[str, Any]], t0: float,
                 wall0: float) -> list[tuple[float, str]]:
        out = [(round(t - t0, 3), line.strip()[:70])
               for t, line in self.follower.snapshot(self.log_path)
               if t >= t0 and f"task {task_id} pulled" in line]
        seen: set[str] = set()
        for t, line in self._task_lines(task_id):
            for milestone in self.MILESTONES:
                if milestone in line and milestone not in seen:
                    seen.add(milestone)
                    out.append((round(t - t0, 3), line.strip()[:70]))
        return sorted(out)


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Bench:
    server: ServerProcess
    api: Session
    queue_id: str
    repo: Path
    sha: str
    project: str
    errors: list[str] = field(default_factory=list)

    def create_task(self, name: str, entry_point: str, requirements: tuple[str, ...]) -> str:
        task_id: str = self.api.call("tasks.create", {
            "name": name, "project": self.project, "script": {
                "repository": str(self.repo), "version_num": self.sha,
                "entry_point": entry_point, "working_dir": ".", "binary": "python3",
                "requirements": {"pip": "".join(f"{r}\n" for r in requirements)}}})["id"]
        return task_id

    def enqueue(self, task_id: str) -> tuple[float, float]:
        """(perf_counter, time.time) just before the enqueue request went out."""
        mark = time.perf_counter(), time.time()
        self.api.call("tasks.enqueue", {"task": task_id, "queue": self.queue_id})
        return mark

    def status(self, task_id: str) -> str:
        tasks = self.api.call("tasks.get_all", {"id": [task_id],
                                                "only_fields": ["status"]})["tasks"]
        return str(tasks[0]["status"]) if tasks else "missing"

    def wait_status(self, task_id: str, statuses: set[str], timeout: float) -> tuple[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(task_id)
            if status in statuses:
                return status, time.perf_counter()
            time.sleep(POLL_S)
        raise TimeoutError(f"task {task_id} did not reach {sorted(statuses)} in {timeout:.0f}s "
                           f"(status {self.status(task_id)})")

    def events(self, task_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        scroll: str | None = None
        while True:
            body: dict[str, Any] = {"task": task_id, "navigate_earlier": False,
                                    "batch_size": 5000}
            if scroll:
                body["scroll_id"] = scroll
            page = self.api.call("events.get_task_log", body)
            out.extend(page["events"])
            if not page["events"]:
                return out
            scroll = page.get("scroll_id")

    def wait_log(self, task_id: str, marker: str, timeout: float) -> tuple[float, str]:
        """(perf_counter when a log event holding `marker` was first seen, that event's text).
        Pages forward with `scroll_id`, so each look fetches only the new events."""
        deadline = time.monotonic() + timeout
        scroll: str | None = None
        while time.monotonic() < deadline:
            body: dict[str, Any] = {"task": task_id, "navigate_earlier": False,
                                    "batch_size": 500}
            if scroll:
                body["scroll_id"] = scroll
            page = self.api.call("events.get_task_log", body)
            now = time.perf_counter()
            for event in page["events"]:
                msg = event.get("msg") or ""
                if marker in msg:
                    return now, msg
            scroll = page.get("scroll_id") or scroll
            if not page["events"]:
                time.sleep(POLL_S)
        raise TimeoutError(f"no '{marker}' in the log of task {task_id} within {timeout:.0f}s "
                           f"(status {self.status(task_id)})")


def task_processes(task_id: str) -> list[psutil.Process]:
    """Every live process that belongs to the task: its id in the command line (clearml-agent's
    `execute --id`) or as CLEARML_TASK_ID in the environment (the task and its children, under
    both agents)."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "cmdline", "environ", "status"]):
        info = proc.info
        if info["pid"] == me or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = " ".join(info["cmdline"] or [])
        environ = info["environ"] or {}
        if task_id in cmdline or environ.get("CLEARML_TASK_ID") == task_id:
            found.append(proc)
    return found


def cmdline(proc: psutil.Process) -> str:
    return " ".join(proc.info.get("cmdline") or [])


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.NoSuchProcess:
            continue
    return out


def _versions(events: list[dict[str, Any]]) -> str | None:
    for event in events:
        for line in (event.get("msg") or "").splitlines():
            if line.startswith("BENCH_VERSIONS"):
                return line.removeprefix("BENCH_VERSIONS").strip()
    return None


def _script_start(msg: str) -> float | None:
    found = re.search(r"BENCH_START ([\d.]+)", msg)
    return float(found.group(1)) if found else None


def run_env_task(bench: Bench, daemon: AgentDaemon, name: str, phase: float, since: float,
                 timeout: float, entry_point: str = "ml.py",
                 requirements: tuple[str, ...] = ML_PACKAGES) -> dict[str, Any]:
    """One run of the ML task: enqueue -> completed, env-build part, cache hit or not."""
    daemon.wait_idle(since)
    time.sleep(phase)
    task_id = bench.create_task(name, entry_point, requirements)
    t0, wall0 = bench.enqueue(task_id)
    status, t_end = bench.wait_status(task_id, {"completed", "failed", "stopped"}, timeout)
    events = bench.events(task_id)
    sample: dict[str, Any] = {
        "task": task_id, "status": status, "phase_delay_s": round(phase, 3),
        "enqueue_to_completed_s": round(t_end - t0, 3),
        "env_build_s": daemon.env_build_seconds(task_id, events),
        "cache_hit": daemon.cache_hit(task_id, events), "versions": _versions(events),
    }
    start = next((s for e in events if (s := _script_start(e.get("msg") or ""))), None)
    if start is not None:
        sample["enqueue_to_process_start_s"] = round(start - wall0, 3)
    sample["timeline"] = daemon.timeline(task_id, events, t0, wall0)
    if status != "completed":
        sample["log_tail"] = [(e.get("msg") or "")[-300:] for e in events[-5:]]
    sample["_done_at"] = t_end
    return sample


def run_abort_task(bench: Bench, daemon: AgentDaemon, name: str, phase: float,
                   since: float, timeout: float, abort_phase: float = 0.0) -> dict[str, Any]:
    """Pickup (enqueue -> the task's first line on the server) and abort (tasks.stop -> the
    task's processes gone) from one run of the ticking task (no requirements, its environment
    warm). `tasks.stop` goes out `abort_phase` seconds into the agent's abort-check cycle
    (counted from when the task's processes were all seen up)."""
    daemon.wait_idle(since)
    time.sleep(phase)
    task_id = bench.create_task(name, "abort.py", ())
    t0, wall0 = bench.enqueue(task_id)
    t_first, msg = bench.wait_log(task_id, "BENCH_START", timeout)
    sample: dict[str, Any] = {"task": task_id, "phase_delay_s": round(phase, 3),
                              "abort_phase_s": round(abort_phase, 3),
                              "pickup_s": round(t_first - t0, 3)}
    start = _script_start(msg)
    if start is not None:
        sample["enqueue_to_process_start_s"] = round(start - wall0, 3)
    # The task, its child and (clearml-agent) the `execute` process must all be up.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any("time.sleep(600)" in cmdline(p) for p in task_processes(task_id)):
            break
        time.sleep(0.05)
    time.sleep(0.5 + abort_phase)  # ticking
    procs = task_processes(task_id)
    sample["processes"] = [cmdline(p)[:120] for p in procs]
    t_stop = time.perf_counter()
    bench.api.call("tasks.stop", {"task": task_id})
    gone_at: float | None = None
    stopped_at: float | None = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (gone_at is None or stopped_at is None):
        if gone_at is None and not alive(procs):
            gone_at = time.perf_counter()
        if stopped_at is None and bench.status(task_id) in ("stopped", "failed", "completed"):
            stopped_at = time.perf_counter()
        time.sleep(POLL_S / 2 if gone_at is None else POLL_S)
    sample["abort_tree_gone_s"] = round(gone_at - t_stop, 3) if gone_at else None
    sample["abort_status_s"] = round(stopped_at - t_stop, 3) if stopped_at else None
    sample["status"] = bench.status(task_id)
    leftovers = task_processes(task_id)
    sample["leftover_processes"] = len(leftovers)
    for proc in leftovers:  # never leave a benchmark task running
        with contextlib.suppress(psutil.Error):
            proc.kill()
    sample["timeline"] = daemon.timeline(task_id, bench.events(task_id), t0, wall0)
    sample["_done_at"] = stopped_at or time.perf_counter()
    return sample


def run_round(bench: Bench, daemon: AgentDaemon, round_no: int, rounds: int,
              keep: set[str] | None) -> tuple[dict[str, Any], set[str]]:
    """Cold, warm, pickup+abort for one agent, starting from empty caches but for the ticking
    task's environment (`keep`; None in the first round: then the daemon runs that task once,
    unmeasured, to put its environment in the cache). Returns the samples and `keep`.

    For a polling daemon each enqueue happens at a different point of its polling cycle: the
    delays after the daemon went idle are spread over one cycle across the rounds, so that the
    medians see an average wait, not the best or the worst."""

    def phase(kind: int) -> float:
        return ((round_no + kind) % rounds + 0.5) / rounds * daemon.poll_cycle_s

    out: dict[str, Any] = {}
    started = time.perf_counter()
    daemon.empty_caches(f"r{round_no}", keep or set())
    out["caches_emptied_s"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    daemon.start(bench.api)
    out["daemon_start_s"] = round(time.perf_counter() - started, 3)
    since = started
    if keep is None:
        keep = set()
        if daemon.caches_bare_env:
            warm = run_env_task(bench, daemon, f"warmup-{daemon.kind}", 0.0, since, 600.0,
                                entry_point="hello.py", requirements=())
            since = warm.pop("_done_at")
            out["warm_up"] = warm
            say(f"{daemon.kind} warm-up (not measured): {warm['status']} in "
                f"{warm['enqueue_to_completed_s']} s")
            if warm["status"] != "completed":
                raise RuntimeError(f"the {daemon.kind} warm-up task ended {warm['status']}: "
                                   f"{warm.get('log_tail')}")
            keep = _entries(daemon.venvs_cache)
    steps: list[tuple[str, Callable[[str, float], dict[str, Any]]]] = [
        ("cold", lambda name, since: run_env_task(bench, daemon, name, phase(0), since, 900.0)),
        ("warm", lambda name, since: run_env_task(bench, daemon, name, phase(1), since, 300.0)),
        ("abort", lambda name, since: run_abort_task(
            bench, daemon, name, phase(2), since, 300.0,
            abort_phase=((round_no + 2) % rounds + 0.5) / rounds * daemon.abort_cycle_s))]
    for key, runner in steps:
        try:
            sample = runner(f"{key}-{daemon.kind}-r{round_no}", since)
        except Exception as exc:  # keep the other measurements going
            message = f"{daemon.kind} round {round_no} {key}: {type(exc).__name__}: {exc}"
            bench.errors.append(message.splitlines()[0])
            say(message)
            out[key] = {"failed": f"{type(exc).__name__}: {exc}"[:2000],
                        "daemon_log": daemon.log_tail()[-1500:]}
            since = time.perf_counter()
            continue
        since = sample.pop("_done_at")
        out[key] = sample
        say(f"{daemon.kind} round {round_no + 1} {key}: " + json.dumps(
            {k: v for k, v in sample.items() if k not in ("processes", "timeline", "task")}))
    stopped = time.perf_counter()
    out["daemon_exit_code"] = daemon.stop()
    out["daemon_stop_s"] = round(time.perf_counter() - stopped, 3)
    return out, keep


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_usage(pid: int) -> tuple[int, float]:
    """(RSS bytes, CPU seconds incl. reaped children) of a process and its descendants."""
    rss, cpu = 0, 0.0
    for proc in tree(pid):
        with contextlib.suppress(psutil.Error):
            rss += proc.memory_info().rss
            times = proc.cpu_times()
            cpu += times.user + times.system + times.children_user + times.children_system
    return rss, cpu


def measure_idle(plan: Plan, work: Path, clients: ClearmlClients | None,
                 agents: tuple[str, ...]) -> dict[str, Any]:
    """Both daemons at once, on their own server with an empty queue; RSS sampled every
    second, CPU per fifth of the window."""
    server = ServerProcess(str(work / "idle.db")).start()
    follower = LogFollower()
    daemons: dict[str, AgentDaemon] = {}
    try:
        with Session(server.url, KEY, SECRET) as api:
            api.call("queues.create", {"name": QUEUE})
            for kind in agents:
                home = work / f"idle-{kind}"
                daemons[kind] = BosunDaemon(server, home, "bench-idle-bosun", follower) \
                    if kind == "bosun" else \
                    ClearmlDaemon(server, home, "bench-idle-clearml", follower,
                                  _need(clients), plan.clearml_poll_s)
                daemons[kind].start(api)
            time.sleep(plan.idle_settle_s)
            slices = 5
            pids = {k: d.proc.pid for k, d in daemons.items() if d.proc is not None}
            rss: dict[str, list[int]] = {k: [] for k in pids}
            cpu_marks = {k: [tree_usage(p)[1]] for k, p in pids.items()}
            procs: dict[str, int] = {}
            start = time.perf_counter()
            marks = [start]
            for n in range(1, slices + 1):
                slice_end = start + plan.idle_s * n / slices
                while (now := time.perf_counter()) < slice_end:
                    for key, pid in pids.items():
                        rss[key].append(tree_usage(pid)[0])
                        procs[key] = len(tree(pid))
                    time.sleep(min(1.0, max(0.0, slice_end - now)))
                marks.append(time.perf_counter())
                for key, pid in pids.items():
                    cpu_marks[key].append(tree_usage(pid)[1])
    finally:
        for daemon in daemons.values():
            daemon.stop()
        follower.close()
        server.stop()
    out: dict[str, Any] = {}
    for key in pids:
        cpu = cpu_marks[key]
        pct = [100.0 * (cpu[i + 1] - cpu[i]) / (marks[i + 1] - marks[i]) for i in range(slices)]
        out[key] = {
            "seconds": round(marks[-1] - marks[0], 1), "processes": procs.get(key),
            "rss_mib_median": round(statistics.median(rss[key]) / 2**20, 1),
            "rss_mib_max": round(max(rss[key]) / 2**20, 1),
            "cpu_pct_window": round(100.0 * (cpu[-1] - cpu[0]) / (marks[-1] - marks[0]), 3),
            "cpu_pct_slices": [round(p, 3) for p in pct],
            "cpu_pct_median": round(statistics.median(pct), 3),
        }
    return out


# --- orchestration ---------------------------------------------------------------------------


def _need(clients: ClearmlClients | None) -> ClearmlClients:
    if clients is None:
        raise RuntimeError("the clearml-agent venv is missing")
    return clients


def run_agents(plan: Plan, work: Path, clients: ClearmlClients | None,
               agents: tuple[str, ...]) -> dict[str, Any]:
    result: dict[str, Any] = {"rounds": {k: [] for k in agents}}
    errors: list[str] = []
    server = ServerProcess(str(work / "bench.db")).start()
    follower = LogFollower()
    daemons: dict[str, AgentDaemon] = {}
    try:
        with Session(server.url, KEY, SECRET) as api:
            queue_id = api.call("queues.create", {"name": QUEUE})["id"]
            project = api.call("projects.create", {"name": "bench"})["id"]
            repo, sha = make_repo(work, {"ml.py": ML_SCRIPT, "abort.py": ABORT_SCRIPT,
                                          "hello.py": HELLO_SCRIPT})
            bench = Bench(server, api, queue_id, repo, sha, project, errors)
            for kind in agents:
                home = work / f"agent-{kind}"
                daemons[kind] = BosunDaemon(server, home, f"bench-{kind}", follower) \
                    if kind == "bosun" else \
                    ClearmlDaemon(server, home, f"bench-{kind}", follower, _need(clients),
                                  plan.clearml_poll_s)
            keep: dict[str, set[str] | None] = dict.fromkeys(agents)
            for round_no in range(plan.rounds):
                order = agents if round_no % 2 == 0 else tuple(reversed(agents))
                for kind in order:
                    say(f"round {round_no + 1}/{plan.rounds}: {kind}")
                    daemon = daemons[kind]
                    try:
                        samples, keep[kind] = run_round(bench, daemon, round_no, plan.rounds,
                                                        keep[kind])
                        result["rounds"][kind].append(samples)
                    except Exception as exc:
                        errors.append(f"{kind} round {round_no + 1}: {exc}".splitlines()[0])
                        result["rounds"][kind].append({"failed": str(exc)[:2000]})
                    finally:
                        daemon.stop()
    finally:
        for daemon in daemons.values():
            daemon.stop()
        follower.close()
        server.stop()
        result["errors"] = errors
    return result


def run_server(plan: Plan, backends: tuple[str, ...], agents: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for backend in backends:
        runner = (server_throughput.run_sqlite if backend == "sqlite"
                  else server_throughput.run_postgresql)
        out[backend] = runner(plan.server, agents)
    return out


# --- the table -------------------------------------------------------------------------------


def values(result: dict[str, Any], kind: str, phase: str, key: str) -> list[float]:
    out = []
    for round_ in result.get("rounds", {}).get(kind, []):
        sample = round_.get(phase) or {}
        value = sample.get(key)
        if isinstance(value, int | float):
            out.append(float(value))
    return out


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt_s(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    mid = statistics.median(xs)
    text = f"{mid:.2f} s" if mid < 10 else f"{mid:.1f} s"
    if len(xs) > 1:
        text += f" ({min(xs):.2f}-{max(xs):.2f})" if mid < 10 else \
            f" ({min(xs):.1f}-{max(xs):.1f})"
    return text


def ratio(clearml: float | None, bosun: float | None) -> float | None:
    if clearml is None or bosun is None or bosun <= 0:
        return None
    return clearml / bosun


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f}x" if value >= 100 else f"{value:.1f}x"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def agent_rows(agents: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    n = {k: len(agents.get("rounds", {}).get(k, [])) for k in AGENTS}

    def row(label: str, phase: str, key: str, target: str = "",
            check: Callable[[float | None, float | None], bool | None] | None = None) -> None:
        b, c = values(agents, "bosun", phase, key), values(agents, "clearml", phase, key)
        mb, mc = median(b), median(c)
        r = ratio(mc, mb)
        rows.append([label, fmt_s(b), fmt_s(c) if n.get("clearml") else "not run",
                     fmt_ratio(r), target, verdict(check(mb, r)) if check else ""])

    row("1. pickup: enqueue -> task's first output line on the server", "abort", "pickup_s",
        f"<= {TARGET_PICKUP_S} s and >= {TARGET_PICKUP_RATIO:.0f}x",
        lambda mb, r: None if mb is None else False if mb > TARGET_PICKUP_S
        else None if r is None else r >= TARGET_PICKUP_RATIO)
    row("   enqueue -> task process started (script's clock)", "abort",
        "enqueue_to_process_start_s")
    row("2. cold env: enqueue -> completed, empty caches", "cold", "enqueue_to_completed_s",
        f">= {TARGET_COLD_RATIO:.0f}x", lambda mb, r: None if r is None
        else r >= TARGET_COLD_RATIO)
    row("   environment build (cold)", "cold", "env_build_s")
    row("3. warm env: enqueue -> completed, cache hit", "warm", "enqueue_to_completed_s")
    row("   environment build (cache hit)", "warm", "env_build_s", f"<= {TARGET_WARM_ENV_S} s",
        lambda mb, r: None if mb is None else mb <= TARGET_WARM_ENV_S)
    row("4. abort: tasks.stop -> process tree gone", "abort", "abort_tree_gone_s",
        f"<= {TARGET_ABORT_S:.0f} s", lambda mb, r: None if mb is None else mb <= TARGET_ABORT_S)
    row("   tasks.stop -> status stopped", "abort", "abort_status_s")

    idle = agents.get("idle") or {}
    b, c = idle.get("bosun") or {}, idle.get("clearml") or {}
    seconds = (b or c).get("seconds", 0)
    rb, rc = b.get("rss_mib_median"), c.get("rss_mib_median")
    r = ratio(rc, rb)
    rows.append(["5. idle daemon: RSS of its process tree (median)",
                 f"{rb:.0f} MiB" if rb is not None else "n/a",
                 f"{rc:.0f} MiB" if rc is not None else "n/a", fmt_ratio(r),
                 "<= half of clearml-agent's",
                 verdict(None if r is None else r >= TARGET_RSS_RATIO)])
    cb, cc = b.get("cpu_pct_window"), c.get("cpu_pct_window")
    rows.append([f"   idle daemon: CPU % of one core over {seconds:.0f} s",
                 f"{cb:.2f} %" if cb is not None else "n/a",
                 f"{cc:.2f} %" if cc is not None else "n/a", fmt_ratio(ratio(cc, cb)), "", ""])
    return rows


def server_rows(server: dict[str, Any], agents_simulated: int) -> list[list[str]]:
    rows: list[list[str]] = []
    names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
    for backend, r in server.items():
        name = names.get(backend, backend)
        if "skipped" in r:
            rows.append([f"6. server ({name})", "skipped", "no server", "", "", ""])
            continue

        def get(workload: str, key: str, r: dict[str, Any] = r) -> Any:
            return (r.get(workload) or {}).get(key)

        pairs, lines = get("pairs", "pairs_per_s"), get("logs", "lines_per_s")
        p50, p99 = get("agents", "handout_p50_ms"), get("agents", "handout_p99_ms")
        sqlite = backend == "sqlite"
        rows.append([f"6. server ({name}): enqueue+dequeue pairs/s",
                     f"{pairs:.0f}" if pairs is not None else "n/a", "no server", "",
                     f">= {server_throughput.TARGET_PAIRS_PER_S:.0f} (SQLite)" if sqlite else "",
                     verdict(None if pairs is None or not sqlite
                             else pairs >= server_throughput.TARGET_PAIRS_PER_S)])
        rows.append([f"   server ({name}): log lines ingested/s",
                     f"{lines:.0f}" if lines is not None else "n/a", "no server", "",
                     f">= {server_throughput.TARGET_LOG_LINES_PER_S:.0f} (SQLite)"
                     if sqlite else "",
                     verdict(None if lines is None or not sqlite
                             else lines >= server_throughput.TARGET_LOG_LINES_PER_S)])
        full_size = agents_simulated >= server_throughput.TARGET_AGENTS
        rows.append([f"   server ({name}): get_next_task enqueue->agent p50 / p99, "
                     f"{agents_simulated} long-polling agents",
                     f"{p50:.1f} / {p99:.1f} ms" if p50 is not None and p99 is not None
                     else "n/a", "no server", "",
                     f"p99 < {server_throughput.TARGET_P99_DEQUEUE_MS:.0f} ms",
                     verdict(None if p99 is None or not full_size
                             else p99 < server_throughput.TARGET_P99_DEQUEUE_MS)])
    return rows


def table(rows: list[list[str]]) -> str:
    head = ["metric", "bosun", "clearml-agent", "clearml / bosun", "target", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def notes(agents: dict[str, Any], server: dict[str, Any], plan: Plan) -> list[str]:
    out = []
    rounds = agents.get("rounds", {})
    counts = {k: len(v) for k, v in rounds.items()}
    if counts:
        out.append(f"agent rows: median (min-max) of {plan.rounds} rounds per agent, the agents "
                   "alternating, one daemon at a time on the queue; each round starts from empty "
                   f"caches; task requirements: {', '.join(ML_PACKAGES)} (unpinned, from PyPI)")
    if "clearml" in counts:
        out.append(f"clearml-agent {CLEARML_AGENT_VERSION}: pip, venv cache on, polling every "
                   f"{plan.clearml_poll_s:g} s"
                   f"{' (its minimum)' if plan.clearml_poll_s == CLEARML_POLL_S else ''}")
    idle = agents.get("idle") or {}
    if "failed" in idle:
        out.append(f"idle failed: {idle['failed']}")
    elif idle and plan.idle_overlap and server:
        out.append("idle daemons measured while the server rows ran")
    for kind, rs in rounds.items():
        versions = {s.get("cold", {}).get("versions") for s in rs} | \
            {s.get("warm", {}).get("versions") for s in rs}
        versions.discard(None)
        if versions:
            out.append(f"{LABELS[kind]} installed: {'; '.join(sorted(versions))}")
        cold_hits = [s["cold"].get("cache_hit") for s in rs if "cache_hit" in s.get("cold", {})]
        warm_hits = [s["warm"].get("cache_hit") for s in rs if "cache_hit" in s.get("warm", {})]
        if any(h is not False for h in cold_hits) or any(h is not True for h in warm_hits):
            out.append(f"WARNING {LABELS[kind]}: cold runs cache hit {cold_hits}, warm runs "
                       f"cache hit {warm_hits} (expected all False / all True)")
        bad = [f"{k} {s[k].get('status')}" for s in rs for k in ("cold", "warm")
               if s.get(k, {}).get("status") not in (None, "completed")]
        bad += [f"abort ended {s['abort'].get('status')}" for s in rs
                if s.get("abort", {}).get("status") not in (None, "stopped")]
        bad += [f"abort left {s['abort']['leftover_processes']} processes" for s in rs
                if s.get("abort", {}).get("leftover_processes")]
        if bad:
            out.append(f"WARNING {LABELS[kind]}: {', '.join(bad)}")
    out += [f"error: {e}" for e in agents.get("errors", [])]
    if server:
        sizes = plan.server
        out.append(f"server rows: {sizes.pairs} enqueue+dequeue pairs, "
                   f"{sizes.log_senders * sizes.log_batches * sizes.log_batch_size} log lines, "
                   f"{sizes.agent_tasks} tasks handed out at {sizes.enqueue_rate:g}/s "
                   "(bench/server_throughput.py; its detailed table is `server_table` in the JSON)")
    for backend, r in server.items():
        if "skipped" in r:
            out.append(f"server {backend} skipped: {r['skipped']}")
            continue
        for workload in ("pairs", "logs", "agents"):
            data = r.get(workload) or {}
            if "failed" in data:
                out.append(f"server {backend} {workload} failed: {data['failed']}")
            if data.get("duplicates") or data.get("missing"):
                out.append(f"server {backend} {workload}: {data.get('duplicates')} duplicates, "
                           f"{data.get('missing')} missing")
            if workload == "logs" and data and not data.get("total_ok", True):
                out.append(f"server {backend} logs: stored total does not match")
        for line in r.get("server_log_problems") or []:
            out.append(f"server {backend} log: {line}")
    return out


# --- main ------------------------------------------------------------------------------------


def _exit_on_sigterm() -> None:
    """A SIGTERM ends the run through the `finally` blocks: no daemon or server is left."""
    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    _exit_on_sigterm()
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 rounds, 20 s idle (while the server rows run), half the "
                             "server benchmark's quick sizes")
    parser.add_argument("--rounds", type=int, help="rounds per agent (default 5, quick 2)")
    parser.add_argument("--idle-seconds", type=float, help="idle window (default 60, quick 20)")
    parser.add_argument("--clearml-polling-interval", type=float, metavar="S",
                        help="clearml-agent's polling interval (default 5, the minimum of "
                             "its --polling-interval; below 5 it is set through "
                             "CLEARML_AGENT_QUEUE_POLL_FREQ_SEC)")
    parser.add_argument("--only", choices=["agents", "server"],
                        help="only the agent rows or only the server rows")
    parser.add_argument("--no-clearml", action="store_true",
                        help="measure bosun's agent alone (no clearml-agent venv needed)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both",
                        help="server rows: which database(s)")
    parser.add_argument("--agents", type=int, default=server_throughput.TARGET_AGENTS,
                        help="server rows: simulated long-polling agents (default "
                             f"{server_throughput.TARGET_AGENTS})")
    parser.add_argument("--json", type=Path, default=BENCH / "results" / "bench.json",
                        help="where the results go (default bench/results/bench.json)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error("--rounds must be at least 1")
        plan = dataclasses.replace(plan, rounds=args.rounds)
    if args.idle_seconds is not None:
        plan = dataclasses.replace(plan, idle_s=max(5.0, args.idle_seconds))
    if args.clearml_polling_interval is not None:
        if args.clearml_polling_interval <= 0:
            parser.error("--clearml-polling-interval must be positive")
        plan = dataclasses.replace(plan, clearml_poll_s=args.clearml_polling_interval)
    if args.agents < 1:
        parser.error("--agents must be at least 1")

    began = time.perf_counter()
    doc: dict[str, Any] = {
        "benchmark": "agent_vs_clearml", "quick": args.quick, "started": time.time(),
        "plan": {"rounds": plan.rounds, "idle_s": plan.idle_s, "idle_overlap": plan.idle_overlap,
                 "server_sizes": plan.server.__dict__, "server_agents": args.agents},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "load_avg_at_start": list(os.getloadavg())},
        "versions": {"clearml_agent": CLEARML_AGENT_VERSION, "clearml": CLEARML_VERSION},
        "clearml_polling_interval_s": plan.clearml_poll_s, "ml_packages": list(ML_PACKAGES),
    }
    agents_result: dict[str, Any] = {}
    server_result: dict[str, Any] = {}
    kinds: tuple[str, ...] = ("bosun",) if args.no_clearml else AGENTS
    clients = None
    work = Path(tempfile.mkdtemp(prefix="bosun-bench-"))
    idle_box: dict[str, Any] = {}

    def idle() -> None:
        say(f"idle: {plan.idle_s:.0f} s, both daemons on an empty queue")
        try:
            idle_box["idle"] = measure_idle(plan, work / "idle", clients, kinds)
        except Exception as exc:
            idle_box["idle"] = {"failed": f"{type(exc).__name__}: {exc}"[:2000]}
        say(f"idle: {json.dumps(idle_box['idle'])}")

    try:
        if args.only != "server":
            if not args.no_clearml:
                t = time.perf_counter()
                say("the clearml + clearml-agent venv (built on first use, then cached)")
                clients = clearml_clients()
                doc["clearml_venv_s"] = round(time.perf_counter() - t, 1)
                doc["clearml_venv"] = str(clients.venv)
            agents_result = run_agents(plan, work / "agents", clients, kinds)
            shutil.rmtree(work / "agents", ignore_errors=True)  # hundreds of MB of venvs
        idle_thread = threading.Thread(target=idle, daemon=True)
        if args.only != "server" and not plan.idle_overlap:
            idle()
        elif args.only != "server":
            idle_thread.start()
        if args.only != "agents":
            backends = server_throughput.BACKENDS if args.backend == "both" \
                else (args.backend,)
            say(f"server rows: {', '.join(backends)}")
            server_result = run_server(plan, backends, args.agents)
            doc["server"] = server_result
            # server_throughput.py's own, more detailed table (CPU, correctness, empty calls).
            doc["server_table"] = server_throughput.table(server_result, args.agents)
        if idle_thread.ident is not None:
            idle_thread.join()
        if idle_box:
            agents_result["idle"] = idle_box["idle"]
        if agents_result:
            doc["agents"] = agents_result
    finally:
        if args.keep:
            say(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    rows = (agent_rows(agents_result) if agents_result else []) + \
        (server_rows(server_result, args.agents) if server_result else [])
    text = table(rows)
    note_lines = notes(agents_result, server_result, plan)
    doc["elapsed_s"] = round(time.perf_counter() - began, 1)
    doc["table"] = text
    doc["notes"] = note_lines
    print(text)
    print()
    for line in note_lines:
        print(f"- {line}")
    print(f"- total time {doc['elapsed_s']:.0f} s; JSON: {args.json}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
