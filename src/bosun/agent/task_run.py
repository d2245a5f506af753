"""One task, start to finish: fetch its code, build its environment, run its entry point with
the console streamed to the server, watch for an abort, and report the outcome.

Nothing in here may take the daemon down: every failure of a step fails the task with a
one-line reason (the task's status message) and the details in the task's log.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bosun.agent import process_tree, task_records
from bosun.agent.config import Config
from bosun.agent.console_journal import ConsoleJournal
from bosun.agent.delivery import Patience, retryable
from bosun.agent.environment import EnvironmentBuilder, EnvironmentBuildError, PreparedEnv
from bosun.agent.git_credentials import GitCredentials
from bosun.agent.log_stream import TaskLog
from bosun.agent.python_finder import wanted_python
from bosun.agent.secret_mask import SecretMasker
from bosun.agent.vcs import RepoCache, VcsError, apply_diff, is_script_body
from bosun.agent.venv_cache import VenvCache
from bosun.api.errors import ApiError
from bosun.client import ConnectionFailed, Session

if TYPE_CHECKING:
    from bosun.agent.container_run import ContainerMode

task_log = logging.getLogger("bosun.agent")

# How many times the server requeued the task because its worker was lost (bosun server).
REQUEUES_FIELD = "lost_worker_requeues"
REQUEUED_REASON = "task was requeued by the server (it lost contact with this worker)"
ABORT_POLL_SECONDS = 0.5
PING_SECONDS = 30.0
KILL_GRACE_SECONDS = 1.0


class TaskSetupError(Exception):
    """A step before the run failed: `reason` is one line, `detail` goes to the log."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Outcome:
    status: str  # completed | failed | stopped
    reason: str
    exit_code: int | None = None


def masker_for(config: Config) -> SecretMasker:
    masker = SecretMasker()
    for secret in (config.api.secret_key, config.agent.git_pass):
        if secret:
            masker.add(secret)
    return masker


def builder_for(config: Config, log: Callable[[str], None]) -> EnvironmentBuilder:
    agent = config.agent
    pm = agent.package_manager
    cache = VenvCache(agent.venvs_cache.path, agent.venvs_cache.max_entries,
                      agent.venvs_cache.free_space_threshold_gb, agent.venvs_cache.enabled)
    return EnvironmentBuilder(
        manager=pm.type, pip_version=pm.pip_version,
        system_site_packages=pm.system_site_packages, force_upgrade=pm.force_upgrade,
        extra_index_url=list(pm.extra_index_url), priority_packages=list(pm.priority_packages),
        priority_optional_packages=list(pm.priority_optional_packages),
        post_packages=list(pm.post_packages),
        post_optional_packages=list(pm.post_optional_packages),
        venvs_dir=agent.venvs_dir, cache=cache, log=log,
        uv_cache_dir=agent.pip_download_cache.path if agent.pip_download_cache.enabled else None,
    )


def repo_cache_for(config: Config, log: Callable[[str], None],
                   masker: SecretMasker) -> RepoCache:
    agent = config.agent
    credentials = GitCredentials(
        user=agent.git_user, password=agent.git_pass, host=agent.git_host,
        force_ssh=agent.force_git_ssh_protocol, ssh_port=agent.force_git_ssh_port,
        ssh_user=agent.force_git_ssh_user, translate_ssh=agent.translate_ssh)
    return RepoCache(agent.vcs_cache.path, agent.vcs_cache.enabled, credentials, log, masker)


