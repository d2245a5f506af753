"""`bosun agent build`: a task's code and environment, ready to run, in a folder or an image.

- `--target DIR`: DIR/code (the checkout, diff applied; or the stored script), DIR/venv (the
  task's requirements, built in place: do not move DIR), DIR/run.sh (runs the entry point as the
  agent would; extra arguments are appended).
- `--docker|--podman [IMAGE] --target NAME [--entry-point reuse_task|clone_task]`: a container
  from IMAGE (else the task's image, else agent.default_docker.image) gets the bosun runtime, the
  bosun source, the code and a built venv copied in (the setup scripts run first), and is
  committed as NAME. With an entry point, `<engine> run NAME` executes the task (or a clone of
  it) against the server in the agent's configuration: the image holds that configuration,
  credentials included, as /opt/bosun/task/.bosun/clearml.conf (`CLEARML_API_HOST`,
  `CLEARML_API_ACCESS_KEY`, ... given to `run` override it).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bosun.agent.config import Config
from bosun.agent.container_engine import ContainerError, last_error_line
from bosun.agent.container_run import (
    RUN_FILES,
    TASK_MOUNT,
    UV_CACHE_MOUNT,
    ConsoleLog,
    ContainerMode,
    choose_spec,
    inner_config,
    runtime_root,
    setup_script_text,
    uv_cache,
    write_private,
)
from bosun.agent.container_runtime import (
    BOSUN_ROOT,
    RUNTIME_PYTHON,
    ensure_runtime,
    network_env,
    source_dir,
    stream_output,
)
from bosun.agent.task_run import TaskRun, TaskSetupError
from bosun.client import Session

Echo = Callable[[str], None]
BUILT_VENVS_CACHE = f"{BOSUN_ROOT}/venvs-cache"  # inside built images
BUILT_VENV_LINK = f"{BOSUN_ROOT}/venv"
STAGE = f"{BOSUN_ROOT}/stage"


class BuildError(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class _LocalRun(TaskRun):
    """TaskRun's steps for a build: the log goes to the console only and the task is not
    changed (no commit recorded)."""

    def __init__(self, session: Session, config: Config, task_id: str, workspace: Path,
                 echo: Echo) -> None:
        super().__init__(session, config, "bosun-build", task_id)
        self.log.close(retry_for=0)
        self.log = _EchoLog(session, task_id, "bosun-build", self.masker, echo)
        self.workspace = workspace

    def _record_commit(self, sha: str) -> None:
        pass


class _EchoLog(ConsoleLog):
    def __init__(self, session: Session, task_id: str, worker: str, masker: Any,
                 echo: Echo) -> None:
        super().__init__(session, task_id, worker, masker)
        self._print = echo

    def _append(self, line: str, level: str) -> None:
        self._print(self._masker.mask(line))


def _get_task(session: Session, task_id: str) -> dict[str, Any]:
    from bosun.api.errors import ApiError

    try:
        task: dict[str, Any] = session.call("tasks.get_by_id", {"task": task_id})["task"]
    except ApiError as exc:
        raise BuildError(f"task {task_id}: {exc.msg}") from exc
    return task


# --- --target DIR ------------------------------------------------------------------------------


def build_target_dir(session: Session, config: Config, task_id: str, target: Path,
                     echo: Echo) -> Path:
    target = target.expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BuildError(f"--target {target} exists and is not an empty folder")
    task = _get_task(session, task_id)
    script: dict[str, Any] = task.get("script") or {}
    agent = config.agent
    local = dataclasses.replace(config, agent=dataclasses.replace(
        agent, venvs_dir=target,
        venvs_cache=dataclasses.replace(agent.venvs_cache, enabled=False)))
    run = _LocalRun(session, local, task["id"], target, echo)
    try:
        echo(f"bosun: building task {task['id']} '{task.get('name')}' into {target}")
        code_dir, run_dir = run._fetch_code(script)
        env = run._build_env(script, code_dir)
        argv = run._command(script, env, run_dir)
    except TaskSetupError as exc:
        if exc.detail:
            echo(exc.detail)
        raise BuildError(exc.reason, exc.detail) from exc
    finally:
        run.log.close()
    paths = [run_dir, *([code_dir, code_dir / "src"] if code_dir else [])]
    pythonpath = ":".join(dict.fromkeys(str(p) for p in paths if p.is_dir()))
    runner = target / "run.sh"
    runner.write_text(
        "#!/bin/sh\n"
        f"# task {task['id']} ({task.get('name')}), built by bosun agent build\n"
        f"cd {shlex.quote(str(run_dir))} || exit 1\n"
        f"export PYTHONPATH={shlex.quote(pythonpath)}${{PYTHONPATH:+:$PYTHONPATH}}\n"
        f"export VIRTUAL_ENV={shlex.quote(str(env.venv))}\n"
        f'export PATH="$VIRTUAL_ENV/bin:$PATH" PYTHONUNBUFFERED=1\n'
        f'exec {shlex.join(argv)} "$@"\n')
    runner.chmod(0o755)
    (target / "task.json").write_text(json.dumps(
        {"id": task["id"], "name": task.get("name"), "entry": argv,
         "working_dir": str(run_dir)}, indent=2) + "\n")
    echo(f"bosun: built {target}: run it with {runner}")
    return runner


# --- --docker ----------------------------------------------------------------------------------

_BUILD_SCRIPT = """\
set -e
. {stage}/{files}/build-env.sh
mkdir -p {root}/src
cp -a {stage}-runtime {root}/runtime
cp -a {stage}-src/bosun {root}/src/bosun
find {root}/src -name __pycache__ -prune -exec rm -rf {{}} +
mkdir -p {task}
cp -a {stage}/. {task}/
if [ -s {task}/{files}/setup.sh ]; then
  echo "bosun: running the container setup script"
  if command -v bash >/dev/null 2>&1; then bash -e {task}/{files}/setup.sh
  else sh -e {task}/{files}/setup.sh; fi
