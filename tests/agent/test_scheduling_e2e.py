"""Agent scheduling end to end: real `bosun agent daemon` processes against a real server,
running tasks whose script body is stored in the task (no repository).

Queue priority and --order-fairness over a few dozen tasks; --dynamic-gpus on 8 simulated
devices (only the device discovery is simulated: BOSUN_FAKE_GPUS) with two daemons sharing them,
tasks failing and aborted, and a daemon killed and restarted while its task runs on; services
mode with 5 long tasks, one crashing; the on/off precedence (queue tag > runtime property >
downtime) and `--status`.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bosun.agent.gpu_allocator import GpuLocks
from bosun.agent.schedule import force_value
from bosun.client import Session
from tests.support.agent_env import (
    DaemonProcess,
    agent_env,
    task_log,
    wait_for,
    wait_for_status,
)
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.slow

QUICK = "print('ok')\n"
DEVICES = ("import os\nprint('devices', *(os.environ.get(v) for v in ('CUDA_VISIBLE_DEVICES', "
           "'NVIDIA_VISIBLE_DEVICES', 'CUDA_DEVICE_ORDER')))\n")

# Prints its devices and its run time as one JSON line; fails when FAIL is in its name.
GPU_TASK = """\
import json, os, sys, time
start = time.time()
time.sleep({seconds})
end = time.time()
print("RUN " + json.dumps({{"gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start,
                          "end": end, "order": os.environ.get("CUDA_DEVICE_ORDER")}}), flush=True)
sys.exit({code})
"""

# Finishes only when the other task of its pair runs at the same time.
BARRIER = """\
import os, time
folder = {folder!r}
open(os.path.join(folder, "{me}"), "w").close()
for _ in range(200):
    if os.path.exists(os.path.join(folder, "{other}")):
        break
    time.sleep(0.1)
else:
    raise SystemExit("the other task never ran at the same time")
time.sleep(0.5)
print("gpus", os.environ["CUDA_VISIBLE_DEVICES"])
"""

# Runs until the file `stop` or `stop-{me}` appears in {folder}; with crash=True, raises once
# `crash` appears.
SERVICE = """\
import os, time
folder = {folder!r}
print("devices", repr(os.environ.get("CUDA_VISIBLE_DEVICES")), flush=True)
for i in range(3000):
    print("alive", i, flush=True)
    if {crash} and os.path.exists(os.path.join(folder, "crash")):
        raise RuntimeError("service crashed on purpose")
    if os.path.exists(os.path.join(folder, "stop")) or \\
            os.path.exists(os.path.join(folder, "stop-{me}")):
        break
    time.sleep(0.2)
