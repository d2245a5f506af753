"""The environment builder with real venvs and real packages from PyPI, and the Python finder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import uv

from bosun.agent.environment import (
    EnvironmentBuilder,
    EnvironmentBuildError,
    PreparedEnv,
    first_error_line,
)
from bosun.agent.python_finder import base_interpreter, find_python, wanted_python
from bosun.agent.venv_cache import MARKER, VenvCache

SIX = {"requirements": {"pip": "six==1.16.0\n"}}
TOMLI = {"requirements": {"pip": ["tomli==2.0.1"]}}
BAD = {"requirements": {"pip": "nosuchpkg-bosun-test==9\n"}}
INSTALLER_MARKS = ("Installed", "Successfully installed", "installing", "creating the venv")


@pytest.fixture(scope="session")
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uv cache for the session: downloads happen once, later builds are local."""
    return tmp_path_factory.mktemp("uv-cache")


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def text(self) -> str:
        return "\n".join(self.lines)


Make = Callable[..., tuple[EnvironmentBuilder, Log]]


@pytest.fixture
def make_builder(tmp_path: Path, uv_cache: Path) -> Make:
    def make(manager: str = "uv", max_entries: int = 10, enabled: bool = True,
             **settings: object) -> tuple[EnvironmentBuilder, Log]:
        log = Log()
        cache = VenvCache(tmp_path / "venvs-cache", max_entries, 0.0, enabled)
        builder = EnvironmentBuilder(
            venvs_dir=tmp_path / "venvs-builds", cache=cache, log=log, manager=manager,
            uv_cache_dir=uv_cache, **settings,  # type: ignore[arg-type]
        )
        return builder, log

    return make


