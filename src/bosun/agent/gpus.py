"""`--gpus` and `--cpu-only`: which devices a task may see."""

from __future__ import annotations


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
