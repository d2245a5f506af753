"""No task process outlives its agent: the direct child dies with the agent's thread (PDEATHSIG),
and what the task started itself is killed, from its record, by the next agent that starts.
Real processes throughout: a real server, real daemons killed with SIGKILL, real process trees."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bosun.agent import process_tree, task_records
from bosun.client import Session
from tests.support.agent_env import (
    DaemonProcess,
    make_repo,
    task_log,
    wait_for,
    wait_for_status,
)
from tests.support.podman_image import (
    BASE_IMAGE,
    engine_env,
    ensure_base_image,
    podman,
    require_podman,
)
from tests.support.server_process import ServerProcess

# The task: two `sleep` children and a shell whose own children are its grandchildren; it
# writes all their pids (and its own) to PIDS, then sleeps.
TREE = """\
import json, os, subprocess, sys, time
kids = [subprocess.Popen(["sleep", "600"]) for _ in range(2)]
shell = subprocess.Popen(["sh", "-c", "sleep 600 & echo $!; sleep 600 & echo $!; wait"],
                         stdout=subprocess.PIPE, text=True)
grandchildren = [int(shell.stdout.readline()) for _ in range(2)]
pids = [os.getpid(), *(k.pid for k in kids), shell.pid, *grandchildren]
with open(PIDS + ".tmp", "w") as out:
    json.dump(pids, out)
os.rename(PIDS + ".tmp", PIDS)
print("tree started", pids, flush=True)
time.sleep(600)
"""


def _tree_script(pids_file: Path) -> str:
    return f"PIDS = {str(pids_file)!r}\n" + TREE


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Processes:
    """Every process a test starts (or learns of) is killed at its end, also on failure; the
    create time is checked so that a reused pid is never hit."""

    def __init__(self) -> None:
        self.known: dict[int, float] = {}

    def add(self, *pids: int) -> None:
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                self.known.setdefault(pid, psutil.Process(pid).create_time())

    def add_from(self, pids_file: Path) -> list[int]:
        pids = json.loads(pids_file.read_text()) if pids_file.is_file() else []
        self.add(*pids)
        return pids

    def kill_all(self) -> None:
        for pid, created in self.known.items():
            if task_records.is_same_process(pid, created):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def processes() -> Iterator[Processes]:
    tracked = Processes()
    try:
        yield tracked
    finally:
        tracked.kill_all()


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "state"
    monkeypatch.setenv("BOSUN_AGENT_STATE_DIR", str(state))
    return state


def _records(state: Path) -> list[Path]:
    folder = state / "tasks"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


# --- the direct child -------------------------------------------------------------------------


def test_the_task_process_dies_with_the_thread_that_started_it(tmp_path: Path,
                                                              processes: Processes) -> None:
    started: list[subprocess.Popen[bytes]] = []
    thread = threading.Thread(target=lambda: started.append(process_tree.start(
        ["sleep", "600"], tmp_path, os.environ)))
    thread.start()
    thread.join()
    proc = started[0]
    processes.add(proc.pid)
    assert proc.wait(10) == -signal.SIGKILL


def test_start_keeps_popens_behaviour(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        process_tree.start(["no-such-program-bosun"], tmp_path, os.environ)
    with pytest.raises(FileNotFoundError):
        process_tree.start(["./missing.sh"], tmp_path, os.environ)
    env = {"PATH": os.environ["PATH"], "MARK": "x y"}
    proc = process_tree.start(["sh", "-c", 'echo "$MARK|${LC_CTYPE-unset}|$$"'], tmp_path, env)
    assert proc.stdout is not None
    out = proc.stdout.read().decode().strip()
    assert proc.wait(10) == 0
    assert out == f"x y|unset|{proc.pid}"  # the same process, the environment as given
    env["LC_CTYPE"] = "C"
    proc = process_tree.start(["sh", "-c", 'echo "$LC_CTYPE"'], tmp_path, env)
    assert proc.stdout is not None
    assert proc.stdout.read().decode().strip() == "C"
    proc.wait(10)


# --- records and the reaper, with a stand-in agent ---------------------------------------------

AGENT = """\
import os, sys, time
from pathlib import Path
from bosun.agent import process_tree, task_records
proc = process_tree.start([sys.executable, "-c", sys.argv[1]], Path.cwd(), os.environ)
record = task_records.track(proc, "task-of-agent", "worker-x")
print(proc.pid, flush=True)
if sys.argv[2] == "finish":
    proc.wait()
    record.close()
    print("closed", flush=True)
