"""GPUs without a GPU: `--gpus` resolution against the (simulated) device discovery, queue GPU
counts, the per-GPU lock files (exclusive / shared, held on by the task's process, dropped when
a process dies), and machine stats that never raise, with NVML replaced by a stand-in."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from bosun.agent import machine_stats, process_tree
from bosun.agent.device_discovery import discover_gpus
from bosun.agent.gpu_allocator import GpuLocks
from bosun.agent.gpus import GpuSpecError, parse_queue_gpus, resolve_gpus, visible_devices_env
from bosun.agent.machine_stats import GpuStats, MachineStats

EIGHT = [str(i) for i in range(8)]


@pytest.mark.parametrize(("spec", "discovered", "gpus"), [
    ("0", EIGHT, ["0"]),
    ("0,1", EIGHT, ["0", "1"]),
    ("0-3", EIGHT, ["0", "1", "2", "3"]),
    ("all", EIGHT, EIGHT),
    ("all", ["0", "1"], ["0", "1"]),
    ("3,1,3", EIGHT, ["3", "1"]),
    ("0-7", None, EIGHT),  # discovery can not tell: taken as given
    (None, EIGHT, []),
])
def test_resolve_gpus(spec: str | None, discovered: list[str] | None, gpus: list[str]) -> None:
    assert resolve_gpus(spec, discovered) == gpus


@pytest.mark.parametrize(("spec", "discovered", "message"), [
    ("all", None, "--gpus all: no GPU found on this machine"),
    ("all", [], "--gpus all: no GPU found on this machine"),
    ("0-9", EIGHT, "--gpus 0-9: GPU 8, 9 not found (this machine has GPUs 0, 1, 2, 3, 4, 5"),
    ("0", [], "--gpus 0: GPU 0 not found (this machine has no GPU)"),
    ("a-b", EIGHT, "invalid GPU range 'a-b'"),
])
def test_resolve_gpus_errors(spec: str, discovered: list[str] | None, message: str) -> None:
    with pytest.raises(GpuSpecError) as caught:
        resolve_gpus(spec, discovered)
    assert message in str(caught.value)


def test_fake_discovery_replaces_only_the_device_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOSUN_FAKE_GPUS", "8")
    assert discover_gpus() == EIGHT
    monkeypatch.setenv("BOSUN_FAKE_GPUS", "0")
    assert discover_gpus() == []
    monkeypatch.delenv("BOSUN_FAKE_GPUS")
    found = discover_gpus()  # the real NVML path: None on a machine without the driver
    assert found is None or all(g.isdigit() for g in found)


def test_visible_devices_env() -> None:
    assert visible_devices_env(["2", "3"], False) == {
        "CUDA_VISIBLE_DEVICES": "2,3", "NVIDIA_VISIBLE_DEVICES": "2,3",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert visible_devices_env(["0"], True) == {"CUDA_VISIBLE_DEVICES": "",
                                                "NVIDIA_VISIBLE_DEVICES": "none"}
    assert visible_devices_env([], False) == {}


@pytest.mark.parametrize(("spec", "parsed"), [
    ("quad=4", ("quad", 4, 4)),
    ("dual_gpu=2", ("dual_gpu", 2, 2)),
    ("opportunistic=1-4", ("opportunistic", 1, 4)),
    ("a=b=2", ("a=b", 2, 2)),
])
def test_parse_queue_gpus(spec: str, parsed: tuple[str, int, int]) -> None:
    assert parse_queue_gpus(spec) == parsed


@pytest.mark.parametrize(("spec", "message"), [
    ("quad", "queue 'quad' needs its GPU count, e.g. quad=2 or quad=1-4"),
    ("=2", "needs its GPU count"),
    ("q=", "GPU count '' is not N or MIN-MAX"),
    ("q=x", "GPU count 'x' is not N or MIN-MAX"),
    ("q=0", "each task needs at least 1 GPU"),
    ("q=4-2", "4-2 is not MIN-MAX"),
])
def test_parse_queue_gpus_errors(spec: str, message: str) -> None:
    with pytest.raises(GpuSpecError) as caught:
        parse_queue_gpus(spec)
    assert message in str(caught.value)


# --- lock files ------------------------------------------------------------------------------


@pytest.fixture
def locks(tmp_path: Path) -> GpuLocks:
    return GpuLocks(tmp_path / "gpus")


def test_exclusive_locks_are_never_given_twice(locks: GpuLocks) -> None:
    first = locks.take(EIGHT, 4)
    assert first.gpus == ["0", "1", "2", "3"]
    second = locks.take(EIGHT, 4)
    assert second.gpus == ["4", "5", "6", "7"]
    assert locks.take(EIGHT, 1).gpus == []
    assert locks.free(EIGHT) == []
    second.keep(1)
    assert second.gpus == ["4"]
    assert locks.free(EIGHT) == ["5", "6", "7"]
    third = locks.take(locks.free(EIGHT), 8)
    assert third.gpus == ["5", "6", "7"]
    for lease in (first, second, third):
        lease.release()
    assert locks.free(EIGHT) == EIGHT


def test_shared_locks_exclude_exclusive_ones(locks: GpuLocks) -> None:
    shared = locks.take_all(["0", "1"], shared=True)
    assert shared is not None
    again = locks.take_all(["0"], shared=True)  # two --gpus 0 daemons may share GPU 0
    assert again is not None
    assert locks.free(["0", "1", "2"]) == ["2"]
    other = locks.take(["0", "1", "2"], 3)
    assert other.gpus == ["2"]
    other.release()
    assert locks.holders(["0"]) == {"0": "in use by a --gpus daemon's task"}
    shared.release()
    again.release()
    exclusive = locks.take(["0"], 1)
    assert not locks.available_shared(["0", "1"])
    assert locks.take_all(["0", "1"], shared=True) is None
    assert locks.free(["1"]) == ["1"]  # all or nothing: GPU 1 was not kept
    exclusive.note({"task": "t1", "worker": "w:gpu0", "since": time.time()})
    assert locks.holders(["0", "1"])["0"].startswith("task t1 (worker w:gpu0, since ")
    assert locks.holders(["0", "1"])["1"] == "free"
    exclusive.release()
    assert locks.available_shared(["0", "1"])


def test_the_task_process_holds_its_gpus_until_it_exits(locks: GpuLocks, tmp_path: Path) -> None:
    lease = locks.take(EIGHT, 2)
    with process_tree.inheriting(lease.descriptors()):
        child = process_tree.start([sys.executable, "-c", "import time; time.sleep(30)"],
                                   tmp_path, dict(os.environ))
    lease.release()  # the daemon lets go (or dies) ...
    assert locks.free(["0", "1"]) == []  # ... the running task still holds them
    child.send_signal(signal.SIGKILL)  # a task that crashes hard
    child.wait()
    assert child.stdout is not None
    child.stdout.close()
    assert locks.free(["0", "1"]) == ["0", "1"]
    plain = process_tree.start([sys.executable, "-c", "import time; time.sleep(30)"],
                               tmp_path, dict(os.environ))  # outside the block: inherits none
    try:
        held = locks.take(["0"], 1)
        assert held.gpus == ["0"]
        held.release()
    finally:
        plain.kill()
        plain.wait()
        assert plain.stdout is not None
        plain.stdout.close()


def test_a_killed_holder_releases_its_gpus(locks: GpuLocks) -> None:
    code = ("import sys; from pathlib import Path; from bosun.agent.gpu_allocator import "
            "GpuLocks; lease = GpuLocks(Path(sys.argv[1])).take(['0', '1', '2'], 3); "
            "print(lease.gpus, flush=True); import time; time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(locks.root)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "['0', '1', '2']"
        assert locks.free(EIGHT[:4]) == ["3"]
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert locks.free(EIGHT[:4]) == EIGHT[:4]


# --- machine stats -----------------------------------------------------------------------------


class FakeNvml:
    """nvidia-ml-py's calls the stats use, for three GPUs."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, fail_on: str = "") -> None:
        self.fail_on = fail_on

    def _maybe_fail(self, name: str) -> None:
        if name == self.fail_on:
            raise RuntimeError(f"NVML {name} failed")

    def nvmlInit(self) -> None:
        self._maybe_fail("init")

    def nvmlDeviceGetCount(self) -> int:
        return 3

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        self._maybe_fail("utilization")
        return SimpleNamespace(gpu=10 * (handle + 1), memory=5)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(used=(handle + 1) * 1024 * 1024 * 1024, free=2 * 1024 * 1024 * 1024,
                               total=0)

    def nvmlDeviceGetTemperature(self, handle: int, _sensor: int) -> int:
        return 40 + handle


