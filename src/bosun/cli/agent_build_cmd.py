"""Container flags of `bosun agent daemon|execute` (`--docker`, `--podman`, `--force-docker`),
`bosun agent build`, and `bosun agent container-task` (the agent inside a task container; not
for direct use)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bosun.agent.config import Config, load_config
from bosun.cli.errors import UserError

if TYPE_CHECKING:
    from bosun.agent.container_run import ContainerMode

log = logging.getLogger("bosun.agent")


# --- --docker / --podman -----------------------------------------------------------------------


def add_container_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--docker", nargs="*", default=None, metavar="IMAGE [ARGS]",
        help="run each task in a docker container: the task's own image, else IMAGE, else "
        "agent.default_docker.image; ARGS are added to `docker run` (quote them with the image "
        "when they start with -, e.g. --docker \"ubuntu:24.04 --ipc=host\")")
    group.add_argument("--podman", nargs="*", default=None, metavar="IMAGE [ARGS]",
                       help="as --docker, with podman")
    parser.add_argument("--force-docker", action="store_true",
                        help="use the agent's image and arguments even when a task names its own")
    parser.add_argument("--force-current-version", action="store_true",
                        help="accepted for clearml-agent compatibility: bosun always runs its own "
                        "current code inside the container")


def container_mode(args: argparse.Namespace) -> ContainerMode | None:
    """The ContainerMode of `--docker` / `--podman`, None in venv mode."""
    from bosun.agent.container_engine import Engine, split_arguments
    from bosun.agent.container_run import ContainerMode

    values, binary = None, ""
    if getattr(args, "docker", None) is not None:
        values, binary = args.docker, os.environ.get("BOSUN_DOCKER_BINARY", "docker")
    elif getattr(args, "podman", None) is not None:
        values, binary = args.podman, os.environ.get("BOSUN_PODMAN_BINARY", "podman")
    if values is None:
        if getattr(args, "force_docker", False):
            raise UserError("--force-docker needs --docker or --podman")
        return None
    words: list[str] = []
    for value in values:
        words += split_arguments(value) if any(c.isspace() for c in value) else [value]
    image, arguments = (words[0], words[1:]) if words else ("", [])
    return ContainerMode(Engine(binary), image, arguments, bool(args.force_docker))


def checked_container_mode(args: argparse.Namespace) -> ContainerMode | None:
    """container_mode(), with the engine checked once up front: a daemon started with --docker
    on a machine without a working docker stops with one line instead of failing every task."""
    from bosun.agent.container_engine import ContainerError

    mode = container_mode(args)
    if mode is not None:
        try:
            mode.engine.check()
        except ContainerError as exc:
            raise UserError(exc.reason) from exc
    return mode


# --- build / container-task --------------------------------------------------------------------


def add_parsers(sub: Any) -> None:
    build = sub.add_parser(
        "build", help="build a task's code and environment into a folder or a container image",
        description="Build a task's code and Python environment into DIR (--target DIR: run it "
        "with DIR/run.sh), or with --docker/--podman into a container image NAME that, with "
        "--entry-point, executes the task (reuse_task) or a clone of it (clone_task) against the "
        "server when run.")
    build.add_argument("--id", required=True, help="the task id")
    build.add_argument("--target", required=True,
                       help="a new folder, or with --docker/--podman the image name to create")
    build.add_argument("--entry-point", choices=["reuse_task", "clone_task"], default=None,
                       help="(with --docker/--podman) what the image does when run: execute the "
                       "task, or a clone of it; without it: an image with the task's environment")
    add_container_flags(build)
    build.set_defaults(run=run_build)

    inner = sub.add_parser("container-task")  # no help: not listed
    inner.add_argument("--id", required=True)
    inner.add_argument("--workspace", type=Path, required=True)
    inner.add_argument("--worker", default="")
    inner.add_argument("--outcome", type=Path, default=None,
                       help="write the outcome here and print the log (run by an agent outside)")
    inner.add_argument("--standalone", action="store_true",
                       help="start the task, send the log and report the outcome (built images)")
    inner.add_argument("--clone", action="store_true", help="(--standalone) run a clone")
    inner.add_argument("--prepare-only", action="store_true",
                       help="build the environment only (bosun agent build)")
    inner.add_argument("--link", type=Path, default=None,
                       help="(--prepare-only) a symlink to create to the venv")
    inner.set_defaults(run=run_container_task)


def load_agent_config(args: argparse.Namespace) -> Config:
    """The configuration `--config-file` names (else the default file and the environment),
    its notices (unsupported keys and the like) printed on stderr. Shared by `bosun agent`."""
    config = load_config(args.config_file)
    for notice in config.notices:
        print(f"bosun: note: {notice}", file=sys.stderr)
    return config


def run_build(args: argparse.Namespace) -> int:
    from bosun.agent.container_engine import ContainerError
    from bosun.agent.task_build import BuildError, build_docker, build_target_dir
    from bosun.cli.connection import open_session

    config = load_agent_config(args)
    mode = container_mode(args)
    if mode is None and args.entry_point:
        raise UserError("--entry-point needs --docker or --podman (it makes an image)")
    with open_session(config) as session:
        try:
            if mode is None:
                build_target_dir(session, config, args.id, Path(args.target), echo)
            else:
                build_docker(session, config, args.id, mode, args.target, args.entry_point,
                             echo)
        except (BuildError, ContainerError) as exc:
            raise UserError(exc.reason) from exc
    return 0


def echo(line: str) -> None:
    print(line, flush=True)


def run_container_task(args: argparse.Namespace) -> int:
    from bosun.agent.container_run import PreparedTaskRun
    from bosun.cli.connection import open_session

    # Only problems: the task's log is what this prints.
    logging.basicConfig(level="WARNING", format="bosun: %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config_file)
    worker = args.worker or config.agent.worker_id or f"{socket.gethostname()}:container"
    session = open_session(config, worker=worker)
    task_id = args.id
    if args.standalone:
        task_id = _start_task(session, task_id, args.clone)
    if args.prepare_only:
        run = PreparedTaskRun(session, config, worker, task_id, prepared=args.workspace,
                              outcome_file=Path(os.devnull))
        from bosun.agent.environment import EnvironmentBuildError
        from bosun.agent.task_run import TaskSetupError

        try:
            venv = run.prepare_only(args.link)
        except (TaskSetupError, EnvironmentBuildError) as exc:
            print(getattr(exc, "detail", "") or "", file=sys.stderr)
            raise UserError(exc.reason) from exc
        print(f"bosun: environment ready: {venv}")
        return 0
    run = PreparedTaskRun(session, config, worker, task_id, prepared=args.workspace,
                          outcome_file=args.outcome,
                          echo=echo if args.outcome is None else None)
    signal.signal(signal.SIGTERM, lambda *_: run.abort("agent shut down"))
    outcome = run.execute()
    return {"completed": 0, "failed": 1, "stopped": 2}[outcome.status]


def _start_task(session: Any, task_id: str, clone: bool) -> str:
    """As `bosun agent execute`: dequeue (or clone) the task and mark it started."""
    task = session.call("tasks.get_by_id", {"task": task_id})["task"]
    if clone:
        task_id = session.call("tasks.clone", {"task": task_id})["id"]
        print(f"bosun: running clone {task_id} of task {task['id']}", flush=True)
    elif task["status"] == "queued":
        session.call("tasks.dequeue", {"task": task_id})
    session.call("tasks.started", {"task": task_id, "force": True,
                                   "status_reason": "started by a bosun-built container"})
    return task_id