"""


@pytest.fixture
def api(agent_server: ServerProcess) -> Iterator[Session]:
    with Session(agent_server.url, "k", "s") as session:
        yield session


_names = itertools.count()


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _create_queue(api: Session, name: str) -> str:
    return str(api.call("queues.create", {"name": name})["id"])


def _enqueue(api: Session, queue: str, body: str, name: str = "") -> str:
    task_id = api.call("tasks.create", {
        "name": name or f"t{next(_names)}", "script": {"diff": body, "entry_point": "t.py"}})["id"]
    api.call("tasks.enqueue", {"task": task_id, "queue_name": queue})
    return str(task_id)


def _daemon(config: Path, work: Path, *args: str, **env: str) -> DaemonProcess:
    proc = DaemonProcess(config, work, *args)
    proc.env.update(env)
    return proc.start()


def _started_order(api: Session, task_ids: list[str]) -> list[str]:
    tasks = api.call("tasks.get_all", {"id": task_ids, "only_fields": ["id", "started"]})["tasks"]
    return [t["id"] for t in sorted(tasks, key=lambda t: t["started"])]


def _all_done(api: Session, task_ids: list[str], statuses: set[str], timeout: float,
              proc: DaemonProcess) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        tasks = api.call("tasks.get_all", {"id": task_ids,
                                           "only_fields": ["id", "status", "started"]})["tasks"]
        return tasks if all(t["status"] in statuses for t in tasks) else None

    return wait_for(done, timeout, f"{len(task_ids)} tasks to finish", proc.log)


def _workers(api: Session) -> list[str]:
    return [w["id"] for w in api.call("workers.get_all")["workers"]]


# --- queue priority and order fairness ------------------------------------------------------


def test_priority_then_fairness_over_dozens_of_tasks(
    api: Session, config: Path, work: Path
) -> None:
    high, mid, low = _unique("high"), _unique("mid"), _unique("low")
    for name in (high, mid, low):
        _create_queue(api, name)
    queued: dict[str, list[str]] = {high: [], mid: [], low: []}
    for _ in range(6):  # interleaved, so that enqueue order alone gives no priority order
        for name in (low, mid, high):
            queued[name].append(_enqueue(api, name, QUICK))
    proc = _daemon(config, work, "--queue", high, mid, low)
    try:
        every = [t for ids in queued.values() for t in ids]
        tasks = _all_done(api, every, {"completed", "failed"}, 120, proc)
        assert {t["status"] for t in tasks} == {"completed"}
        assert _started_order(api, every) == queued[high] + queued[mid] + queued[low]
    finally:
        assert proc.stop() == 0, proc.log()

    a, b, c = _unique("fair-a"), _unique("fair-b"), _unique("fair-c")
    fair: dict[str, list[str]] = {a: [], b: [], c: []}
    for name, count in ((a, 10), (b, 4), (c, 4)):
        _create_queue(api, name)
        fair[name] = [_enqueue(api, name, QUICK) for _ in range(count)]
    proc = _daemon(config, work, "--queue", a, b, c, "--order-fairness")
    try:
        every = [t for ids in fair.values() for t in ids]
        _all_done(api, every, {"completed", "failed"}, 120, proc)
        expected = [fair[q][i] for i in range(4) for q in (a, b, c)] + fair[a][4:]
        assert _started_order(api, every) == expected
    finally:
        assert proc.stop() == 0, proc.log()


# --- dynamic GPUs ---------------------------------------------------------------------------


def _runs(api: Session, task_ids: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for task_id in task_ids:
        lines = [line for line in task_log(api, task_id) if line.startswith("RUN ")]
        if lines:
            out[task_id] = json.loads(lines[-1][4:])
    return out


def test_dynamic_gpus_never_overallocated_and_released(
    api: Session, config: Path, work: Path
) -> None:
    quad, dual, opp = _unique("quad"), _unique("dual"), _unique("opp")
    for name in (quad, dual, opp):
        _create_queue(api, name)
    args = ("--dynamic-gpus", "--gpus", "0-7", "--queue", f"{quad}=4", f"{dual}=2",
            f"{opp}=1-4")
    first = _daemon(config, work, *args, BOSUN_FAKE_GPUS="8")
    second = _daemon(config, work, *args, BOSUN_FAKE_GPUS="8")
    try:
        wait_for(lambda: len(_workers(api)) >= 2, 30, "two dynamic workers",
                 lambda: first.log() + second.log())
        wanted: dict[str, tuple[int, int]] = {}
        ok: list[str] = []
        for _ in range(4):
            for queue, low, high in ((quad, 4, 4), (dual, 2, 2), (opp, 1, 4)):
                task = _enqueue(api, queue, GPU_TASK.format(seconds=0.8, code=0))
                wanted[task] = (low, high)
                ok.append(task)
        failing = [_enqueue(api, dual, GPU_TASK.format(seconds=0.3, code=3)) for _ in range(2)]
        for task in failing:
            wanted[task] = (2, 2)
        aborted = _enqueue(api, quad, "import time\nprint('long', flush=True)\ntime.sleep(120)\n")
        wait_for_status(api, aborted, {"in_progress"}, 60, first.log)
        wait_for(lambda: "long" in task_log(api, aborted), 30, "the long task to run")
        api.call("tasks.stop", {"task": aborted})
        tasks = _all_done(api, [*ok, *failing, aborted], {"completed", "failed", "stopped"}, 120,
                          first)
        status = {t["id"]: t["status"] for t in tasks}
        assert {status[t] for t in ok} == {"completed"}, first.log() + second.log()
        assert {status[t] for t in failing} == {"failed"}
        assert status[aborted] == "stopped"

        runs = _runs(api, ok + failing)
        assert set(runs) == set(ok + failing)
        for task, run in runs.items():
            gpus = run["gpus"].split(",")
            low, high = wanted[task]
            assert low <= len(gpus) <= high, (task, run)
            assert set(gpus) <= {str(i) for i in range(8)}
            assert run["order"] == "PCI_BUS_ID"
        overlapping = 0
        for (t1, r1), (t2, r2) in itertools.combinations(runs.items(), 2):
            if r1["start"] < r2["end"] and r2["start"] < r1["end"]:
                overlapping += 1
                shared = set(r1["gpus"].split(",")) & set(r2["gpus"].split(","))
                assert not shared, f"GPUs {shared} given to {t1} and {t2} at the same time"
        assert overlapping >= 3, "the tasks never ran concurrently"
        started = [len(re.findall(r"running task \w+ from queue .* on GPUs [\d,]+ as worker "
                                  r"\S+:gpu[\d,]+", p.log())) for p in (first, second)]
        print("tasks started by each daemon:", started)
        assert sum(started) == len(ok) + len(failing) + 1

        # Everything was released after success, failure and abort (idle daemons hold none) ...
        eight = [str(i) for i in range(8)]
        locks = GpuLocks(work / "state" / "gpus")
        wait_for(lambda: locks.free(eight) == eight, 10, "all GPUs to be free")
        # ... and two quad tasks that only finish when they run at the same time get all 8.
        barrier = work / _unique("barrier")
        barrier.mkdir()
        pair = [_enqueue(api, quad, BARRIER.format(folder=str(barrier), me=i, other=1 - i))
                for i in range(2)]
        tasks = _all_done(api, pair, {"completed", "failed"}, 60, first)
        assert {t["status"] for t in tasks} == {"completed"}, "\n".join(
            [f"{t}: {api.call('tasks.get_by_id', {'task': t})['task'].get('status_message')}\n"
             + "\n".join(task_log(api, t)) for t in pair] + [first.log(), second.log()])
    finally:
        assert first.stop() == 0, first.log()
        assert second.stop() == 0, second.log()


def test_a_killed_dynamic_daemons_task_dies_frees_its_gpus_and_runs_again(
        api: Session, config: Path, work: Path) -> None:
    """kill -9 of a dynamic daemon: its task's process dies with it (no orphan holds the GPUs),
    and the next daemon on the machine gives the task back to the server at once (it was run
    under the same sub-worker id), which requeues it to the front: it runs again, to the end."""
    queue = _unique("pair")
    _create_queue(api, queue)
    state = work / "restart-state"
    args = ("--dynamic-gpus", "--queue", f"{queue}=2")
    env = {"BOSUN_FAKE_GPUS": "2", "BOSUN_AGENT_STATE_DIR": str(state)}
    marker = work / f"orphan-{uuid.uuid4().hex[:6]}"
    body = (f"import time, pathlib\nprint('victim running', flush=True)\ntime.sleep(4)\n"
            f"pathlib.Path({str(marker)!r}).write_text(repr(time.time()))\n")
    first = _daemon(config, work, *args, **env)
    second: DaemonProcess | None = None
    try:
        victim = _enqueue(api, queue, body)
        wait_for(lambda: "victim running" in task_log(api, victim), 60, "the task to run",
                 first.log)
        assert first.proc is not None
        first.proc.kill()
        first.proc.wait()
        locks = GpuLocks(state / "gpus")
        wait_for(lambda: locks.free(["0", "1"]) == ["0", "1"], 10,
                 "the killed daemon's task to die and free its GPUs")
        assert not marker.exists(), "the task ran on after its daemon was killed"
        second = _daemon(config, work, *args, **env)
        follower = _enqueue(api, queue, GPU_TASK.format(seconds=0, code=0))
        tasks = _all_done(api, [victim, follower], {"completed", "failed"}, 90, second)
        assert {t["status"] for t in tasks} == {"completed"}, second.log()
        assert marker.exists()
        assert any("requeued (attempt 2 of 2)" in line for line in task_log(api, victim))
    finally:
        if second is not None:
            assert second.stop() == 0, second.log()
        first.stop()


# --- services mode --------------------------------------------------------------------------


def test_services_mode_five_long_tasks_one_crashing(
    api: Session, config: Path, work: Path
) -> None:
    queue = _unique("services")
    _create_queue(api, queue)
    folder = work / queue
    folder.mkdir()
    worker = f"services-{uuid.uuid4().hex[:6]}"
    proc = _daemon(config, work, "--queue", queue, "--services-mode", "5", "--cpu-only",
                   CLEARML_WORKER_ID=worker)
    try:
        healthy = [_enqueue(api, queue, SERVICE.format(folder=str(folder), crash=False, me=i))
                   for i in range(4)]
        crasher = _enqueue(api, queue, SERVICE.format(folder=str(folder), crash=True, me=4))
        sixth = _enqueue(api, queue, SERVICE.format(folder=str(folder), crash=False, me=5))
        five = [*healthy, crasher]
        subs = {f"{worker}:service:{t}" for t in five}
        wait_for(lambda: subs <= set(_workers(api)), 60, "5 service workers", proc.log)
        for task in five:
            wait_for(lambda t=task: "alive" in " ".join(task_log(api, t)), 30,
                     f"service {task} to run", proc.log)
            assert "devices ''" in task_log(api, task)  # --cpu-only
        time.sleep(1)  # the limit holds: the sixth waits in its queue
        assert api.call("tasks.get_by_id", {"task": sixth})["task"]["status"] == "queued"

        (folder / "crash").write_text("")
        failed = wait_for_status(api, crasher, {"failed", "completed"}, 30, proc.log)
        assert failed["status"] == "failed"
        assert "RuntimeError: service crashed on purpose" in "\n".join(task_log(api, crasher))
        wait_for(lambda: f"{worker}:service:{crasher}" not in _workers(api), 10,
                 "the crashed service's worker to go")
        before = {t: len(task_log(api, t)) for t in healthy}
        wait_for_status(api, sixth, {"in_progress"}, 30, proc.log)  # its slot was freed
        time.sleep(1.0)
        for task in healthy:
            assert api.call("tasks.get_by_id", {"task": task})["task"]["status"] == \
                "in_progress"
            assert len(task_log(api, task)) > before[task], "a service stopped with the crash"

        # SIGTERM once: no new task, the running ones go on and may finish ...
        assert proc.proc is not None
        last = _enqueue(api, queue, SERVICE.format(folder=str(folder), crash=False, me=6))
        proc.proc.send_signal(signal.SIGTERM)
        (folder / "stop-0").write_text("")
        assert wait_for_status(api, healthy[0], {"completed", "failed"}, 30,
                               proc.log)["status"] == "completed"
        time.sleep(0.5)
        assert proc.proc.poll() is None
        running = [*healthy[1:], sixth]
        assert {api.call("tasks.get_by_id", {"task": t})["task"]["status"]
                for t in running} == {"in_progress"}
        assert api.call("tasks.get_by_id", {"task": last})["task"]["status"] == "queued"
        # ... twice: they are aborted, the daemon unregisters everything and exits
        proc.proc.send_signal(signal.SIGTERM)
        try:
            assert proc.proc.wait(30) == 0, proc.log()
        except subprocess.TimeoutExpired:
            proc.proc.send_signal(signal.SIGUSR1)  # the daemon dumps its threads' stacks
            time.sleep(1)
            raise AssertionError(f"no exit after the second signal:\n{proc.log()}") from None
        tasks = _all_done(api, running, {"completed", "failed", "stopped"}, 10, proc)
        assert {t["status"] for t in tasks} == {"stopped"}
        assert not [w for w in _workers(api) if w.startswith(worker)]
    finally:
        (folder / "stop").write_text("")
        assert proc.stop() == 0, proc.log()


# --- on / off ---------------------------------------------------------------------------------


def _bosun(config: Path, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if args[0] == "agent":
        args = ("agent", "--config-file", str(config), *args[1:])
    else:
        args = (*args, "--config-file", str(config))
    result = subprocess.run([sys.executable, "-m", "bosun", *args], capture_output=True,
                            text=True, timeout=60, env=agent_env(work))
    assert result.returncode == 0, result.stderr
    return result


def _status(config: Path, work: Path) -> str:
    return _bosun(config, work, "agent", "daemon", "--status").stdout


def _force(api: Session, worker: str, value: str) -> None:
    item: dict[str, Any] = {"key": "force", "value": value}
    api.call("workers.set_runtime_properties", {"worker": worker, "runtime_properties": [item]})


def test_off_worker_pulls_nothing_and_overrides_win(
    api: Session, config: Path, work: Path
) -> None:
    """Always-down schedule: idle; force=on: pulls; force=off: idle; queue tag on: pulls."""
    queue = _unique("offq")
    queue_id = _create_queue(api, queue)
    worker = f"sched-{uuid.uuid4().hex[:6]}"
    proc = _daemon(config, work, "--queue", queue, "--downtime", "00-00 SUN-SAT",
                   "--gpus", "1,3", CLEARML_WORKER_ID=worker, BOSUN_FAKE_GPUS="4")
    try:
        wait_for(lambda: worker in _workers(api), 30, "the worker to register", proc.log)
        wait_for(lambda: "is idle" in proc.log(), 10, "the idle notice", proc.log)
        first = _enqueue(api, queue, DEVICES)
        time.sleep(2.5)
        assert api.call("tasks.get_by_id", {"task": first})["task"]["status"] == "queued"
        assert worker in _workers(api)  # idle, still registered
        status = _status(config, work)
        assert f"worker {worker}" in status
        assert re.search(r"state: off \(inside downtime 00-00 SUN-SAT\)", status), status

        forced = _bosun(config, work, "worker", "force", worker, "on", "--for", "1h")
        assert forced.stdout.strip() == f"worker {worker}: force on for 1h"
        [prop] = api.call("workers.get_runtime_properties", {"worker": worker})[
            "runtime_properties"]
        assert prop["key"] == "force" and prop["value"] == "on" and 3500 < prop["expiry"] <= 3600
        # the runtime property beats the schedule
        assert wait_for_status(api, first, {"completed", "failed"}, 60,
                               proc.log)["status"] == "completed"
        assert "devices 1,3 1,3 PCI_BUS_ID" in task_log(api, first)  # --gpus 1,3
        assert "state: on (runtime property force=on)" in _status(config, work)

        _force(api, worker, "off")
        wait_for(lambda: "runtime property force=off" in proc.log(), 10, "force off", proc.log)
        second = _enqueue(api, queue, QUICK)
        time.sleep(2.5)
        assert api.call("tasks.get_by_id", {"task": second})["task"]["status"] == "queued"

        api.call("queues.update", {"queue": queue_id, "tags": ["force_workers:on"]})
        assert wait_for_status(api, second, {"completed", "failed"}, 60,
                               proc.log)["status"] == "completed"
        _bosun(config, work, "worker", "force", worker, "clear")
        props = api.call("workers.get_runtime_properties", {"worker": worker})
        assert force_value(props["runtime_properties"]) is None
    finally:
        assert proc.stop() == 0, proc.log()