class TaskRun:
    def __init__(self, session: Session, config: Config, worker_id: str, task_id: str, *,
                 echo: Callable[[str], None] | None = None,
                 extra_env: dict[str, str] | None = None,
                 container: ContainerMode | None = None,
                 stopping: threading.Event | None = None, numbered: bool = False) -> None:
        """`numbered`: the server is a bosun server, which stores each console line once
        however often it is sent (lines carry a stream id and a sequence number)."""
        self.session = session
        # Set when the agent shuts down: what the server is still owed then goes to the outbox.
        self.stopping = stopping
        self.config = config
        self.worker_id = worker_id
        self.task_id = task_id
        self.extra_env = extra_env or {}
        self.container = container  # None: venv mode; else run in a container (container_run)
        self.masker = masker_for(config)
        stream = uuid.uuid4().hex
        self.log = TaskLog(session, task_id, worker_id, self.masker, echo=echo,
                           journal=ConsoleJournal(task_id, worker_id, stream),
                           stream=stream if numbered else None)
        self.workspace = config.agent.venvs_dir / "tasks" / task_id
        self._abort = threading.Event()
        self._abort_reason = ""
        self._requeues = 0

    # --- the whole run -------------------------------------------------------------------------

    def execute(self) -> Outcome:
        started = time.monotonic()
        try:
            outcome = self._execute()
        except Exception as exc:  # the daemon must survive anything a task does
            self.log.write(traceback.format_exc(), level="error")
            outcome = Outcome("failed", f"bosun agent error: {type(exc).__name__}: {exc}")
        self.log.write(f"bosun: task {outcome.status} after {time.monotonic() - started:.1f} s"
                       + (f": {outcome.reason}" if outcome.status != "completed" else ""))
        self._deliver(outcome)
        shutil.rmtree(self.workspace, ignore_errors=True)
        return outcome

    def _deliver(self, outcome: Outcome) -> None:
        """The log, then the outcome, retried for as long as the server is away (the task's
        slot stays taken meanwhile, so the agent pulls nothing it could not report). Both are
        in the run's journal first, so an agent killed or shut down meanwhile leaves them to
        the next agent."""
        journal = self.log.journal
        call = self._outcome_call(outcome)
        if call is not None and journal is not None:
            journal.add_outcome(*call)
        patience = Patience(None, self.stopping)
        lines_sent = self.log.close(patience=patience)
        status_sent = lines_sent and (call is None or self._send_outcome(call, patience))
        if journal is None:
            return
        if lines_sent and status_sent:
            journal.remove()
            return
        journal.close()
        task_log.warning("task %s: the server is away; its unsent console%s kept in %s for "
                         "the next agent", self.task_id,
                         " and final status" if call is not None else "", journal.path)

    def abort(self, reason: str) -> None:
        self._abort_reason = reason
        self._abort.set()

    def _execute(self) -> Outcome:
        task = self.session.call("tasks.get_by_id", {"task": self.task_id})["task"]
        self._requeues = int(task.get(REQUEUES_FIELD) or 0)
        self.log.write(f"bosun: running task {self.task_id} '{task.get('name')}' on worker "
                       f"{self.worker_id}")
        script: dict[str, Any] = task.get("script") or {}
        if self.container is not None:
            from bosun.agent.container_run import run_in_container

            return run_in_container(self, task, self.container)
        try:
            code_dir, run_dir = self._fetch_code(script)
            env = self._build_env(script, code_dir)
            argv = self._command(script, env, run_dir)
            self._record_installed(script, env)
        except TaskSetupError as exc:
            if exc.detail:
                self.log.write(exc.detail, level="error")
            self.log.write(f"bosun: {exc.reason}", level="error")
            return Outcome("failed", exc.reason)
        variables = self._environment(task, env)
        # As clearml-agent does: the repository (and a src/ layout) import without installing.
        paths = [run_dir, *([code_dir, code_dir / "src"] if code_dir else [])]
        variables["PYTHONPATH"] = os.pathsep.join(
            dict.fromkeys(str(p) for p in paths if p.is_dir()))
        return self._run(argv, run_dir, variables)

    # --- steps ---------------------------------------------------------------------------------

    def _fetch_code(self, script: dict[str, Any]) -> tuple[Path | None, Path]:
        """Returns (repository checkout or None, directory to run in)."""
        shutil.rmtree(self.workspace, ignore_errors=True)
        self.workspace.mkdir(parents=True)
        repository = (script.get("repository") or "").strip()
        diff = script.get("diff") or ""
        if not repository:
            if not diff.strip():
                raise TaskSetupError("the task has neither a repository nor a script body")
            if not is_script_body(diff):
                raise TaskSetupError("the task has a diff but no repository to apply it to")
            entry = _entry_parts(script)[0] if script.get("entry_point") else "script.py"
            path = self.workspace / Path(entry).name
            path.write_text(diff)
            self.log.write(f"bosun: no repository; running the stored script body as {path.name}")
            return None, self.workspace
        repo_dir = self.workspace / "code"
        cache = repo_cache_for(self.config, self.log.write, self.masker)
        try:
            sha = cache.checkout(repository, repo_dir, commit=script.get("version_num") or "",
                                 tag=script.get("tag") or "", branch=script.get("branch") or "")
            if diff.strip():
                apply_diff(repo_dir, diff, self.log.write)
        except VcsError as exc:
            raise TaskSetupError(exc.reason, exc.detail) from exc
        if not script.get("version_num"):
            self._record_commit(sha)
        working_dir = (script.get("working_dir") or ".").strip() or "."
        run_dir = (repo_dir / working_dir).resolve()
        if not run_dir.is_dir() or not run_dir.is_relative_to(repo_dir.resolve()):
            raise TaskSetupError(f"working dir '{working_dir}' not found in the repository")
        return repo_dir, run_dir

    def _record_commit(self, sha: str) -> None:
        try:
            self.session.call("tasks.edit", {"task": self.task_id, "force": True,
                                             "script": {"version_num": sha}})
        except (ApiError, ConnectionFailed) as exc:
            self.log.write(f"bosun: could not record commit {sha}: {exc}", level="warning")

    def _build_env(self, script: dict[str, Any], code_dir: Path | None) -> PreparedEnv:
        builder = builder_for(self.config, self.log.write)
        python = wanted_python(script.get("binary"), self.config.agent.python_binary)
        try:
            return builder.prepare(script, code_dir, python)
        except EnvironmentBuildError as exc:
            raise TaskSetupError(exc.reason, getattr(exc, "detail", "")) from exc

    def _record_installed(self, script: dict[str, Any], env: PreparedEnv) -> None:
        """As clearml-agent does: the exact packages installed become the task's
        `script.requirements.pip`, the original list is kept in `org_pip`, so that a rerun or a
        clone installs the same versions. Done once per task (a rerun keeps the first record);
        a package installed from a local path is not portable, so such a venv is not recorded."""
        section = script.get("requirements") or {}
        if not isinstance(section, dict) or "org_pip" in section:
            return
        installed = env.installed()
        if not installed:
            return
        local = [line for line in installed if "file:" in line]
        if local:
            self.log.write(f"bosun: installed packages not recorded on the task: {local[0]} "
                           "comes from a local path")
            return
        recorded = {**section, "org_pip": section.get("pip") or "", "pip": installed}
        try:
            self.session.call("tasks.set_requirements",
                              {"task": self.task_id, "requirements": recorded})
        except (ApiError, ConnectionFailed) as exc:
            self.log.write(f"bosun: could not record the installed packages: {exc}",
                           level="warning")
            return
        self.log.write(f"bosun: recorded the {len(installed)} installed packages on the task "
                       "(script.requirements.pip; the original list is kept in org_pip)")

    def _command(self, script: dict[str, Any], env: PreparedEnv, run_dir: Path) -> list[str]:
        parts = _entry_parts(script)
        if not parts:
            raise TaskSetupError("the task has no entry point (script.entry_point is empty)")
        binary = (script.get("binary") or "").strip()
        if parts[0] == "-m":
            if len(parts) < 2:
                raise TaskSetupError("entry point '-m' names no module")
            return [str(env.python), "-u", *parts]
        target = run_dir / parts[0]
        if not target.is_file():
            where = "the stored script" if script.get("repository") in (None, "") else (
                f"the repository (working dir '{script.get('working_dir') or '.'}')")
            raise TaskSetupError(f"entry point '{parts[0]}' not found in {where}")
        if binary.endswith(("bash", "/sh")) or parts[0].endswith(".sh"):
            return [binary if binary.startswith("/") else "/bin/bash", *parts]
        return [str(env.python), "-u", *parts]

    def _environment(self, task: dict[str, Any], env: PreparedEnv) -> dict[str, str]:
        api = self.config.api
        variables = {k: v for k, v in os.environ.items()
                     if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")}
        if self.config.agent.enable_task_env:
            section = (task.get("hyperparams") or {}).get("Environment") or {}
            variables.update({name: str(item.get("value", "")) for name, item in section.items()
                              if isinstance(item, dict)})
        variables.update({
            "CLEARML_TASK_ID": self.task_id, "CLEARML_WORKER_ID": self.worker_id,
            # The SDK's Task.init needs a web host to print its results link and fails when it
            # can not guess one (it only knows ClearML's ports); bosun has no web app, so a blank
            # `web_server` becomes the API URL.
            "CLEARML_API_HOST": api.api_server,
            "CLEARML_WEB_HOST": api.web_server or api.api_server,
            "CLEARML_FILES_HOST": api.files_server or self._bosun_files_host(),
            "CLEARML_API_ACCESS_KEY": api.access_key, "CLEARML_API_SECRET_KEY": api.secret_key,
            "CLEARML_LOG_TASK_TO_BACKEND": "0", "PYTHONUNBUFFERED": "1",
            "VIRTUAL_ENV": str(env.venv),
            "PATH": f"{env.venv / 'bin'}{os.pathsep}{variables.get('PATH', '')}",
        })
        variables.update(self.extra_env)
        return {k: v for k, v in variables.items() if v is not None}

    def _bosun_files_host(self) -> str | None:
        """A bosun server serves files at /files; for another server the SDK guesses (:8081)."""
        api = self.config.api.api_server.rstrip("/")
        return f"{api}/files" if self.session.is_bosun() else None

    # --- running -------------------------------------------------------------------------------

    def _run(self, argv: list[str], cwd: Path, env: dict[str, str]) -> Outcome:
        self.log.write(f"bosun: starting {shlex.join(argv)} in {cwd}")
        try:
            proc = process_tree.start(argv, cwd, env)
        except OSError as exc:
            return Outcome("failed", f"could not start the entry point: {exc.strerror}")
        record = task_records.track(proc, self.task_id, self.worker_id)  # reaped if we die
        watcher = threading.Thread(target=self._watch, args=(proc,), daemon=True)
        watcher.start()
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 65536):
            self.log.feed(chunk.decode("utf-8", errors="replace"))
        code = proc.wait()
        self._abort.set()  # ends the watcher
        watcher.join(5)
        record.close()  # kills what the task left running
        if self._abort_reason:
            return Outcome("stopped", self._abort_reason, code)
        if code == 0:
            return Outcome("completed", "completed", 0)
        return Outcome("failed", f"worker execution exit code {code}", code)

    def _watch(self, proc: Any) -> None:
        """Polls the task's status; kills the process tree when it was aborted or reset."""
        last_ping = time.monotonic()
        while not self._abort.wait(ABORT_POLL_SECONDS):
            reason = self._aborted()
            if reason:
                self._abort_reason = reason
                self.log.write(f"bosun: {reason}; stopping the task's processes", level="warning")
                process_tree.kill_tree(proc, KILL_GRACE_SECONDS)
                return
            if time.monotonic() - last_ping > PING_SECONDS:
                last_ping = time.monotonic()
                self._quiet_call("tasks.ping", {"task": self.task_id})
        if self._abort_reason and proc.poll() is None:
            process_tree.kill_tree(proc, KILL_GRACE_SECONDS)

    def _aborted(self) -> str:
        try:
            tasks = self.session.call("tasks.get_all", {
                "id": [self.task_id], "search_hidden": True,
                "only_fields": ["status", "status_message", REQUEUES_FIELD]})["tasks"]
        except (ApiError, ConnectionFailed):
            return ""  # a server hiccup is not an abort
        if not tasks:
            return "task was deleted"
        status, message = tasks[0].get("status"), tasks[0].get("status_message") or ""
        if int(tasks[0].get(REQUEUES_FIELD) or 0) > self._requeues:
            # The server lost contact with this worker and gave the task to another run.
            return REQUEUED_REASON
        if status == "in_progress" and "stopping" in message:
            return "aborted by user"
        if status == "created":
            return "task was reset"
        if status != "in_progress":
            return f"task status changed to {status}"
        return ""

    # --- reporting -----------------------------------------------------------------------------

    def _outcome_call(self, outcome: Outcome) -> tuple[str, dict[str, Any]] | None:
        if outcome.reason in ("task was reset", "task was deleted", REQUEUED_REASON) or \
                outcome.reason.startswith("task status changed to"):
            return None  # the task was taken back: its outcome is no longer this run's
        endpoint = {"completed": "tasks.completed", "failed": "tasks.failed",
                    "stopped": "tasks.stopped"}[outcome.status]
        return endpoint, {"task": self.task_id, "status_reason": outcome.reason,
                          "status_message": outcome.reason}

    def _send_outcome(self, call: tuple[str, dict[str, Any]], patience: Patience) -> bool:
        """True once the server has the outcome (or refused it for good)."""
        endpoint, body = call
        while True:
            try:
                self.session.call(endpoint, body)
                return True
            except (ApiError, ConnectionFailed) as exc:
                if not retryable(exc):
                    task_log.warning("task %s: %s refused: %s", self.task_id, endpoint, exc)
                    return True
                if not patience.wait():
                    return False

    def _quiet_call(self, endpoint: str, body: dict[str, Any]) -> None:
        for attempt in range(5):
            try:
                self.session.call(endpoint, body)
                return
            except ConnectionFailed:
                time.sleep(0.5 * (attempt + 1))
            except ApiError as exc:
                self.log.write(f"bosun: {endpoint} failed: {exc}", level="warning")
                return


def _entry_parts(script: dict[str, Any]) -> list[str]:
    entry = (script.get("entry_point") or "").strip()
    try:
        return shlex.split(entry)
    except ValueError:
        return entry.split()
