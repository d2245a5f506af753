"""Samples of this machine's load for `workers.status_report`, in ClearML's keys and units
(memory in MiB, disk and network rates in MiB/s, disk_free_home in percent)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psutil

MIB = 1024 * 1024


class GpuStats:
    """Per-GPU utilisation, memory and temperature through NVML; nothing where NVML is absent."""

    def __init__(self) -> None:
        self._nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
        except Exception:  # no driver, no library, no GPU: report no GPU fields
            self._nvml = None

    def sample(self) -> dict[str, list[float]]:
        if self._nvml is None:
            return {}
        nvml = self._nvml
        stats: dict[str, list[float]] = {"gpu_usage": [], "gpu_temperature": [],
                                         "gpu_memory_used": [], "gpu_memory_free": []}
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                util = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                stats["gpu_usage"].append(float(util.gpu))
                stats["gpu_temperature"].append(float(
                    nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)))
                stats["gpu_memory_used"].append(memory.used / MIB)
                stats["gpu_memory_free"].append(memory.free / MIB)
        except Exception:
            return {}
        return stats


class MachineStats:
    def __init__(self) -> None:
        self._gpu = GpuStats()
        self._last_time = time.monotonic()
        self._last_disk = psutil.disk_io_counters()
        self._last_net = psutil.net_io_counters()
        psutil.cpu_percent(percpu=True)  # the first call only primes the counters

    def sample(self) -> dict[str, Any]:
        now = time.monotonic()
        elapsed = max(now - self._last_time, 1e-3)
        memory = psutil.virtual_memory()
        stats: dict[str, Any] = {
            "cpu_usage": psutil.cpu_percent(percpu=True),
            "memory_used": (memory.total - memory.available) / MIB,
            "memory_free": memory.available / MIB,
            "disk_free_home": 100.0 - psutil.disk_usage(str(Path.home())).percent,
        }
        disk, net = psutil.disk_io_counters(), psutil.net_io_counters()
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
