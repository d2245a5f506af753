"""Container mode: one task, run inside a docker/podman container.

The agent outside (`run_in_container`, called by `TaskRun` when the daemon or `execute` got
`--docker` / `--podman`):

1. picks the image, its arguments and setup script (the task's `container` section wins over
   `--docker IMAGE ARGS` and `agent.default_docker`, unless `--force-docker`);
2. fetches the task's code on this machine, through the VCS cache, into the task's workspace
   (git credentials never enter the container);
3. makes sure the image is here (pulled when missing, or always with `agent.docker_force_pull`)
   and that the bosun runtime for it exists (see container_runtime);
4. runs `<engine> run --rm` with the workspace, the bosun source (read-only), the runtime
   (read-only), the pip/uv download cache and the container venv cache mounted, the agent's
   `extra_docker_arguments` and the image arguments, `--network host` unless the arguments name
   a network, and the GPUs of `--gpus` as the engine's device flags. Inside, a small script runs
   `agent.extra_docker_shell_script` and the task's setup script (`bash -e`; a failure fails the
   task), then `python -m bosun agent container-task`: the same code as outside builds the venv
   (cached in the mounted cache) and runs the entry point, printing its log to stdout and writing
   its outcome to a file in the workspace;
5. streams the container's output into the task log, watches for an abort (then the container
   is stopped and removed), and reports the outcome.

The agent inside (`PreparedTaskRun`) is also the entry point of images made by
`bosun agent build --docker`, where it reports to the server itself (`standalone`).
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bosun.agent import process_tree, task_records
from bosun.agent.config import AgentConfig, Config
from bosun.agent.container_engine import (
    ContainerError,
    Engine,
    has_network_option,
    last_error_line,
    split_arguments,
)
from bosun.agent.container_runtime import (
    BOSUN_ROOT,
    RUNTIME_MOUNT,
    RUNTIME_PYTHON,
    SRC_MOUNT,
    UV_CACHE_MOUNT,
    VENVS_CACHE_MOUNT,
    ensure_runtime,
    env_args,
    network_env,
    source_dir,
)
from bosun.agent.log_stream import TaskLog
from bosun.agent.task_run import (
    ABORT_POLL_SECONDS,
    PING_SECONDS,
    Outcome,
    TaskRun,
    TaskSetupError,
)
from bosun.client import Session

TASK_MOUNT = f"{BOSUN_ROOT}/task"  # the task's workspace: code, and the run files in .bosun/
RUN_FILES = ".bosun"
CONTAINER_VENVS_DIR = f"{BOSUN_ROOT}/venvs-builds"
_TAIL = 40


@dataclass(frozen=True)
class ContainerMode:
    """How the agent was started: `--docker [IMAGE [ARGS...]]` / `--podman ...`."""

    engine: Engine
    image: str = ""  # the default image given on the command line
    arguments: list[str] = field(default_factory=list)
    force: bool = False  # --force-docker: the agent's image and arguments beat the task's


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    arguments: list[str]  # image arguments (the task's, or the agent's default ones)
    extra_arguments: list[str]  # agent.extra_docker_arguments (always)
    setup_script: str  # extra_docker_shell_script, then the task's setup_shell_script
    source: str  # where the image came from, for the log


def task_container(task: dict[str, Any]) -> tuple[str, list[str], str]:
    """(image, arguments, setup script) the task asks for: its `container` section, else the
    older `execution.docker_cmd` ("image args...")."""
    container = task.get("container") or {}
    image = (container.get("image") or "").strip()
    if image:
        return (image, split_arguments(container.get("arguments") or ""),
                container.get("setup_shell_script") or "")
    docker_cmd = split_arguments((task.get("execution") or {}).get("docker_cmd") or "")
    if docker_cmd:
        return docker_cmd[0], docker_cmd[1:], container.get("setup_shell_script") or ""
    return "", [], container.get("setup_shell_script") or ""


def choose_spec(task: dict[str, Any], mode: ContainerMode, agent: AgentConfig) -> ContainerSpec:
    """The task's image/arguments/setup script win over `--docker IMAGE ARGS` and then
    `agent.default_docker`, unless `--force-docker`. Raises ContainerError without an image."""
    task_image, task_args, task_setup = task_container(task)
    agent_image = mode.image or agent.default_docker.image
    agent_args = mode.arguments if mode.image else list(agent.default_docker.arguments)
    if mode.force and agent_image:
        image, arguments, setup = agent_image, agent_args, ""
        source = "--force-docker"
    elif task_image:
        image, arguments, setup = task_image, task_args, task_setup
        source = "the task"
    else:
        image, arguments, setup = agent_image, agent_args, task_setup
        source = f"--{mode.engine.kind}" if mode.image else "agent.default_docker.image"
    if not image:
        raise ContainerError("no container image: the task names none, and neither "
                             "--docker IMAGE nor agent.default_docker.image is set")
    lines = [*agent.extra_docker_shell_script, *([setup] if setup.strip() else [])]
    script = "\n".join(line for line in lines if line.strip())
    return ContainerSpec(image, arguments, list(agent.extra_docker_arguments), script, source)


def runtime_root(config: Config) -> Path:
    return config.agent.venvs_cache.path.parent / "bosun-runtimes"


def container_venvs_cache(config: Config) -> Path:
    """Venvs built inside containers: beside the host's cache, not in it (their interpreters
    are the images' ones)."""
    path = config.agent.venvs_cache.path
    return path.with_name(path.name + "-containers")


