"""bosun itself inside a container: the same code as the agent that starts the container.

The agent's own `bosun` package directory is mounted read-only into every task container (so
the code inside is exactly the code outside, uncommitted edits included: clearml-agent's
`--force-current-version`, always). Its dependencies live in a *runtime*: a venv made with the
image's own `python3` (3.11 or newer), holding bosun's dependencies pinned to the versions the
agent runs with, plus a `.pth` line that puts the mounted package on the path. One runtime is
built per (image id, pinned dependencies), once, in a one-off container, and kept on the host:

    <root>/<key>/venv/          the venv (inside containers: /opt/bosun/runtime/venv)
    <root>/<key>/.complete      written last; without it the runtime is rebuilt
    <root>/<key>.lock           flock: one builder at a time across agents

The runtime is built with the agent's own `uv` binary (mounted read-only) when it runs in the
image, else with the image's `python3 -m venv` and pip.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import uv

import bosun
from bosun.agent.container_engine import ContainerError, Engine, last_error_line
from bosun.agent.file_lock import file_lock

# Paths inside every container bosun starts.
BOSUN_ROOT = "/opt/bosun"
SRC_MOUNT = f"{BOSUN_ROOT}/src"  # holds the package directory `bosun`
RUNTIME_MOUNT = f"{BOSUN_ROOT}/runtime"
RUNTIME_PYTHON = f"{RUNTIME_MOUNT}/venv/bin/python"
UV_MOUNT = f"{BOSUN_ROOT}/uv"
UV_CACHE_MOUNT = f"{BOSUN_ROOT}/cache/uv"
VENVS_CACHE_MOUNT = f"{BOSUN_ROOT}/cache/venvs"
CA_MOUNT = f"{BOSUN_ROOT}/ca-certificates.crt"

_FORMAT = 1  # bump when the runtime layout changes
_MARKER = ".complete"
_EXIT_NO_PYTHON = 90
_EXIT_OLD_PYTHON = 91
# Variables that decide how the inside reaches package indexes; passed on when set here.
NETWORK_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                "no_proxy", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL",
                "UV_EXTRA_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX")


def source_dir() -> Path:
    """The directory of the running `bosun` package (a checkout's src/bosun or site-packages)."""
    return Path(bosun.__file__).resolve().parent


def pinned_requirements() -> list[str]:
    """bosun's dependencies pinned to the versions installed here (extras of a dependency kept,
    bosun's own optional extras left out)."""
    pins: list[str] = []
    for spec in importlib.metadata.requires("bosun") or []:
        if ";" in spec and "extra" in spec.split(";", 1)[1]:
            continue
        match = re.match(r"\s*([A-Za-z0-9._-]+)(\[[^\]]*\])?", spec)
        if not match:
            continue
        name, extras = match.group(1), match.group(2) or ""
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pins.append(spec.split(";", 1)[0].strip())
            continue
        pins.append(f"{name}{extras}=={version}")
    return sorted(pins, key=str.lower)


def network_env() -> tuple[dict[str, str], list[str]]:
    """(variables, engine volume args) that let the inside reach the package indexes the way this
    machine does: proxies, index URLs, and this machine's CA bundle (`SSL_CERT_FILE`)."""
    env = {name: os.environ[name] for name in NETWORK_VARS
           if os.environ.get(name) and "file://" not in os.environ[name]}
    volumes: list[str] = []
    bundle = os.environ.get("SSL_CERT_FILE", "")
    if bundle and Path(bundle).is_file():
        volumes += ["-v", f"{Path(bundle).resolve()}:{CA_MOUNT}:ro"]
        env.update(SSL_CERT_FILE=CA_MOUNT, REQUESTS_CA_BUNDLE=CA_MOUNT, PIP_CERT=CA_MOUNT)
    return env, volumes


def env_args(env: dict[str, str]) -> list[str]:
    args: list[str] = []
    for name, value in env.items():
        args += ["-e", f"{name}={value}"]
    return args


@dataclass(frozen=True)
class Runtime:
    path: Path  # on the host; mounted at RUNTIME_MOUNT
    key: str
    built: bool  # False: it was there already
    seconds: float


def runtime_key(image_id: str, pins: list[str]) -> str:
    payload = "\n".join([f"format={_FORMAT}", f"image={image_id}", *pins])
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


_BUILD_SCRIPT = f"""\
set -e
PY="$(command -v python3 || command -v python || true)"
if [ -z "$PY" ]; then
  echo "bosun-runtime: the image has no python3"; exit {_EXIT_NO_PYTHON}
fi
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "bosun-runtime: the image's $("$PY" -V 2>&1) is too old"; exit {_EXIT_OLD_PYTHON}
fi
R={RUNTIME_MOUNT}
if {UV_MOUNT} --version >/dev/null 2>&1; then
  {UV_MOUNT} venv --quiet --python "$PY" "$R/venv"
  {UV_MOUNT} pip install --python "$R/venv/bin/python" -r "$R/requirements.txt"
else
  echo "bosun-runtime: uv does not run in this image; using python -m venv and pip"
  "$PY" -m venv "$R/venv"
  "$R/venv/bin/python" -m pip install --disable-pip-version-check -r "$R/requirements.txt"
fi
SITE="$("$R/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo {SRC_MOUNT} > "$SITE/bosun-source.pth"
"$R/venv/bin/python" -c 'import sys; print("bosun-runtime: Python", sys.version.split()[0])'
"""


def ensure_runtime(engine: Engine, image: str, image_id: str, root: Path,
                   uv_cache: Path | None, log: Callable[[str], None]) -> Runtime:
    """The runtime for this image, built now when missing. Raises ContainerError."""
    started = time.monotonic()
    pins = pinned_requirements()
    key = runtime_key(image_id, pins)
    path = root / key
    if (path / _MARKER).is_file():
        return Runtime(path, key, False, time.monotonic() - started)
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f"{key}.lock"):
        if (path / _MARKER).is_file():
            return Runtime(path, key, False, time.monotonic() - started)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        (path / "requirements.txt").write_text("\n".join(pins) + "\n")
        log(f"bosun: building the bosun runtime for image {image} (once per image; "
            f"{len(pins)} pinned dependencies) in {path}")
        env, volumes = network_env()
        env["UV_LINK_MODE"] = "copy"
        env["UV_PYTHON_DOWNLOADS"] = "never"
        env["UV_CACHE_DIR"] = UV_CACHE_MOUNT
        env["PIP_CACHE_DIR"] = f"{UV_CACHE_MOUNT}/pip"
        volumes += ["-v", f"{path}:{RUNTIME_MOUNT}", "-v", f"{uv.find_uv_bin()}:{UV_MOUNT}:ro"]
        if uv_cache is not None:
            uv_cache.mkdir(parents=True, exist_ok=True)
            volumes += ["-v", f"{uv_cache}:{UV_CACHE_MOUNT}"]
        argv = [engine.binary, "run", "--rm", "--network", "host", *volumes, *env_args(env),
                "--entrypoint", "/bin/sh", image, "-c", _BUILD_SCRIPT]
        code, output = stream_output(argv, log)
        if code != 0:
            shutil.rmtree(path, ignore_errors=True)
            raise ContainerError(_failure_reason(image, code, output), output)
        (path / _MARKER).write_text(f"{image}\n{image_id}\n")
    seconds = time.monotonic() - started
    log(f"bosun: bosun runtime for {image} ready in {seconds:.1f} s")
    return Runtime(path, key, True, seconds)


def _failure_reason(image: str, code: int, output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    said = next((line.split(":", 1)[1].strip() for line in reversed(lines)
                 if line.startswith("bosun-runtime:")), "")
    if code == _EXIT_NO_PYTHON:
        return (f"container image '{image}' has no python3: bosun's agent needs Python 3.11 or "
                "newer inside the container")
    if code == _EXIT_OLD_PYTHON:
        return (f"container image '{image}': {said}; bosun's agent needs Python 3.11 or newer "
                "inside the container")
    return (f"could not install bosun into container image '{image}' (exit code {code}): "
            f"{last_error_line(output)}")


def stream_output(argv: list[str], log: Callable[[str], None]) -> tuple[int, str]:
    """Run, log each line of output indented; (exit code, output)."""
    lines: list[str] = []
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as exc:
        raise ContainerError(f"could not start {argv[0]}: {exc.strerror or exc}") from exc
    assert proc.stdout is not None
    with proc:
        for raw in proc.stdout:
            line = raw.rstrip("\r\n")
            lines.append(line)
            log(f"  {line}")
        code = proc.wait()
    return code, "\n".join(lines)
