"""The real ClearML clients from PyPI, in a virtual environment of their own.

Built once with uv and cached under `~/.cache/bosun-tests/clearml-<versions>/` (or
`$BOSUN_TEST_CACHE`); a half-built or broken environment is rebuilt. A file lock keeps parallel
test runs from building it at the same time.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import uv

CLEARML_VERSION = "2.1.12"
CLEARML_AGENT_VERSION = "3.0.3"
# clearml-agent builds task environments with `python -m virtualenv` when it is not given a
# Python that has it; the clients' own venv has it, and it doubles as agent.python_binary.
PACKAGES = [f"clearml=={CLEARML_VERSION}", f"clearml-agent=={CLEARML_AGENT_VERSION}",
            "virtualenv"]
BUILD_TIMEOUT_S = 600
READY_MARKER = ".bosun-ready"


@dataclass(frozen=True)
class ClearmlClients:
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def agent(self) -> Path:
        return self.venv / "bin" / "clearml-agent"


def cache_root() -> Path:
    base = os.environ.get("BOSUN_TEST_CACHE") or str(Path.home() / ".cache" / "bosun-tests")
    return Path(base)


def _works(clients: ClearmlClients) -> bool:
    if not (clients.venv / READY_MARKER).is_file() or not clients.agent.is_file():
        return False
    check = subprocess.run(
        [str(clients.python), "-c", "import clearml, clearml_agent, virtualenv"],
        capture_output=True, timeout=120)
    return check.returncode == 0


def _build(venv: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    uv_bin = uv.find_uv_bin()
    python = sys.executable
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    for argv in ([uv_bin, "venv", "--quiet", "--seed", "--python", python, str(venv)],
                 [uv_bin, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
                  *PACKAGES]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"building the ClearML clients' venv failed: {' '.join(argv)}\n"
                               f"{done.stdout}\n{done.stderr}")
    (venv / READY_MARKER).write_text("\n".join(PACKAGES) + "\n")


def clearml_clients() -> ClearmlClients:
    """The clients' venv, built when missing or broken."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"clearml-{CLEARML_VERSION}-agent-{CLEARML_AGENT_VERSION}"
    clients = ClearmlClients(venv)
    with (root / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _works(clients):
            _build(venv)
            if not _works(clients):
                raise RuntimeError(f"the ClearML clients' venv at {venv} does not work")
    return clients
