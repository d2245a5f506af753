"""The container engine's command line: `docker` or `podman` (same flags, another binary).

Everything here shells out to the engine's CLI; nothing talks to a daemon socket. Errors a user
can act on are `ContainerError`s with a one-line `reason` (for a task's status message) and the
engine's output as `detail` (for the task log).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

ENGINES = ("docker", "podman")
_QUICK_TIMEOUT_S = 60.0
_REASON_MAX = 300


class ContainerError(Exception):
    """A container step failed: `reason` is one line, `detail` the engine's output."""

    def __init__(self, reason: str, detail: str = "") -> None:
        reason = " ".join(reason.split())
        if len(reason) > _REASON_MAX:
            reason = reason[:_REASON_MAX - 3] + "..."
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def last_error_line(output: str) -> str:
    """The line of engine output that says what went wrong (`Error: ...` in both engines)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.lower().startswith(("error:", "error response from daemon:")):
            return line.split(":", 1)[1].strip()
    return lines[-1] if lines else "no output"


def split_arguments(value: str | Sequence[str] | None) -> list[str]:
    """Container arguments as stored on a task (one string) or in the configuration (a list,
    each item one argument, or one string): the argv list."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError:
            return value.split()
    return [str(v) for v in value if str(v) != ""]


def has_network_option(args: Iterable[str]) -> bool:
    return any(a in ("--network", "--net") or a.startswith(("--network=", "--net="))
               for a in args)


@dataclass(frozen=True)
class Engine:
    """`binary` is the CLI to call: `docker` or `podman` (or a path to one of them)."""

    binary: str

    @property
    def kind(self) -> str:
        name = os.path.basename(self.binary)
        return "podman" if "podman" in name else "docker"

    # --- basic calls ---------------------------------------------------------------------------

    def call(self, *args: str, timeout: float | None = _QUICK_TIMEOUT_S,
             check: bool = False) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run([self.binary, *args], capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=timeout)
        except FileNotFoundError as exc:
            raise ContainerError(f"container engine '{self.binary}' is not installed "
                                 "(not found on PATH)") from exc
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(f"'{self.binary} {args[0]}' did not answer within "
                                 f"{timeout:.0f} s") from exc
        if check and proc.returncode != 0:
            raise ContainerError(f"{self.binary} {args[0]} failed: "
                                 f"{last_error_line(proc.stderr or proc.stdout)}",
                                 proc.stderr + proc.stdout)
        return proc

    def check(self) -> None:
        """The engine is installed and can run containers (its daemon answers, for docker)."""
        if shutil.which(self.binary) is None:
            raise ContainerError(f"container engine '{self.binary}' is not installed "
                                 "(not found on PATH)")
        proc = self.call("info", "--format",
                         "{{json .ServerVersion}}" if self.kind == "docker" else "json")
        if proc.returncode != 0:
            raise ContainerError(f"container engine '{self.binary}' does not work: "
                                 f"{last_error_line(proc.stderr or proc.stdout)}",
                                 proc.stderr + proc.stdout)

    def image_id(self, image: str) -> str | None:
        """The local image's id, None when the engine has no such image."""
        proc = self.call("image", "inspect", "--format", "{{.Id}}", image)
        if proc.returncode != 0:
            return None
        lines = proc.stdout.split()
        return lines[0] if lines else None

    def pull(self, image: str, log: Callable[[str], None]) -> None:
        log(f"bosun: pulling container image {image}")
        proc = self.call("pull", image, timeout=3600)
        output = (proc.stdout + proc.stderr).strip()
        for line in output.splitlines()[-20:]:
            log(f"  {line}")
        if proc.returncode != 0:  # the output is in the log already
            raise ContainerError(f"container image '{image}' could not be pulled: "
                                 f"{last_error_line(output)}")

    def ensure_image(self, image: str, log: Callable[[str], None],
                     force_pull: bool = False) -> str:
        """The image's id; pulled when missing here (or always with `force_pull`)."""
        if force_pull:
            self.pull(image, log)
        found = self.image_id(image)
        if found is not None:
            return found
        try:
            self.pull(image, log)
        except ContainerError as exc:
            said = exc.reason.split(": ", 1)[-1]
            raise ContainerError(f"container image '{image}' not found: it is not on this "
                                 f"machine and pulling it failed: {said}") from exc
        found = self.image_id(image)
        if found is None:
            raise ContainerError(f"container image '{image}' not found after pulling it")
        return found

    def entry_and_cmd(self, image: str) -> tuple[list[str], list[str]]:
        """The image's ENTRYPOINT and CMD (empty lists when unset)."""
        proc = self.call("image", "inspect", "--format",
                         "{{json .Config.Entrypoint}}|{{json .Config.Cmd}}", image, check=True)
        entry, _, cmd = proc.stdout.strip().partition("|")
        try:
            return list(json.loads(entry) or []), list(json.loads(cmd) or [])
        except (ValueError, TypeError):
            return [], []

    def exists(self, name: str) -> bool:
        """Whether a container of that name (running or not) exists."""
        if self.kind == "podman":
            return self.call("container", "exists", name).returncode == 0
        return self.call("container", "inspect", "--format", "{{.Id}}", name).returncode == 0

    def remove(self, name: str, grace: float = 1.0) -> None:
        """Stop (SIGTERM, SIGKILL after `grace` s) and remove the container; no error if gone."""
        seconds = str(max(0, round(grace)))
        self.call("stop", "-t", seconds, name, timeout=grace + 60)
        self.call("rm", "-f", name, timeout=60)

    def commit(self, container: str, image: str, changes: Sequence[str]) -> str:
        args = ["commit"]
        for change in changes:
            args += ["--change", change]
        proc = self.call(*args, container, image, timeout=1800, check=True)
        return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""

    # --- run options ---------------------------------------------------------------------------

    def gpu_args(self, gpus: Sequence[str]) -> list[str]:
        """`--gpus` of the agent as the engine's device flags: docker's `--gpus "device=0,1"`
        (NVIDIA Container Toolkit), podman's CDI devices `nvidia.com/gpu=N`."""
        if not gpus:
            return []
        if self.kind == "podman":
            if "all" in gpus:
                return ["--device", "nvidia.com/gpu=all"]
            out: list[str] = []
            for gpu in gpus:
                out += ["--device", f"nvidia.com/gpu={gpu}"]
            return out
        if "all" in gpus:
            return ["--gpus", "all"]
        # docker splits the value at commas unless it is quoted: the quotes are part of it.
        return ["--gpus", f'"device={",".join(gpus)}"']


def engine_for(name: str) -> Engine:
    """`docker` / `podman`, or a path to either binary."""
    return Engine(name)
