"""`--gpus` and `--cpu-only`: which devices a task may see."""

from __future__ import annotations

import re


class GpuSpecError(ValueError):
    pass


def parse_gpus(spec: str | None, available: int | None = None) -> list[str]:
    """`0`, `0,1`, `0-3`, `all` -> device indices as strings, in order, without repeats."""
    if spec is None or spec.strip() == "":
        return []
    spec = spec.strip()
    if spec == "all":
        if available is None:
            return ["all"]
        return [str(i) for i in range(available)]
    out: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        if "-" in part:
            low, _, high = part.partition("-")
            if not (low.isdigit() and high.isdigit()) or int(low) > int(high):
                raise GpuSpecError(f"invalid GPU range '{part}' (expected e.g. 0-3)")
            out += [str(i) for i in range(int(low), int(high) + 1)]
        elif part.isdigit():
            out.append(str(int(part)))
        else:
            raise GpuSpecError(f"invalid GPU '{part}' in --gpus {spec!r} (use 0 / 0,1 / 0-3 / all)")
    return list(dict.fromkeys(out))


def visible_devices_env(gpus: list[str], cpu_only: bool) -> dict[str, str]:
    """The variables that make CUDA (and the NVIDIA container runtime) see exactly `gpus`."""
    if cpu_only:
        return {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "none"}
    if not gpus:
        return {}
    value = ",".join(gpus)
    return {"CUDA_VISIBLE_DEVICES": value, "NVIDIA_VISIBLE_DEVICES": value,
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def resolve_gpus(spec: str | None, discovered: list[str] | None) -> list[str]:
    """`--gpus` against the devices found (`discovered`; None: discovery could not tell).

    `all` needs discovery; explicit indices are checked against it when it could tell."""
    if spec is not None and spec.strip() == "all":
        if not discovered:
            raise GpuSpecError("--gpus all: no GPU found on this machine (NVML reports none "
                               "or is not available); list them explicitly, e.g. --gpus 0,1")
        return list(discovered)
    gpus = parse_gpus(spec)
    if discovered is not None and gpus:
        missing = [g for g in gpus if g not in discovered]
        if missing:
            have = f"GPUs {', '.join(discovered)}" if discovered else "no GPU"
            raise GpuSpecError(f"--gpus {spec}: GPU {', '.join(missing)} not found "
                               f"(this machine has {have})")
    return gpus


def parse_queue_gpus(spec: str) -> tuple[str, int, int]:
    """`--dynamic-gpus` queue spec: `quad=4` -> ("quad", 4, 4); `opp=1-4` -> ("opp", 1, 4)."""
    name, sep, count = spec.rpartition("=")
    if not sep or not name:
        raise GpuSpecError(f"--dynamic-gpus: queue {spec!r} needs its GPU count, e.g. "
                           f"{spec}=2 or {spec}=1-4")
    count = count.strip()
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", count)
    if not match:
        raise GpuSpecError(f"--dynamic-gpus: {spec!r}: GPU count {count!r} is not N or MIN-MAX")
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) is not None else low
    if low < 1:
        raise GpuSpecError(f"--dynamic-gpus: {spec!r}: each task needs at least 1 GPU")
    if high < low:
        raise GpuSpecError(f"--dynamic-gpus: {spec!r}: {low}-{high} is not MIN-MAX")
    return name, low, high