fi
{python} -m bosun agent --config-file {task}/{files}/clearml.conf container-task \\
  --id {task_id} --workspace {task} --prepare-only --link {link}
rm -f {task}/{files}/build-env.sh {task}/{files}/build.sh
"""


def build_docker(session: Session, config: Config, task_id: str, mode: ContainerMode,
                 name: str, entry_point: str | None, echo: Echo) -> str:
    task = _get_task(session, task_id)
    task_id = task["id"]
    engine = mode.engine
    spec = choose_spec(task, dataclasses.replace(mode, force=mode.force or bool(mode.image)),
                       config.agent)
    echo(f"bosun: building image {name} for task {task_id} '{task.get('name')}' from "
         f"{spec.image} (from {spec.source}) with {engine.binary}")
    engine.check()
    image_id = engine.ensure_image(spec.image, echo, config.agent.docker_force_pull)
    runtime = ensure_runtime(engine, spec.image, image_id, runtime_root(config),
                             uv_cache(config), echo)
    builds = config.agent.venvs_dir / "builds"
    builds.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f"{task_id[:12]}-", dir=builds))
    container = f"bosun-build-{task_id[:12]}-{uuid.uuid4().hex[:6]}"
    try:
        run = _LocalRun(session, config, task_id, stage, echo)
        try:
            run._fetch_code(task.get("script") or {})
        except TaskSetupError as exc:
            raise BuildError(exc.reason, exc.detail) from exc
        finally:
            run.log.close()
        files = stage / RUN_FILES
        write_private(files / "clearml.conf", json.dumps(inner_config(
            config, venvs_cache=BUILT_VENVS_CACHE, venvs_dir=f"{BOSUN_ROOT}/venvs-builds"),
            indent=2))
        write_private(files / "setup.sh", setup_script_text(spec), 0o644)
        net_env, volumes = network_env()
        net_env.update(UV_LINK_MODE="copy", UV_CACHE_DIR=UV_CACHE_MOUNT)
        # Variables go through a file, not `-e`: `commit` would keep them in the image.
        write_private(files / "build-env.sh", "".join(
            f"export {key}={shlex.quote(value)}\n" for key, value in net_env.items()))
        write_private(files / "build.sh", _BUILD_SCRIPT.format(
            stage=STAGE, files=RUN_FILES, root=BOSUN_ROOT, task=TASK_MOUNT,
            python=RUNTIME_PYTHON, task_id=shlex.quote(task_id), link=BUILT_VENV_LINK), 0o644)
        volumes += ["-v", f"{stage}:{STAGE}:ro", "-v", f"{runtime.path}:{STAGE}-runtime:ro",
                    "-v", f"{source_dir()}:{STAGE}-src/bosun:ro"]
        download = uv_cache(config)
        if download is not None:
            volumes += ["-v", f"{download}:{UV_CACHE_MOUNT}"]
        argv = [engine.binary, "run", "--name", container, "--network", "host", *volumes,
                "--entrypoint", "/bin/sh", spec.image, f"{STAGE}/{RUN_FILES}/build.sh"]
        code, output = stream_output(argv, echo)
        if code != 0:
            raise BuildError(f"building the image failed (exit code {code}): "
                             f"{last_error_line(output)}", output)
        changes = [f"LABEL bosun.task={task_id}", f"ENV VIRTUAL_ENV={BUILT_VENV_LINK}"]
        if not entry_point:  # the base image's own, not the build's /bin/sh
            entry, cmd = engine.entry_and_cmd(spec.image)
            changes += [f"ENTRYPOINT {json.dumps(entry)}", f"CMD {json.dumps(cmd)}"]
        else:
            command = [RUNTIME_PYTHON, "-m", "bosun", "agent", "--config-file",
                       f"{TASK_MOUNT}/{RUN_FILES}/clearml.conf", "container-task", "--id",
                       task_id, "--workspace", TASK_MOUNT, "--standalone",
                       *(["--clone"] if entry_point == "clone_task" else [])]
            changes += [f"ENTRYPOINT {json.dumps(command)}", "CMD []",
                        f"LABEL bosun.entry_point={entry_point}"]
        image = engine.commit(container, name, changes)
    except ContainerError as exc:
        raise BuildError(exc.reason, exc.detail) from exc
    finally:
        engine.call("rm", "-f", container)
        shutil.rmtree(stage, ignore_errors=True)
    how = (f"{engine.binary} run --network host {name}" if entry_point else
           f"the task's environment is {BUILT_VENV_LINK}, its code {TASK_MOUNT}")
    echo(f"bosun: built image {name} ({image[:19] or 'committed'}): {how}")
    return name
