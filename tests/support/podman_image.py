"""A real container engine for the container-mode tests: podman (as root, runc, no default
ulimits: the settings in ../shared/podman/containers.conf), and a small local base image.

No image registry is reachable from the test machines, so the base image is made here once:
`debootstrap --variant=minbase` of Debian bookworm with python3, python3-venv, git and
ca-certificates, imported with `podman import`. It stays in podman's storage, so later runs (and
other test processes: a file lock keeps two from building it at once) find it at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED_CONTAINERS_CONF = ROOT.parent / "shared" / "podman" / "containers.conf"
# The same settings, for a clone that does not sit next to `shared/`.
OWN_CONTAINERS_CONF = Path(__file__).with_name("podman-containers.conf")
BASE_IMAGE = "bosun-test-base:bookworm"
BASE_PACKAGES = "python3,python3-venv,git,ca-certificates"
LOCK = Path(tempfile.gettempdir()) / "bosun-test-base-image.lock"


def engine_env() -> dict[str, str]:
    """The environment podman needs here: CONTAINERS_CONF, unless the caller set one."""
    env = dict(os.environ)
    if not env.get("CONTAINERS_CONF"):
        conf = SHARED_CONTAINERS_CONF if SHARED_CONTAINERS_CONF.is_file() else OWN_CONTAINERS_CONF
        env["CONTAINERS_CONF"] = str(conf)
    return env


def use_engine_env() -> None:
    """Set CONTAINERS_CONF in this process (the agents the tests start inherit it)."""
    os.environ.update({k: v for k, v in engine_env().items() if k == "CONTAINERS_CONF"})


def podman(*args: str, check: bool = True,
           timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check,
                          timeout=timeout, env=engine_env())


def podman_problem() -> str | None:
    """Why podman cannot run containers here, None when it can."""
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/setup installs it)"
    if os.geteuid() != 0:
        return "the container tests run podman as root (rootful, runc)"
    try:
        proc = podman("info", "--format", "json", check=False, timeout=60)
    except subprocess.TimeoutExpired:
        return "podman info did not answer within 60 s"
    if proc.returncode != 0:
        return f"podman info failed: {(proc.stderr or proc.stdout).strip()[-300:]}"
    return None


def docker_problem() -> str | None:
    """Why the docker CLI cannot run containers here, None when it can."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    proc = subprocess.run(["docker", "info", "--format", "{{json .ServerVersion}}"],
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        return f"no docker engine here (`docker info` failed: {said[-1] if said else '?'})"
    return None


def require_podman() -> None:
    problem = podman_problem()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"podman does not work on this CI machine: {problem}")
    pytest.skip(problem)


def image_exists(image: str) -> bool:
    return podman("image", "exists", image, check=False).returncode == 0


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_base_image() -> float:
    """Build BASE_IMAGE unless podman has it; returns the seconds spent building (0: cached)."""
    if image_exists(BASE_IMAGE):
        return 0.0
    with _locked():
        if image_exists(BASE_IMAGE):
            return 0.0
        if shutil.which("debootstrap") is None:
            pytest.fail("debootstrap is not installed (scripts/setup installs it)")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="bosun-rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            proc = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm",
                 str(rootfs)], capture_output=True, text=True, timeout=1200, check=False)
            if proc.returncode != 0:
                pytest.fail(f"debootstrap failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
            shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            imported = subprocess.run(["podman", "import", "-", BASE_IMAGE], stdin=tar.stdout,
                                      capture_output=True, text=True, env=engine_env(),
                                      timeout=600, check=False)
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait()
            if imported.returncode != 0:
                pytest.fail(f"podman import failed: {imported.stderr[-2000:]}")
        return time.monotonic() - started


def derived_image(name: str, command: str, base: str = BASE_IMAGE) -> str:
    """`name`: `base` after running `command` in it (podman commit), made once."""
    if image_exists(name):
        return name
    with _locked():
        if not image_exists(name):
            container = f"bosun-test-derive-{os.getpid()}"
            podman("rm", "-f", container, check=False)
            podman("run", "--name", container, "--network", "host", "--entrypoint", "/bin/sh",
                   base, "-c", command)
            podman("commit", container, name)
            podman("rm", "-f", container, check=False)
    return name
