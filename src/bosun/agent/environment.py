"""Set up the Python environment a task runs in (ClearML: "Set up the python environment and
required packages").

`EnvironmentBuilder.prepare` resolves the task's requirements, finds the interpreter, and returns a
venv for them: from the venv cache when an identical one was built before (no installer runs),
else freshly built with uv (default) or pip, installer output streamed to the task log.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uv

from bosun.agent import python_finder
from bosun.agent.requirements import Requirements, requirements_for
from bosun.agent.venv_cache import VenvCache, cache_key, remove_tree

MANAGERS = ("uv", "pip")
_TAIL_LINES = 200
_CROSS = "\u00d7"  # uv's error mark on a terminal
_REASON_MAX = 300


class EnvironmentBuildError(Exception):
    """The environment could not be set up. ``reason``: one line for the task's status message;
    ``detail``: the installer output behind it (tail), for the log."""

    def __init__(self, reason: str, detail: str = "") -> None:
        reason = " ".join(str(reason).split())
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass
class PreparedEnv:
    python: Path  # the venv's interpreter: run the task with this
    venv: Path
    cache_hit: bool
    seconds: float
    key: str

    def installed(self) -> list[str] | None:
        """`name==version` of every package in the venv, as listed when it was built."""
        try:
            text = (self.venv / FROZEN_FILE).read_text(encoding="utf-8")
        except OSError:
            return frozen_packages(self.venv)  # a venv cached before the list was kept
        return [line for line in text.splitlines() if line.strip()]


FROZEN_FILE = "bosun-installed.txt"


def frozen_packages(venv: Path) -> list[str] | None:
    """What `uv pip freeze` lists for the venv (uv reads any venv, whichever installer built
    it); None when it cannot be listed."""
    try:
        done = subprocess.run(
            [uv.find_uv_bin(), "pip", "freeze", "--python", str(venv_python(venv))],
            capture_output=True, text=True, timeout=60, env=python_finder.uv_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def venv_python(venv: Path) -> Path:
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


_version_memo: dict[tuple[str, int, int], str] = {}


def python_version(python: Path) -> str:
    """The interpreter's implementation and full ``sys.version`` (memoised per binary)."""
    try:
        real = python.resolve()
        stat = real.stat()
    except OSError as exc:
        raise EnvironmentBuildError(f"Python interpreter {python} does not exist",
                                    str(exc)) from exc
    memo_key = (str(real), stat.st_mtime_ns, stat.st_size)
    if memo_key in _version_memo:
        return _version_memo[memo_key]
    code = "import platform, sys; print(platform.python_implementation(), sys.version)"
    if real == Path(sys.executable).resolve():
        import platform

        version = f"{platform.python_implementation()} {sys.version}"
    else:
        try:
            proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                                  timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EnvironmentBuildError(f"Python interpreter {python} does not run: {exc}") from exc
        if proc.returncode != 0:
            raise EnvironmentBuildError(
                f"Python interpreter {python} does not run (exit code {proc.returncode})",
                proc.stderr)
        version = proc.stdout.strip()
    version = " ".join(version.split())
    _version_memo[memo_key] = version
    return version


def first_error_line(lines: Sequence[str]) -> str:
    """The line of installer output that says what went wrong (pip's and uv's formats)."""
    stripped = [line.strip() for line in lines if line.strip()]
    for line in stripped:
        found = re.search(r"No matching distribution found for .*", line)
        if found:
            return found.group(0)
    for index, line in enumerate(stripped):  # uv: "error: ..." then "cause: ..." / "╰─▶ ..."
        for prefix in ("cause:", "╰─▶", "Caused by:"):
            if line.startswith(prefix):
                text = line[len(prefix):].strip()
                for more in stripped[index + 1:]:  # wrapped continuation lines
                    if re.match(r"(error:|cause:|hint:|help:|warning:|[\u00d7╰│├])", more):
                        break
                    text += " " + more
                return text
    for line in stripped:
        for prefix in ("ERROR:", "error:", _CROSS):
            if line.startswith(prefix):
                return line[len(prefix):].strip()
    return stripped[-1] if stripped else "no output"


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_MAX else text[:_REASON_MAX - 3] + "..."


