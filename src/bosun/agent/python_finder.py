"""Which Python interpreter a task runs on, and finding (or installing) it on this machine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import uv

_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?")
_PYTHON_VERSION = re.compile(r"python(\d+\.\d+(?:\.\d+)?)")
_FIND_TIMEOUT_S = 60
_INSTALL_TIMEOUT_S = 900


def _parse(binary: str) -> str | None:
    """``python3.12`` / ``3.12`` -> ``3.12``; ``python3`` / ``python`` -> None."""
    if _VERSION.fullmatch(binary):
        return binary
    match = _PYTHON_VERSION.fullmatch(binary)
    if match:
        return match.group(1)
    return None


def wanted_python(script_binary: str | None, python_binary: str) -> str | None:
    """The interpreter a task asks for: a version (``"3.12"``), a path, or None (the default).

    ``python_binary`` (the agent's ``agent.python_binary`` setting) overrides the task when set:
    a version-like value (``python3.12``, ``3.12``) becomes the version, anything else (a path,
    a command) is returned as given. ``script_binary`` (the task's ``script.binary``):
    ``python3.12`` -> ``"3.12"``; ``python3`` / ``python`` / ``/bin/bash`` -> None; an absolute
    path to a python (``/usr/bin/python3.11``) is returned as is.
    """
    override = (python_binary or "").strip()
    if override:
        return _parse(override) or override
    binary = (script_binary or "").strip()
    if not binary:
        return None
    if "/" in binary or "\\" in binary:
        return binary if "python" in Path(binary).name.lower() else None
    return _parse(binary)


def base_interpreter() -> Path:
    """The real interpreter behind the running one (not a venv's launcher)."""
    candidates = [getattr(sys, "_base_executable", None), sys.executable]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix)
    candidates += [str(base / "bin" / f"python{version}"), str(base / "bin" / "python3"),
                   str(base / "python.exe")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            if sys.prefix != sys.base_prefix and Path(candidate) == Path(sys.executable):
                continue  # the venv's own launcher
            return Path(candidate)
    return Path(sys.executable)


def uv_env() -> dict[str, str]:
    """The environment for uv calls: no inherited venv / project settings of the agent's own."""
    env = dict(os.environ)
    for name in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONHOME", "PYTHONPATH",
                 "UV_PROJECT_ENVIRONMENT", "UV_PYTHON"):
        env.pop(name, None)
    return env


def _fail(reason: str, detail: str = "") -> Exception:
    from bosun.agent.environment import EnvironmentBuildError  # environment imports this module

    return EnvironmentBuildError(reason, detail)


def _last_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if line.lower().startswith("error:"):
            return line[len("error:"):].strip()
    return lines[-1] if lines else "no output"


def _uv_find(version: str) -> tuple[Path | None, str]:
    proc = subprocess.run(
        [uv.find_uv_bin(), "python", "find", "--system", "--no-project", version],
        capture_output=True, text=True, timeout=_FIND_TIMEOUT_S, env=uv_env(),
    )
    path = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode == 0 and path and Path(path).is_file():
        return Path(path), ""
    return None, proc.stderr.strip() or proc.stdout.strip()


def find_python(request: str | None, log: Callable[[str], None]) -> Path:
    """The interpreter for ``request`` (see `wanted_python`) on this machine.

    None -> the interpreter running the agent (its base, never a venv). A version -> ``uv python
    find``, else ``uv python install`` (logged). A path or command -> it, when it exists; a
    missing ``/usr/bin/python3.11`` falls back to finding version 3.11. Raises
    EnvironmentBuildError when nothing fits.
    """
    if request is None or not request.strip():
        return base_interpreter()
    request = request.strip()
    if not _VERSION.fullmatch(request):
        path = Path(request).expanduser()
        if ("/" in request or "\\" in request) and path.is_file() and os.access(path, os.X_OK):
            return path
        found = shutil.which(request)
        if found:
            return Path(found)
        version = _parse(path.name)
        if version is None:
            raise _fail(f"Python interpreter {request} is not available on this machine")
        log(f"environment: {request} does not exist here, looking for Python {version} instead")
        request = version

    found_path, find_error = _uv_find(request)
    if found_path is not None:
        return found_path
    log(f"environment: Python {request} not found, installing it (uv python install {request})")
    try:
        proc = subprocess.run(
            [uv.find_uv_bin(), "python", "install", request],
            capture_output=True, text=True, timeout=_INSTALL_TIMEOUT_S, env=uv_env(),
        )
        install_output = (proc.stdout + proc.stderr).strip()
        ok = proc.returncode == 0
    except subprocess.TimeoutExpired:
        install_output, ok = f"uv python install timed out after {_INSTALL_TIMEOUT_S} s", False
    for line in install_output.splitlines():
        log(f"  {line}")
    if ok:
        found_path, find_error = _uv_find(request)
        if found_path is not None:
            return found_path
    reason = _last_error(install_output) if not ok else _last_error(find_error)
    raise _fail(
        f"Python {request} is not available on this machine and could not be installed: {reason}",
        f"uv python find: {find_error}\nuv python install: {install_output}",
    )