def _with_nvml(monkeypatch: pytest.MonkeyPatch, nvml: FakeNvml) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", nvml)


def test_gpu_stats_from_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_nvml(monkeypatch, FakeNvml())
    assert GpuStats().sample() == {
        "gpu_usage": [10.0, 20.0, 30.0], "gpu_temperature": [40.0, 41.0, 42.0],
        "gpu_memory_used": [1024.0, 2048.0, 3072.0], "gpu_memory_free": [2048.0] * 3}
    only = GpuStats(["1", "7"]).sample()  # the daemon's GPUs; 7 does not exist
    assert only["gpu_usage"] == [20.0] and only["gpu_temperature"] == [41.0]
    assert GpuStats([]).sample() == {}  # --cpu-only


@pytest.mark.parametrize("fail_on", ["init", "utilization"])
def test_gpu_stats_failures_mean_no_gpu_fields(monkeypatch: pytest.MonkeyPatch,
                                               fail_on: str) -> None:
    _with_nvml(monkeypatch, FakeNvml(fail_on))
    assert GpuStats().sample() == {}
    assert not any(key.startswith("gpu") for key in MachineStats().sample())


def test_without_nvml_no_gpu_fields_and_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    stats = MachineStats().sample()
    assert "cpu_usage" in stats and "memory_used" in stats
    assert not any(key.startswith("gpu") for key in stats)