def uv_cache(config: Config) -> Path | None:
    download = config.agent.pip_download_cache
    return download.path if download.enabled else None


def inner_config(config: Config, *, venvs_cache: str, venvs_dir: str) -> dict[str, Any]:
    """The configuration the agent inside the container reads (JSON is valid HOCON)."""
    api, agent = config.api, config.agent
    pm = agent.package_manager
    python_binary = agent.python_binary if not agent.python_binary.startswith("/") else ""
    return {
        "api": {"api_server": api.api_server, "web_server": api.web_server,
                "files_server": api.files_server,
                "credentials": {"access_key": api.access_key, "secret_key": api.secret_key}},
        "agent": {
            "package_manager": {
                "type": pm.type, "pip_version": pm.pip_version,
                "system_site_packages": pm.system_site_packages,
                "force_upgrade": pm.force_upgrade, "extra_index_url": pm.extra_index_url,
                "priority_packages": pm.priority_packages,
                "priority_optional_packages": pm.priority_optional_packages,
                "post_packages": pm.post_packages,
                "post_optional_packages": pm.post_optional_packages},
            "python_binary": python_binary,
            "venvs_dir": venvs_dir,
            "venvs_cache": {"enabled": agent.venvs_cache.enabled, "path": venvs_cache,
                            "max_entries": agent.venvs_cache.max_entries,
                            "free_space_threshold_gb": agent.venvs_cache.free_space_threshold_gb},
            "pip_download_cache": {"enabled": True, "path": UV_CACHE_MOUNT},
            "vcs_cache": {"enabled": False},
            "enable_task_env": agent.enable_task_env,
        },
    }


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)


def setup_script_text(spec: ContainerSpec) -> str:
    if not spec.setup_script.strip():
        return ""
    return "export DEBIAN_FRONTEND=noninteractive\n" + spec.setup_script + "\n"


def gpu_request(extra_env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The daemon's GPU variables (from --gpus / --cpu-only) -> (GPUs to hand to the engine,
    the variables for inside). Inside, the container sees only its GPUs, numbered from 0, so the
    host's indices are not passed as CUDA_VISIBLE_DEVICES."""
    env = dict(extra_env)
    cuda = env.pop("CUDA_VISIBLE_DEVICES", None)
    nvidia = env.pop("NVIDIA_VISIBLE_DEVICES", None)
    if cuda is None and nvidia is None:
        return [], env
    if cuda == "" or nvidia == "none":
        env.update(CUDA_VISIBLE_DEVICES="", NVIDIA_VISIBLE_DEVICES="none")
        return [], env
    gpus = [g for g in (nvidia or cuda or "").split(",") if g]
    return gpus, env


def container_name(task_id: str) -> str:
    return f"bosun-{task_id[:12]}-{uuid.uuid4().hex[:6]}"


_ENTRY = """\
#!/bin/sh
B={task}/{files}
: > "$B/started"
if [ -s "$B/setup.sh" ]; then
  echo "bosun: running the container setup script"
  if command -v bash >/dev/null 2>&1; then bash -e "$B/setup.sh"; else sh -e "$B/setup.sh"; fi
  rc=$?
  if [ "$rc" -ne 0 ]; then echo "$rc" > "$B/setup.failed"; exit "$rc"; fi
fi
exec {python} -m bosun agent --config-file "$B/clearml.conf" container-task \\
  --id {task_id} --worker {worker} --workspace {task} --outcome "$B/outcome.json"
"""