def run_in(env: PreparedEnv, code: str) -> str:
    proc = subprocess.run([str(env.python), "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_uv_cold_build_then_cache_hit(make_builder: Make,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    builder, log = make_builder()
    cold = builder.prepare(SIX, None, None)
    assert not cold.cache_hit
    assert cold.venv.parent == builder.cache.root
    assert (cold.venv / MARKER).is_file()
    assert run_in(cold, "import six; print(six.__version__)") == "1.16.0"
    assert run_in(cold, "import sys; print(sys.prefix != sys.base_prefix)") == "True"
    assert "+ six==1.16.0" in log.text()  # installer output is streamed to the log

    # a second agent (new builder, same cache): no installer process may start
    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a process was started on a cache hit: {args}")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    monkeypatch.setattr(subprocess, "run", no_process)
    again, log2 = make_builder()
    warm = again.prepare(SIX, None, None)
    assert warm.cache_hit
    assert warm.seconds < 0.5
    assert (warm.venv, warm.python, warm.key) == (cold.venv, cold.python, cold.key)
    assert log2.lines == [f"environment: cache hit {cold.key[:12]} (0.0 s)"]
    assert not any(mark in line for line in log2.lines for mark in INSTALLER_MARKS)


def test_different_requirements_get_different_venvs(make_builder: Make) -> None:
    builder, _ = make_builder()
    six = builder.prepare(SIX, None, None)
    tomli = builder.prepare(TOMLI, None, None)
    assert six.key != tomli.key
    assert six.venv != tomli.venv
    assert run_in(tomli, "import tomli; print(tomli.__name__)") == "tomli"
    proc = subprocess.run([str(tomli.python), "-c", "import six"], capture_output=True)
    assert proc.returncode != 0
    # settings that change the venv change the key too
    other, _ = make_builder(system_site_packages=True)
    assert other.prepare(SIX, None, None).key != six.key


def test_uninstallable_requirement_is_a_clear_error(make_builder: Make) -> None:
    builder, _ = make_builder()
    with pytest.raises(EnvironmentBuildError) as caught:
        builder.prepare(BAD, None, None)
    reason = caught.value.reason
    assert "\n" not in reason
    assert reason.startswith("uv pip install failed: ")
    assert "nosuchpkg-bosun-test" in reason
    assert str(caught.value) == reason
    assert "nosuchpkg-bosun-test" in caught.value.detail
    assert builder.cache.entries() == []  # nothing half-built is left as cached
    assert not any(p.name != ".locks" for p in builder.cache.root.iterdir())


@pytest.mark.slow
def test_pip_manager(make_builder: Make) -> None:
    builder, log = make_builder(manager="pip")
    cold = builder.prepare(SIX, None, None)
    assert not cold.cache_hit
    assert run_in(cold, "import six; print(six.__version__)") == "1.16.0"
    assert "Successfully installed six-1.16.0" in log.text()
    warm = builder.prepare(SIX, None, None)
    assert warm.cache_hit and warm.seconds < 0.5
    uv_builder, _ = make_builder(manager="uv")
    assert uv_builder.prepare(SIX, None, None).key != cold.key  # a pip venv is not a uv venv
    with pytest.raises(EnvironmentBuildError) as caught:
        builder.prepare(BAD, None, None)
    assert caught.value.reason == (
        "pip install failed: No matching distribution found for nosuchpkg-bosun-test==9")


def test_interrupted_build_is_rebuilt(make_builder: Make) -> None:
    builder, _ = make_builder()
    first = builder.prepare(SIX, None, None)
    (first.venv / MARKER).unlink()  # as if the agent died before finishing
    (first.venv / "leftover").write_text("x")
    again, log = make_builder()
    second = again.prepare(SIX, None, None)
    assert not second.cache_hit
    assert second.venv == first.venv
    assert not (second.venv / "leftover").exists()
    assert "building a new venv" in log.text()
    assert run_in(second, "import six; print(six.__version__)") == "1.16.0"


def test_lru_eviction_with_real_venvs(make_builder: Make) -> None:
    builder, _ = make_builder(max_entries=2)
    six = builder.prepare(SIX, None, None)
    tomli = builder.prepare(TOMLI, None, None)
    assert builder.prepare(SIX, None, None).cache_hit  # six is now the most recently used
    both = builder.prepare({"requirements": {"pip": "six==1.16.0\ntomli==2.0.1"}}, None, None)
    assert six.venv.is_dir() and both.venv.is_dir()
    assert not tomli.venv.exists()
    assert not builder.prepare(TOMLI, None, None).cache_hit


def test_without_cache_builds_fresh_under_venvs_dir(make_builder: Make) -> None:
    builder, _ = make_builder(enabled=False)
    first = builder.prepare(SIX, None, None)
    assert not first.cache_hit
    assert first.venv.parent == builder.venvs_dir
    second = builder.prepare(TOMLI, None, None)
    assert not second.cache_hit and second.venv == first.venv
    assert run_in(second, "import tomli; print('ok')") == "ok"
    assert not builder.cache.root.exists()


def test_priority_post_and_optional_packages(make_builder: Make) -> None:
    builder, log = make_builder(priority_packages=["tomli==2.0.1"],
                                priority_optional_packages=["nosuchpkg-bosun-test==9"],
                                post_optional_packages=["six==1.16.0"])
    env = builder.prepare({}, None, None)
    assert run_in(env, "import tomli, six; print('ok')") == "ok"
    text = log.text()
    assert "warning: optional package nosuchpkg-bosun-test==9 was not installed" in text
    assert text.index("installing priority packages") < text.index("optional post packages")


def test_requirements_file_in_repo(make_builder: Make, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "requirements.txt").write_text("# deps\nsix==1.16.0\n"
                                           "bogus @ file:///home/someone/bogus\n")
    builder, log = make_builder()
    env = builder.prepare({"requirements": {"pip": ""}}, repo, None)
    assert run_in(env, "import six; print(six.__version__)") == "1.16.0"
    assert "dropped local-path requirement" in log.text()
    assert str(repo / "requirements.txt") in log.text()


PYPROJECT = """\
[project]
name = "bosun-demo-project"
version = "0.1.0"
requires-python = ">=3.8"
dependencies = ["six==1.16.0"]
"""


def test_uv_sync_project(make_builder: Make, tmp_path: Path, uv_cache: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pyproject.toml").write_text(PYPROJECT)
    builder, log = make_builder(priority_packages=["tomli==2.0.1"])
    env = builder.prepare({}, repo, None)
    # six from the project, tomli kept (sync is inexact), the project itself not installed
    assert run_in(env, "import six, tomli; print(six.__version__)") == "1.16.0"
    assert "uv sync of" in log.text()
    assert not (repo / "uv.lock").exists()  # the checkout is left as it was

    lock = subprocess.run([uv.find_uv_bin(), "lock"], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "UV_CACHE_DIR": str(uv_cache)})
    assert lock.returncode == 0, lock.stderr
    builder2, log2 = make_builder()
    locked = builder2.prepare({}, repo, None)
    assert locked.key != env.key
    assert "(uv.lock, frozen)" in log2.text()
    assert run_in(locked, "import six; print(six.__version__)") == "1.16.0"
    assert builder2.prepare({}, repo, None).cache_hit


@pytest.mark.parametrize(
    ("binary", "override", "expected"),
    [
        (None, "", None),
        ("", "", None),
        ("python3.12", "", "3.12"),
        (" python3.10 ", "", "3.10"),
        ("python3.12.1", "", "3.12.1"),
        ("python3", "", None),
        ("python", "", None),
        ("/usr/bin/python3.11", "", "/usr/bin/python3.11"),
        ("/bin/bash", "", None),
        ("bash", "", None),
        ("python3.12", "/opt/py/bin/python3", "/opt/py/bin/python3"),
        ("python3.12", "python3.9", "3.9"),
        ("python3.12", "3.10", "3.10"),
        (None, "/usr/local/bin/python3.11", "/usr/local/bin/python3.11"),
    ],
)
def test_wanted_python(binary: str | None, override: str, expected: str | None) -> None:
    assert wanted_python(binary, override) == expected


def test_find_python_default_is_a_real_interpreter() -> None:
    found = find_python(None, print)
    assert found == base_interpreter()
    assert found.is_file()
    assert not (found.parent.parent / "pyvenv.cfg").exists()  # not a venv's launcher
    out = subprocess.run([str(found), "-c", "import sys; print(sys.prefix == sys.base_prefix)"],
                         capture_output=True, text=True).stdout.strip()
    assert out == "True"


def test_find_python_by_version() -> None:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = find_python(version, print)
    out = subprocess.run([str(found), "-c", "import sys; print(sys.version_info[:2])"],
                         capture_output=True, text=True).stdout.strip()
    assert out == str(sys.version_info[:2])
    # a path from the machine that recorded the task falls back to its version
    log: list[str] = []
    assert find_python(f"/nonexistent/bin/python{version}", log.append).is_file()
    assert "does not exist here" in log[0]


def test_find_python_unavailable_version_is_a_clear_error() -> None:
    log: list[str] = []
    with pytest.raises(EnvironmentBuildError) as caught:
        find_python("2.1", log.append)
    assert caught.value.reason.startswith(
        "Python 2.1 is not available on this machine and could not be installed: ")
    assert "\n" not in caught.value.reason
    assert any("uv python install 2.1" in line for line in log)
    with pytest.raises(EnvironmentBuildError, match="not available"):
        find_python("/nonexistent/bin/bash", log.append)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (["Collecting x", "ERROR: Could not find a version that satisfies the requirement x==9",
          "ERROR: No matching distribution found for x==9"],
         "No matching distribution found for x==9"),
        (["Using Python 3.11.7 environment at: v", "error: No solution found",
          "  cause: Because x was not found in the package registry, we can conclude that",
          "  your requirements are unsatisfiable."],
         "Because x was not found in the package registry, we can conclude that your "
         "requirements are unsatisfiable."),
        (["\u00d7 No solution found when resolving dependencies:",
          "  ╰─▶ Because x was not found in the package registry."],
         "Because x was not found in the package registry."),
        (["error: Failed to fetch: `https://pypi.org/simple/x/`"],
         "Failed to fetch: `https://pypi.org/simple/x/`"),
        (["something", "went wrong"], "went wrong"),
        ([], "no output"),
    ],
)
def test_first_error_line(output: list[str], expected: str) -> None:
    assert first_error_line(output) == expected