time.sleep(600)
"""


def _agent(tmp_path: Path, script: str, processes: Processes, then: str = "sleep"
           ) -> tuple[subprocess.Popen[str], int]:
    agent = subprocess.Popen([sys.executable, "-c", AGENT, script, then], cwd=tmp_path,
                             stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    processes.add(agent.pid)
    assert agent.stdout is not None
    child = int(agent.stdout.readline())
    processes.add(child)
    return agent, child


def test_a_dead_agents_leftovers_are_killed_and_a_live_ones_left_alone(
        tmp_path: Path, state_dir: Path, processes: Processes) -> None:
    pids_file = tmp_path / "pids.json"
    agent, child = _agent(tmp_path, _tree_script(pids_file), processes)
    try:
        wait_for(pids_file.is_file, 30, "the task's process tree")
        pids = processes.add_from(pids_file)
        assert pids[0] == child
        [record] = _records(state_dir)
        data = json.loads(record.read_text())
        assert data["task"] == "task-of-agent" and data["worker"] == "worker-x"
        assert data["pid"] == data["sid"] == data["pgid"] == child
        assert data["agent_pid"] == agent.pid
        assert data["create_time"] == pytest.approx(psutil.Process(child).create_time())

        assert task_records.reap() == 0  # the agent lives: its record is not touched
        assert all(not _gone(pid) for pid in pids)
        assert record.is_file()

        agent.kill()
        agent.wait(10)
        wait_for(lambda: _gone(child), 5, "the task process to die with its agent")
        assert all(not _gone(pid) for pid in pids[1:])  # what the task started lives on

        assert task_records.reap() == 1
        assert all(_gone(pid) for pid in pids), [p for p in pids if not _gone(p)]
        assert not record.exists()
        assert task_records.reap() == 0
    finally:
        agent.kill()
        agent.wait()


def test_a_record_whose_agent_lives_is_never_touched_even_unlocked(
        state_dir: Path, processes: Processes) -> None:
    """(another agent's record seen between the end of its task and the removal of the file)"""
    agent = subprocess.Popen(["sleep", "600"])
    task = subprocess.Popen(["sleep", "600"], start_new_session=True)
    processes.add(agent.pid, task.pid)
    try:
        record = _write_record(state_dir, task.pid, psutil.Process(task.pid).create_time(),
                               agent.pid, psutil.Process(agent.pid).create_time())
        assert task_records.reap() == 0
        assert task.poll() is None and record.is_file()
    finally:
        for proc in (agent, task):
            proc.kill()
            proc.wait()


def test_a_reused_pid_is_never_killed(state_dir: Path, processes: Processes) -> None:
    """The record's task pid (and session) is now an unrelated process, created later than the
    recorded one; its agent is dead. The reaper drops the record and kills nothing."""
    dead_agent = subprocess.Popen(["true"])
    dead_agent.wait()
    unrelated = subprocess.Popen(["sh", "-c", "sleep 600 & wait"], start_new_session=True)
    processes.add(unrelated.pid)
    wait_for(lambda: psutil.Process(unrelated.pid).children(), 10, "the unrelated child")
    grandchild = psutil.Process(unrelated.pid).children()[0].pid
    processes.add(grandchild)
    try:
        created = psutil.Process(unrelated.pid).create_time()
        record = _write_record(state_dir, unrelated.pid, created - 100, dead_agent.pid,
                               created - 200)
        assert task_records.reap() == 1
        assert not record.exists()
        assert unrelated.poll() is None and not _gone(grandchild)
    finally:
        unrelated.kill()
        unrelated.wait()


def test_the_end_of_a_task_kills_what_it_left_running(
        tmp_path: Path, state_dir: Path, processes: Processes) -> None:
    """A background process with its own output: the task's output ends with the task's main
    process, and the agent kills the rest of its session then."""
    pids_file = tmp_path / "pids.json"
    script = textwrap.dedent(f"""\
        import json, subprocess
        kid = subprocess.Popen(["sleep", "600"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        json.dump([kid.pid], open({str(pids_file)!r}, "w"))
        """)
    agent, _child = _agent(tmp_path, script, processes, then="finish")
    try:
        assert agent.stdout is not None
        assert agent.stdout.readline().strip() == "closed"
        [kid] = processes.add_from(pids_file)
        wait_for(lambda: _gone(kid), 5, "the leftover to be killed")
        assert _records(state_dir) == []
    finally:
        agent.kill()
        agent.wait()


def _write_record(state: Path, pid: int, created: float, agent_pid: int, agent_created: float
                  ) -> Path:
    folder = state / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"task-x.{agent_pid}.{pid}.json"
    path.write_text(json.dumps({
        "task": "task-x", "worker": "w", "pid": pid, "sid": os.getsid(pid),
        "pgid": os.getpgid(pid), "create_time": created, "agent_pid": agent_pid,
        "agent_create_time": agent_created, "started": time.time()}))
    return path


# --- a real daemon killed with SIGKILL --------------------------------------------------------


@pytest.fixture
def api(agent_server: ServerProcess) -> Iterator[Session]:
    with Session(agent_server.url, "k", "s") as session:
        yield session


@pytest.mark.slow
def test_a_killed_daemons_task_tree_dies_and_the_next_daemon_reaps_the_rest(
        work: Path, config: Path, api: Session, processes: Processes) -> None:
    pids_file = work / "daemon-tree-pids.json"
    repo, sha = make_repo(work / "tree", {"tree.py": _tree_script(pids_file)})
    queue = f"tree-{uuid.uuid4().hex[:8]}"
    first = DaemonProcess(config, work, "--queue", queue, "--create-queue").start()
    second: DaemonProcess | None = None
    try:
        assert first.proc is not None
        processes.add(first.proc.pid)
        task_id = api.call("tasks.create", {"name": "tree", "script": {
            "repository": str(repo), "version_num": sha, "entry_point": "tree.py",
            "working_dir": "."}})["id"]
        api.call("tasks.enqueue", {"task": task_id, "queue_name": queue})
        wait_for(pids_file.is_file, 240, "the task's process tree",
                 lambda: first.log() + str(api.call("tasks.get_by_id", {"task": task_id})))
        pids = processes.add_from(pids_file)
        state = work / "state"
        [record] = [r for r in _records(state) if r.name.startswith(task_id)]
        assert json.loads(record.read_text())["pid"] == pids[0]

        first.proc.kill()
        first.proc.wait(10)
        wait_for(lambda: _gone(pids[0]), 5, "the task process to die with its daemon")
        assert all(not _gone(pid) for pid in pids[1:])

        # The next daemon (another queue: it is to pull nothing) reaps them before it pulls.
        second = DaemonProcess(config, work, "--queue", f"{queue}-next",
                               "--create-queue").start()
        wait_for(lambda: "listening on" in second.log(), 60, "the second daemon", second.log)
        assert all(_gone(pid) for pid in pids), [p for p in pids if not _gone(p)]
        assert not record.exists()
        log = second.log()
        line = f"killed {len(pids) - 1} leftover processes of task {task_id} from a dead " \
               f"agent (pid {first.proc.pid})"
        assert line in log, log
        assert log.index(line) < log.index("listening on")
        assert api.call("tasks.get_by_id", {"task": task_id})["task"]["status"] != "completed"
    finally:
        if first.proc is not None and first.proc.poll() is None:
            first.proc.kill()
            first.proc.wait()
        if second is not None:
            assert second.stop() == 0, second.log()


@pytest.mark.slow
def test_a_task_tree_that_ends_normally_leaves_no_record(
        work: Path, config: Path, api: Session, processes: Processes) -> None:
    repo, sha = make_repo(work / "quick", {"quick.py": "print('quick ok')\n"})
    queue = f"quick-{uuid.uuid4().hex[:8]}"
    daemon = DaemonProcess(config, work, "--queue", queue, "--create-queue").start()
    try:
        task_id = api.call("tasks.create", {"name": "quick", "script": {
            "repository": str(repo), "version_num": sha, "entry_point": "quick.py",
            "working_dir": "."}})["id"]
        api.call("tasks.enqueue", {"task": task_id, "queue_name": queue})
        task = wait_for_status(api, task_id, {"completed", "failed"}, 240, daemon.log)
        assert task["status"] == "completed", daemon.log()
        assert not [r for r in _records(work / "state") if r.name.startswith(task_id)]
    finally:
        assert daemon.stop() == 0, daemon.log()


@pytest.mark.slow
def test_a_killed_daemons_container_is_removed_by_the_next_daemon(
        work: Path, config: Path, api: Session, processes: Processes,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 of the agent kills the engine's CLI, not the container: the record has the next
    daemon remove it."""
    require_podman()
    monkeypatch.setenv("CONTAINERS_CONF", engine_env()["CONTAINERS_CONF"])
    ensure_base_image()
    repo, sha = make_repo(work / "boxed", {"boxed.py": "import time\nprint('tick', flush=True)\n"
                                                     "time.sleep(600)\n"})
    queue = f"boxed-{uuid.uuid4().hex[:8]}"
    first = DaemonProcess(config, work, "--queue", queue, "--create-queue",
                          "--podman", BASE_IMAGE).start()
    second: DaemonProcess | None = None
    task_id = ""

    def running() -> list[str]:
        return podman("ps", "--filter", f"label=bosun.task={task_id}", "--filter",
                      "status=running", "--format", "{{.Names}}").stdout.split()

    try:
        assert first.proc is not None
        processes.add(first.proc.pid)
        task_id = api.call("tasks.create", {"name": "boxed", "script": {
            "repository": str(repo), "version_num": sha, "entry_point": "boxed.py",
            "working_dir": "."}})["id"]
        api.call("tasks.enqueue", {"task": task_id, "queue_name": queue})
        wait_for(lambda: "tick" in task_log(api, task_id), 300, "the task to run",
                 first.log)
        [name] = running()
        [record] = [r for r in _records(work / "state") if r.name.startswith(task_id)]
        data = json.loads(record.read_text())
        assert data["container"] == {"engine": "podman", "name": name}
        processes.add(data["pid"])

        first.proc.kill()
        first.proc.wait(10)
        wait_for(lambda: _gone(data["pid"]), 5, "the podman CLI to die with its daemon")

        second = DaemonProcess(config, work, "--queue", f"{queue}-next",
                               "--create-queue").start()
        wait_for(lambda: "listening on" in second.log(), 120, "the second daemon", second.log)
        assert not running()
        assert podman("container", "exists", name, check=False).returncode != 0
        assert f"removed container {name} of task {task_id}" in second.log(), second.log()
        assert not record.exists()
    finally:
        if first.proc is not None and first.proc.poll() is None:
            first.proc.kill()
            first.proc.wait()
        if second is not None:
            assert second.stop() == 0, second.log()
        if task_id:
            for name in running():
                podman("rm", "-f", "-t", "0", name, check=False)