def run_in_container(run: TaskRun, task: dict[str, Any], mode: ContainerMode) -> Outcome:
    """Run `task` for `run` (whose log and session it uses) in a container."""
    log = run.log.write
    config = run.config
    engine = mode.engine
    script: dict[str, Any] = task.get("script") or {}
    try:
        spec = choose_spec(task, mode, config.agent)
        log(f"bosun: container mode ({engine.binary}): image {spec.image} (from {spec.source})"
            + (f", arguments {shlex.join(spec.arguments + spec.extra_arguments)}"
               if spec.arguments or spec.extra_arguments else ""))
        run._fetch_code(script)
        engine.check()
        image_id = engine.ensure_image(spec.image, log, config.agent.docker_force_pull)
        runtime = ensure_runtime(engine, spec.image, image_id, runtime_root(config),
                                 uv_cache(config), log)
    except (ContainerError, TaskSetupError) as exc:
        if exc.detail:
            log(exc.detail)
        log(f"bosun: {exc.reason}")
        return Outcome("failed", exc.reason)

    files = run.workspace / RUN_FILES
    files.mkdir(parents=True, exist_ok=True)
    venvs_cache = container_venvs_cache(config)
    write_private(files / "clearml.conf", json.dumps(inner_config(
        config, venvs_cache=VENVS_CACHE_MOUNT, venvs_dir=CONTAINER_VENVS_DIR), indent=2))
    write_private(files / "setup.sh", setup_script_text(spec), 0o644)
    name = container_name(run.task_id)
    write_private(files / "entry.sh", _ENTRY.format(
        task=TASK_MOUNT, files=RUN_FILES, python=RUNTIME_PYTHON,
        task_id=shlex.quote(run.task_id), worker=shlex.quote(run.worker_id)), 0o755)

    gpus, inside_env = gpu_request(run.extra_env)
    net_env, volumes = network_env()
    inside_env = {**net_env, "UV_LINK_MODE": "copy", "PYTHONUNBUFFERED": "1", **inside_env}
    volumes += ["-v", f"{source_dir()}:{SRC_MOUNT}/bosun:ro",
                "-v", f"{runtime.path}:{RUNTIME_MOUNT}:ro",
                "-v", f"{run.workspace}:{TASK_MOUNT}"]
    if config.agent.venvs_cache.enabled:
        venvs_cache.mkdir(parents=True, exist_ok=True)
        volumes += ["-v", f"{venvs_cache}:{VENVS_CACHE_MOUNT}"]
    download = uv_cache(config)
    if download is not None:
        download.mkdir(parents=True, exist_ok=True)
        volumes += ["-v", f"{download}:{UV_CACHE_MOUNT}"]
    user_args = spec.extra_arguments + spec.arguments
    argv = [engine.binary, "run", "--rm", "--name", name,
            "--label", f"bosun.task={run.task_id}", "--label", f"bosun.worker={run.worker_id}",
            *([] if has_network_option(user_args) else ["--network", "host"]),
            *volumes, *env_args(inside_env), *engine.gpu_args(gpus), *user_args,
            "--entrypoint", "/bin/sh", spec.image, f"{TASK_MOUNT}/{RUN_FILES}/entry.sh"]
    return _supervise(run, engine, name, argv, files)


def _supervise(run: TaskRun, engine: Engine, name: str, argv: list[str],
               files: Path) -> Outcome:
    run.log.write(f"bosun: starting container {name}")
    try:
        proc = process_tree.start(argv, run.workspace, os.environ)
    except OSError as exc:
        return Outcome("failed", f"could not start {engine.binary}: {exc.strerror or exc}")
    # kill -9 of the agent kills the engine's CLI (process_tree), not the container: the record
    # has the next agent remove it
    record = task_records.track(proc, run.task_id, run.worker_id, (engine.binary, name))
    done = threading.Event()
    watcher = threading.Thread(target=_watch, args=(run, engine, name, done), daemon=True)
    watcher.start()
    tail: deque[str] = deque(maxlen=_TAIL)
    partial = ""
    assert proc.stdout is not None
    try:
        while chunk := os.read(proc.stdout.fileno(), 65536):
            text = chunk.decode("utf-8", errors="replace")
            run.log.feed(text)
            partial += text
            *lines, partial = partial.split("\n")
            tail.extend(line for line in lines if line.strip())
        code = proc.wait()
    finally:
        done.set()
        watcher.join(10)
        if engine.exists(name):  # normally gone already (--rm)
            engine.remove(name, grace=0)
        record.close()
    if partial.strip():
        tail.append(partial)
    return _outcome(run, engine, code, files, list(tail))


def _watch(run: TaskRun, engine: Engine, name: str, done: threading.Event) -> None:
    """Polls the task's status; an abort stops and removes the container."""
    last_ping = time.monotonic()
    while not done.wait(ABORT_POLL_SECONDS):
        reason = run._abort_reason or run._aborted()
        if reason:
            run._abort_reason = reason
            run.log.write(f"bosun: {reason}; stopping and removing container {name}",
                          level="warning")
            engine.remove(name, grace=1)
            return
        if time.monotonic() - last_ping > PING_SECONDS:
            last_ping = time.monotonic()
            run._quiet_call("tasks.ping", {"task": run.task_id})