def _pip_spec(pip_version: str) -> str | None:
    """``"<20.2"`` -> ``"pip<20.2"``; ``"23.1"`` -> ``"pip==23.1"``; ``""`` -> None."""
    version = pip_version.strip()
    if not version:
        return None
    if version[0].isdigit():
        return f"pip=={version}"
    return f"pip{version}"


class EnvironmentBuilder:
    """Builds (or reuses) the venv for a task. Settings mirror ClearML's ``agent.package_manager``
    (``manager`` is its ``type``: ``uv`` or ``pip``) and ``agent.venvs_dir``; ``cache`` is the
    ``agent.venvs_cache``. ``uv_cache_dir`` (default: ``uv-cache`` next to the cache root, e.g.
    ~/.clearml/uv-cache) is uv's download/build cache, shared by all builds, so a cold build of
    packages seen before downloads nothing; keep it on the same file system as the venvs so uv
    can hard-link instead of copying.
    """

    def __init__(
        self,
        *,
        venvs_dir: Path,
        cache: VenvCache,
        log: Callable[[str], None],
        manager: str = "uv",
        pip_version: str = "",
        system_site_packages: bool = False,
        force_upgrade: bool = False,
        extra_index_url: Sequence[str] = (),
        priority_packages: Sequence[str] = (),
        priority_optional_packages: Sequence[str] = (),
        post_packages: Sequence[str] = (),
        post_optional_packages: Sequence[str] = (),
        uv_cache_dir: Path | None = None,
    ) -> None:
        if manager not in MANAGERS:
            raise ValueError(f"package manager must be one of {', '.join(MANAGERS)}: {manager!r}")
        self.manager = manager
        self.pip_version = pip_version or ""
        self.system_site_packages = system_site_packages
        self.force_upgrade = force_upgrade
        self.extra_index_url = [u for u in extra_index_url if u]
        self.priority_packages = list(priority_packages)
        self.priority_optional_packages = list(priority_optional_packages)
        self.post_packages = list(post_packages)
        self.post_optional_packages = list(post_optional_packages)
        self.venvs_dir = Path(venvs_dir).expanduser()
        self.cache = cache
        self.log = log
        self.uv_cache_dir = Path(uv_cache_dir).expanduser() if uv_cache_dir else (
            cache.root.parent / "uv-cache")
        self._pythons: dict[str | None, Path] = {}

    # --- public ------------------------------------------------------------------------------

    def prepare(self, script: dict[str, Any], repo_dir: Path | None,
                python_request: str | None) -> PreparedEnv:
        """The venv for a task's ``script`` section, checked out at ``repo_dir``.

        ``python_request`` comes from `python_finder.wanted_python` (None: the agent's own
        interpreter). Raises EnvironmentBuildError.
        """
        started = time.monotonic()
        requirements = requirements_for(script, repo_dir)
        for note in requirements.notes:
            self.log(f"environment: {note}")
        python = self._find_python(python_request)
        version = python_version(python)
        key = cache_key(version, self.manager, requirements, self._key_settings())

        if self.cache.enabled:
            hit = self.cache.lookup(key)
            if hit is not None and venv_python(hit).exists():
                seconds = time.monotonic() - started
                self.log(f"environment: cache hit {key[:12]} ({seconds:.1f} s)")
                return PreparedEnv(venv_python(hit), hit, True, seconds, key)
            if hit is not None:
                self.log(f"environment: cached venv {key[:12]} is broken (its interpreter is "
                         "gone), rebuilding it")
                self.cache.discard(key)
            built = False

            def build(path: Path) -> None:
                nonlocal built
                built = True
                self._build(path, python, version, requirements)

            venv = self.cache.store(key, build, on_wait=lambda: self.log(
                "environment: another agent is building this environment, waiting for it"))
            cache_hit = not built
        else:
            venv = self.venvs_dir / "venv"
            remove_tree(venv)
            self.venvs_dir.mkdir(parents=True, exist_ok=True)
            self._build(venv, python, version, requirements)
            cache_hit = False
        seconds = time.monotonic() - started
        state = "cache hit after waiting" if cache_hit else "built"
        self.log(f"environment: ready in {seconds:.1f} s ({state} {key[:12]}, {venv})")
        return PreparedEnv(venv_python(venv), venv, cache_hit, seconds, key)

    # --- internals ---------------------------------------------------------------------------

    def _find_python(self, request: str | None) -> Path:
        known = self._pythons.get(request)
        if known is not None and known.exists():
            return known
        found = python_finder.find_python(request, self.log)
        self._pythons[request] = found
        return found

    def _key_settings(self) -> list[str]:
        return [
            f"system_site_packages={self.system_site_packages}",
            f"force_upgrade={self.force_upgrade}",
            f"pip_version={self.pip_version}",
            f"extra_index_url={self.extra_index_url}",
            f"priority={self.priority_packages}",
            f"priority_optional={self.priority_optional_packages}",
            f"post={self.post_packages}",
            f"post_optional={self.post_optional_packages}",
        ]

    def _env(self) -> dict[str, str]:
        env = python_finder.uv_env()
        env["UV_CACHE_DIR"] = str(self.uv_cache_dir)
        env["PIP_CACHE_DIR"] = str(self.uv_cache_dir / "pip")
        env["NO_COLOR"] = "1"
        env["PIP_NO_INPUT"] = "1"
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _run(self, cmd: Sequence[str], what: str, cwd: Path | None = None,
             env: dict[str, str] | None = None) -> None:
        """Run an installer, streaming its output to the log; EnvironmentBuildError on failure."""
        tail: deque[str] = deque(maxlen=_TAIL_LINES)
        try:
            proc = subprocess.Popen(
                [str(c) for c in cmd], cwd=str(cwd) if cwd else None, env=env or self._env(),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, encoding="utf-8", errors="replace", bufsize=1,
            )
        except OSError as exc:
            raise EnvironmentBuildError(f"{what} failed: {exc}", str(exc)) from exc
        assert proc.stdout is not None
        with proc:
            for raw in proc.stdout:
                line = raw.rstrip("\r\n")
                tail.append(line)
                self.log(f"  {line}")
            code = proc.wait()
        if code != 0:
            reason = _one_line(first_error_line(list(tail)))
            raise EnvironmentBuildError(f"{what} failed: {reason}",
                                        f"{' '.join(map(str, cmd))}\n" + "\n".join(tail))

    def _phase(self, title: str, action: Callable[[], None]) -> None:
        self.log(f"environment: {title}")
        started = time.monotonic()
        action()
        self.log(f"environment: {title} done ({time.monotonic() - started:.1f} s)")

    def _install_cmd(self, venv: Path, args: Sequence[str]) -> list[str]:
        if self.manager == "uv":
            cmd = [uv.find_uv_bin(), "pip", "install", "--python", str(venv_python(venv))]
        else:
            cmd = [str(venv_python(venv)), "-m", "pip", "install", "--progress-bar", "off"]
        for url in self.extra_index_url:
            cmd += ["--extra-index-url", url]
        if self.force_upgrade:
            cmd.append("--upgrade")
        return cmd + list(args)

    @property
    def _install_what(self) -> str:
        return "uv pip install" if self.manager == "uv" else "pip install"

    def _install(self, venv: Path, args: Sequence[str], cwd: Path | None = None) -> None:
        self._run(self._install_cmd(venv, args), self._install_what, cwd=cwd)

    def _install_optional(self, venv: Path, packages: Sequence[str]) -> None:
        for package in packages:
            try:
                self._install(venv, [package])
            except EnvironmentBuildError as exc:
                self.log(f"environment: warning: optional package {package} was not installed: "
                         f"{exc.reason}")

    def _build(self, venv: Path, python: Path, version: str,
               requirements: Requirements) -> None:
        self.log(f"environment: building a new venv with {self.manager} (Python "
                 f"{version.split()[1] if ' ' in version else version}, {python}) at {venv}")
        self._phase("creating the venv", lambda: self._create_venv(venv, python))
        pip_spec = _pip_spec(self.pip_version)
        if pip_spec:
            self._phase(f"installing {pip_spec}", lambda: self._install(venv, [pip_spec]))
        if self.priority_packages:
            self._phase("installing priority packages",
                        lambda: self._install(venv, self.priority_packages))
        if self.priority_optional_packages:
            self._phase("installing optional priority packages",
                        lambda: self._install_optional(venv, self.priority_optional_packages))
        self._install_requirements(venv, python, requirements)
        if self.post_packages:
            self._phase("installing post packages",
                        lambda: self._install(venv, self.post_packages))
        if self.post_optional_packages:
            self._phase("installing optional post packages",
                        lambda: self._install_optional(venv, self.post_optional_packages))
        # Listed once now, so that a cache hit can record it on the task without a subprocess.
        installed = frozen_packages(venv)
        if installed is not None:
            (venv / FROZEN_FILE).write_text("".join(f"{line}\n" for line in installed),
                                            encoding="utf-8")

    def _create_venv(self, venv: Path, python: Path) -> None:
        if self.manager == "uv":
            cmd = [uv.find_uv_bin(), "venv", "--no-project", "--python", str(python), str(venv)]
            if self.pip_version:
                cmd.append("--seed")  # a pip for tasks that call it, upgraded to the spec next
            what = "uv venv"
        else:
            cmd = [str(python), "-m", "venv", str(venv)]
            what = "python -m venv"
        if self.system_site_packages:
            cmd.append("--system-site-packages")
        self._run(cmd, what, cwd=venv.parent)

    def _install_requirements(self, venv: Path, python: Path, requirements: Requirements) -> None:
        kind = requirements.kind
        if kind == "none":
            self.log("environment: the task lists no requirements and the repository has none")
            return
        if kind == "project":
            self._install_project(venv, python, requirements)
            return
        source = "the task" if kind == "task" else str(requirements.source)
        count = sum(1 for line in requirements.lines if not line.startswith("-"))
        file = venv / "bosun-requirements.txt"
        file.write_text("\n".join(requirements.lines) + "\n", encoding="utf-8")
        self._phase(f"installing {count} requirement(s) from {source}",
                    lambda: self._install(venv, ["-r", str(file)], cwd=requirements.project_dir))

    def _install_project(self, venv: Path, python: Path, requirements: Requirements) -> None:
        project = requirements.project_dir
        assert project is not None
        lock = project / "uv.lock"
        if self.manager != "uv":
            self.log("environment: pip cannot read uv.lock; installing the [project] "
                     "dependencies of pyproject.toml")
            if requirements.lines:
                file = venv / "bosun-requirements.txt"
                file.write_text("\n".join(requirements.lines) + "\n", encoding="utf-8")
                self._phase(f"installing {len(requirements.lines)} project dependencies",
                            lambda: self._install(venv, ["-r", str(file)], cwd=project))
            return
        had_lock = lock.exists()
        # The project's own packages are left out: an editable install would point into this
        # checkout, which a later task reusing the cached venv does not run from.
        cmd = [uv.find_uv_bin(), "sync", "--python", str(python), "--inexact",
               "--no-install-workspace"]
        if had_lock:
            cmd.append("--frozen")
        for url in self.extra_index_url:
            cmd += ["--extra-index-url", url]
        if self.force_upgrade and not had_lock:
            cmd.append("--upgrade")
        env = self._env()
        env["UV_PROJECT_ENVIRONMENT"] = str(venv)
        title = f"uv sync of {project}" + (" (uv.lock, frozen)" if had_lock else "")
        try:
            self._phase(title, lambda: self._run(cmd, "uv sync", cwd=project, env=env))
        finally:
            if not had_lock:
                lock.unlink(missing_ok=True)  # leave the checkout as it was
