"""Samples of this machine's load for `workers.status_report`, in ClearML's keys and units
(memory in MiB, disk and network rates in MiB/s, disk_free_home in percent, GPU utilisation in
percent and temperature in degrees Celsius). Sampling never raises: a reading that fails is left
out of the report."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

MIB = 1024 * 1024
log = logging.getLogger("bosun.agent")


class GpuStats:
    """Per-GPU utilisation, memory and temperature through NVML (nvidia-ml-py), for the GPUs
    `indices` (all when None, none when empty); nothing at all where NVML is absent."""

    def __init__(self, indices: Sequence[str] | None = None) -> None:
        self._nvml: Any = None
        self._indices = None if indices is None else \
            [int(i) for i in indices if str(i).isdigit()]
        self._lock = threading.Lock()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
        except Exception:  # no driver, no library, no GPU: report no GPU fields
            self._nvml = None

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def sample(self) -> dict[str, list[float]]:
        if self._nvml is None:
            return {}
        nvml = self._nvml
        stats: dict[str, list[float]] = {"gpu_usage": [], "gpu_temperature": [],
                                         "gpu_memory_used": [], "gpu_memory_free": []}
        with self._lock:
            try:
                count = nvml.nvmlDeviceGetCount()
                indices = [i for i in self._indices if i < count] \
                    if self._indices is not None else list(range(count))
                for index in indices:
                    handle = nvml.nvmlDeviceGetHandleByIndex(index)
                    util = nvml.nvmlDeviceGetUtilizationRates(handle)
                    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                    stats["gpu_usage"].append(float(util.gpu))
                    stats["gpu_temperature"].append(float(
                        nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)))
                    stats["gpu_memory_used"].append(memory.used / MIB)
                    stats["gpu_memory_free"].append(memory.free / MIB)
            except Exception as exc:
                log.debug("GPU stats unavailable: %s", exc)
                return {}
        return stats if stats["gpu_usage"] else {}


def _safe(default: Any, read: Any) -> Any:
    try:
        return read()
    except Exception:
        return default


class MachineStats:
    def __init__(self, gpus: Sequence[str] | None = None) -> None:
        self._gpu = GpuStats(gpus)
        self._last_time = time.monotonic()
        self._last_disk = _safe(None, psutil.disk_io_counters)
        self._last_net = _safe(None, psutil.net_io_counters)
        _safe(None, lambda: psutil.cpu_percent(percpu=True))  # the first call primes counters

    def sample(self) -> dict[str, Any]:
        try:
            return self._sample()
        except Exception as exc:  # a report without stats beats a dead reporter
            log.debug("machine stats failed: %s", exc)
            return {}

    def _sample(self) -> dict[str, Any]:
        now = time.monotonic()
        elapsed = max(now - self._last_time, 1e-3)
        stats: dict[str, Any] = {}
        cpu = _safe(None, lambda: psutil.cpu_percent(percpu=True))
        if cpu is not None:
            stats["cpu_usage"] = cpu
        memory = _safe(None, psutil.virtual_memory)
        if memory is not None:
            stats["memory_used"] = (memory.total - memory.available) / MIB
            stats["memory_free"] = memory.available / MIB
        disk_usage = _safe(None, lambda: psutil.disk_usage(str(Path.home())))
        if disk_usage is not None:
            stats["disk_free_home"] = 100.0 - disk_usage.percent
        disk = _safe(None, psutil.disk_io_counters)
        net = _safe(None, psutil.net_io_counters)
        if disk is not None and self._last_disk is not None:
            stats["disk_read"] = (disk.read_bytes - self._last_disk.read_bytes) / MIB / elapsed
            stats["disk_write"] = (disk.write_bytes - self._last_disk.write_bytes) / MIB / elapsed
        if net is not None and self._last_net is not None:
            stats["network_rx"] = (net.bytes_recv - self._last_net.bytes_recv) / MIB / elapsed
            stats["network_tx"] = (net.bytes_sent - self._last_net.bytes_sent) / MIB / elapsed
        self._last_time, self._last_disk, self._last_net = now, disk, net
        temps = _cpu_temperatures()
        if temps:
            stats["cpu_temperature"] = temps
        stats.update(self._gpu.sample())
        return stats


def _cpu_temperatures() -> list[float]:
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return []
    try:
        sensors = reader()
    except Exception:
        return []
    for name in ("coretemp", "k10temp", "cpu_thermal"):
        if name in sensors:
            return [entry.current for entry in sensors[name]]
    return []