def _outcome(run: TaskRun, engine: Engine, code: int, files: Path, tail: list[str]) -> Outcome:
    if run._abort_reason:
        return Outcome("stopped", run._abort_reason, code)
    result = files / "outcome.json"
    if result.is_file():
        try:
            data = json.loads(result.read_text())
            return Outcome(str(data["status"]), str(data["reason"]), data.get("exit_code"))
        except (ValueError, KeyError, OSError):
            pass
    if (files / "setup.failed").is_file():
        said = tail[-1].strip() if tail else ""
        return Outcome("failed", f"the container setup script failed (exit code {code})"
                       + (f": {said}" if said else ""), code)
    said = tail[-1].strip() if tail else ""
    if said.startswith("bosun: error:"):  # the agent inside stopped with a message
        return Outcome("failed", f"the agent in the container failed: "
                       f"{said[len('bosun: error:'):].strip()}", code)
    if not (files / "started").is_file():
        return Outcome("failed", f"the container did not start ({engine.binary} exit code "
                       f"{code}): {last_error_line(chr(10).join(tail))}", code)
    return Outcome("failed", f"the container exited with code {code} before the task finished"
                   + (" (killed: out of memory?)" if code == 137 else ""), code)


# --- inside the container ------------------------------------------------------------------------


class ConsoleLog(TaskLog):
    """The task log of the agent inside a container: printed only; the agent outside sends it
    to the server. The lines the outside writes itself are left out."""

    SKIP = ("bosun: running task ", "bosun: task completed after", "bosun: task failed after",
            "bosun: task stopped after")

    def _append(self, lines: list[str], level: str) -> None:
        for line in lines:
            line = self._masker.mask(line)
            if not line.startswith(self.SKIP):
                print(line, flush=True)


def prepared_dirs(script: dict[str, Any], workspace: Path) -> tuple[Path | None, Path]:
    """(checkout or None, directory to run in) of code fetched before into `workspace`, laid out
    as `TaskRun._fetch_code` does."""
    if not (script.get("repository") or "").strip():
        return None, workspace
    code = workspace / "code"
    if not code.is_dir():
        raise TaskSetupError(f"the task's code is not in {code}")
    working_dir = (script.get("working_dir") or ".").strip() or "."
    run_dir = (code / working_dir).resolve()
    if not run_dir.is_dir() or not run_dir.is_relative_to(code.resolve()):
        raise TaskSetupError(f"working dir '{working_dir}' not found in the repository")
    return code, run_dir


class PreparedTaskRun(TaskRun):
    """A task run whose code was fetched before into `prepared` (by the agent outside, or into
    an image by `bosun agent build`). `outcome_file`: write the outcome there instead of
    reporting it, and print the log instead of sending it (the agent outside does both)."""

    def __init__(self, session: Session, config: Config, worker_id: str, task_id: str, *,
                 prepared: Path, outcome_file: Path | None = None,
                 echo: Callable[[str], None] | None = None) -> None:
        super().__init__(session, config, worker_id, task_id, echo=echo)
        self.prepared = prepared
        self.outcome_file = outcome_file
        if outcome_file is not None:
            self.log.close(retry_for=0)
            if self.log.journal is not None:  # nothing was written: the agent outside owes it
                self.log.journal.remove()
            self.log = ConsoleLog(session, task_id, worker_id, self.masker)
        # What TaskRun.execute removes at the end: never the prepared code.
        self.workspace = Path(tempfile.gettempdir()) / f"bosun-task-{task_id}-{os.getpid()}"

    def _fetch_code(self, script: dict[str, Any]) -> tuple[Path | None, Path]:
        return prepared_dirs(script, self.prepared)

    def _record_commit(self, sha: str) -> None:
        pass

    def _deliver(self, outcome: Outcome) -> None:
        if self.outcome_file is None:
            super()._deliver(outcome)
            return
        self.log.close(retry_for=0)
        write_private(self.outcome_file, json.dumps(
            {"status": outcome.status, "reason": outcome.reason,
             "exit_code": outcome.exit_code}))

    def prepare_only(self, link: Path | None) -> Path:
        """Build (or find) the task's environment without running it; `link` -> the venv."""
        task = self.session.call("tasks.get_by_id", {"task": self.task_id})["task"]
        script: dict[str, Any] = task.get("script") or {}
        code_dir, run_dir = self._fetch_code(script)
        env = self._build_env(script, code_dir)
        self._command(script, env, run_dir)  # the entry point exists
        if link is not None:
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(env.venv)
        self.log.close()
        return env.venv
