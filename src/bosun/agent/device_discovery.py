"""Which GPUs this machine has: NVML (nvidia-ml-py) when the driver is there, else none.

`BOSUN_FAKE_GPUS=N` replaces the discovery (and only it) with N simulated devices `0..N-1`, so
that tests exercise the real `--gpus` / `--dynamic-gpus` code paths on a machine without GPUs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

log = logging.getLogger("bosun.agent")

FAKE_GPUS_VAR = "BOSUN_FAKE_GPUS"

_nvml_lock = threading.Lock()


def fake_gpu_count() -> int | None:
    raw = os.environ.get(FAKE_GPUS_VAR, "").strip()
    if not raw:
        return None
    try:
        count = int(raw)
    except ValueError:
        log.warning("$%s=%r is not a number; ignored", FAKE_GPUS_VAR, raw)
        return None
    return max(count, 0)


def nvml_gpu_count() -> int | None:
    """How many GPUs NVML sees; None when NVML is not available (no driver, no library)."""
    with _nvml_lock:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:
            return None
        try:
            return int(pynvml.nvmlDeviceGetCount())
        except Exception:
            return None
        finally:
            with contextlib.suppress(Exception):
                pynvml.nvmlShutdown()


def discover_gpus() -> list[str] | None:
    """Device indices as strings (`["0", "1"]`); None when nothing can tell (no NVML), which
    is not the same as a machine known to have no GPU (`[]`)."""
    fake = fake_gpu_count()
    if fake is not None:
        return [str(i) for i in range(fake)]
    count = nvml_gpu_count()
    if count is None:
        return None
    return [str(i) for i in range(count)]