def test_machine_stats_never_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError("no /proc here")

    for name in ("cpu_percent", "virtual_memory", "disk_usage", "disk_io_counters",
                 "net_io_counters", "sensors_temperatures"):
        monkeypatch.setattr(psutil, name, broken, raising=False)
    stats = MachineStats()
    assert not [key for key in stats.sample() if not key.startswith("gpu")]
    monkeypatch.setattr(machine_stats.MachineStats, "_sample", broken)
    assert stats.sample() == {}


# --- the dynamic daemon's pull step, against a stand-in server -------------------------------


class PollServer:
    """Answers `queues.get_next_task` (recording what was asked and which GPUs were free at
    that moment) and the calls putting a task back; `during_poll` runs inside the poll."""

    def __init__(self, locks: GpuLocks, task: str | None = None) -> None:
        self.locks = locks
        self.task = task
        self.host = "http://fake"
        self.asked: list[list[str]] = []
        self.free_while_asked: list[list[str]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.during_poll: Any = None

    def call(self, endpoint: str, data: dict[str, Any] | None = None,
             **_kwargs: Any) -> dict[str, Any]:
        data = data or {}
        self.calls.append((endpoint, data))
        if endpoint == "queues.get_next_task":
            self.asked.append(list(data["queues"]))
            self.free_while_asked.append(self.locks.free(EIGHT))
            if self.during_poll is not None:
                self.during_poll()
            if self.task is None:
                return {}
            task, self.task = self.task, None
            return {"entry": {"task": task}, "queue": data["queues"][0]}
        return {}


QUEUES = [{"id": "quad", "name": "quad"}, {"id": "dual", "name": "dual"},
          {"id": "opp", "name": "opp"}]
WANTS = {"quad": (4, 4), "dual": (2, 2), "opp": (1, 4)}


def _dynamic(server: PollServer, locks: GpuLocks) -> Any:
    from bosun.agent.config import Config
    from bosun.agent.daemon import Daemon

    daemon = Daemon(server, Config(), "w", QUEUES, gpus=EIGHT,  # type: ignore[arg-type]
                    dynamic_gpus=WANTS, gpu_locks=locks)
    daemon._long_poll = True
    return daemon


def test_an_idle_dynamic_daemon_holds_no_gpu_while_it_asks(locks: GpuLocks) -> None:
    server = PollServer(locks)
    daemon = _dynamic(server, locks)
    daemon._step_dynamic(QUEUES)
    assert server.asked == [["quad", "dual", "opp"]]
    assert server.free_while_asked == [EIGHT]
    other = locks.take(EIGHT, 6)  # another daemon's tasks: 2 GPUs left
    daemon._step_dynamic(QUEUES)
    assert server.asked[-1] == ["dual", "opp"]  # quad's tasks wait in their queue
    assert server.free_while_asked[-1] == ["6", "7"]
    seventh = locks.take(EIGHT, 1)
    daemon._step_dynamic(QUEUES)
    assert server.asked[-1] == ["opp"]
    last = locks.take(EIGHT, 1)
    before = len(server.asked)
    daemon._step_dynamic(QUEUES)  # no GPU free: nothing asked
    assert len(server.asked) == before
    assert daemon._waiting_note == "0 of 8 GPUs free, too few for quad, dual, opp"
    for lease in (other, seventh, last):
        lease.release()


def test_a_task_short_of_gpus_goes_back_to_the_front(locks: GpuLocks) -> None:
    server = PollServer(locks, task="t1")
    daemon = _dynamic(server, locks)
    taken: list[Any] = []
    server.during_poll = lambda: taken.append(locks.take(EIGHT, 6))  # another daemon, meanwhile
    daemon._step_dynamic(QUEUES)
    assert [c for c in server.calls if c[0].startswith("queues.") and "next" not in c[0]] == [
        ("queues.add_task", {"queue": "quad", "task": "t1"}),
        ("queues.move_task_to_front", {"queue": "quad", "task": "t1"})]
    assert not daemon.running
    taken[0].release()
    assert locks.free(EIGHT) == EIGHT  # the daemon kept nothing
