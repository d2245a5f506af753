"""Pieces for agent end-to-end tests: a real git repo with uncommitted changes, a clearml.conf
pointing at a test server, and a daemon subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bosun.client import Session

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout.strip()


def make_repo(root: Path, files: dict[str, str]) -> tuple[Path, str]:
    """A repository with one commit holding `files`; returns (path, commit sha)."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    return repo, git(repo, "rev-parse", "HEAD")


def write_config(path: Path, api_url: str, work: Path, manager: str = "uv") -> Path:
    path.write_text(f"""
api {{
  api_server: "{api_url}"
  credentials {{ access_key: "test", secret_key: "test-secret" }}
}}
agent {{
  package_manager {{ type: {manager} }}
  venvs_dir: "{work}/venvs-builds"
  venvs_cache {{ path: "{work}/venvs-cache", max_entries: 5, free_space_threshold_gb: 0 }}
  vcs_cache {{ enabled: true, path: "{work}/vcs-cache" }}
}}
""")
    return path


def agent_env(work: Path) -> dict[str, str]:
    return {**os.environ, "BOSUN_AGENT_STATE_DIR": str(work / "state"),
            "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(work.parent / "uv-cache"))}


class DaemonProcess:
    def __init__(self, config: Path, work: Path, *args: str) -> None:
        self.log_path = work / f"daemon-{time.monotonic_ns()}.log"
        self.argv = [sys.executable, "-m", "bosun", "agent", "--config-file", str(config),
                     "daemon", *args]
        self.env = agent_env(work)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         env=self.env)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             on_timeout: Callable[[], str] = lambda: "", interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{on_timeout()}")


def wait_for_status(api: Session, task_id: str, statuses: set[str], timeout: float,
                    on_timeout: Callable[[], str] = lambda: "") -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        task = api.call("tasks.get_by_id", {"task": task_id})["task"]
        return task if task["status"] in statuses else None

    return wait_for(done, timeout, f"task {task_id} to reach {statuses}", on_timeout)


def task_log(api: Session, task_id: str) -> list[str]:
    events = api.call("events.get_task_log", {"task": task_id, "navigate_earlier": False,
                                              "batch_size": 10000})["events"]
    return [e["msg"] for e in events]
