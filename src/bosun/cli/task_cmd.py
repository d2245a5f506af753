"""`bosun task create|enqueue|dequeue|clone|abort|reset|show|list|logs|wait`.

`create` turns a local script or module into a task the way `clearml-task` does: the checkout
it lives in (remote URL without credentials, branch, commit, uncommitted diff, untracked files
the user names), the entry point and working dir relative to the repository, requirements,
Python version and container. The other commands drive tasks through the server's API.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bosun.api.errors import ApiError
from bosun.cli.errors import UserError
from bosun.cli.output import (
    add_command,
    add_connection_flags,
    connect,
    print_fields,
    print_json,
    print_table,
    short_time,
)
from bosun.cli.queue_cmd import find_queue
from bosun.client import Session
from bosun.task_capture.script_task import CaptureError, ScriptSpec, build_script

STATUSES = ("created", "queued", "in_progress", "stopped", "completed", "failed", "closed",
            "publishing", "published")
RUNNING = frozenset({"queued", "in_progress"})
# `bosun task wait` exit codes by final status.
WAIT_EXIT = {"completed": 0, "closed": 0, "publishing": 0, "published": 0, "failed": 1,
             "stopped": 2}
WAIT_TIMEOUT_EXIT = 3
POLL_SECONDS = 0.5
LOG_BATCH = 1000
INVALID_TASK_ID = 101
EXPECTED_UNIQUE = 801


def add_parser(commands: Any) -> None:
    task = commands.add_parser(
        "task", help="create tasks from local code, queue them, follow them",
        description="Create tasks from a local script or repository (like clearml-task) and "
        "drive them: queue, clone, abort, reset, inspect, follow their log, wait for them.")
    add_connection_flags(task, sub_command=False)
    sub = task.add_subparsers(dest="task_command", metavar="COMMAND", required=True)
    _add_create(sub)
    enqueue = add_command(sub, "enqueue", "put a task in a queue")
    enqueue.add_argument("id", help="task id")
    enqueue.add_argument("--queue", default="default", help="queue name or id (default: "
                         "default)")
    enqueue.set_defaults(run=run_enqueue)
    dequeue = add_command(sub, "dequeue", "take a queued task out of its queue")
    dequeue.add_argument("id", help="task id")
    dequeue.set_defaults(run=run_dequeue)
    clone = add_command(sub, "clone", "copy a task (code, arguments, requirements, container) "
                        "as a new created task")
    clone.add_argument("id", help="task id")
    clone.add_argument("--name", default=None, help="the copy's name (default: NAME (clone))")
    clone.add_argument("--queue", default=None, help="enqueue the copy in this queue")
    clone.set_defaults(run=run_clone)
    abort = add_command(sub, "abort", "stop a queued or running task")
    abort.add_argument("id", help="task id")
    abort.add_argument("--force", action="store_true",
                       help="stop it whatever its status (e.g. a created task)")
    abort.set_defaults(run=run_abort)
    reset = add_command(sub, "reset", "take a task back to created (its log is deleted)")
    reset.add_argument("id", help="task id")
    reset.add_argument("--force", action="store_true", help="reset a published task too")
    reset.set_defaults(run=run_reset)
    show = add_command(sub, "show", "a task's status, code, requirements, worker and timings")
    show.add_argument("id", help="task id")
    show.set_defaults(run=run_show)
    listing = add_command(sub, "list", "list tasks, newest first")
    listing.add_argument("--project", default=None, help="only this project's tasks")
    listing.add_argument("--status", nargs="+", choices=STATUSES, default=None,
                         metavar="STATUS", help=f"only these statuses ({', '.join(STATUSES)})")
    listing.add_argument("--queue", default=None, help="only the tasks waiting in this queue")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default "
                         "100; 0: all)")
    listing.set_defaults(run=run_list)
    logs = add_command(sub, "logs", "print a task's console log")
    logs.add_argument("id", help="task id")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing new lines until the task ends")
    logs.set_defaults(run=run_logs)
    wait = add_command(
        sub, "wait", "wait until a task ends; the exit code tells how",
        description="Wait until a task ends. Exit code: 0 completed (or closed/published), "
        "1 failed, 2 stopped, 3 --timeout reached.")
    wait.add_argument("id", help="task id")
    wait.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                      help="give up after this long (exit code 3)")
    wait.set_defaults(run=run_wait)


def _add_create(sub: Any) -> None:
    create = add_command(
        sub, "create", "make a task from a local script or module",
        description="Make a task from a local script or module. Inside a git checkout the task "
        "records the remote URL (credentials stripped), branch, HEAD commit and the uncommitted "
        "changes (staged and unstaged, plus the untracked files named with "
        "--include-untracked), so an agent rebuilds the working tree exactly; outside one it "
        "stores the script's text. Prints the new task's id.")
    what = create.add_mutually_exclusive_group(required=True)
    what.add_argument("--script", type=Path, metavar="PATH", help="the Python script to run")
    what.add_argument("--module", metavar="PKG.MOD", help="run `python -m PKG.MOD` instead")
    create.add_argument("--args", default="", metavar='"ARGS"',
                        help='arguments for the script, one string: --args "--lr 0.1" (use '
                        '--args=--flag for a single option)')
    create.add_argument("--cwd", type=Path, default=None, metavar="DIR",
                        help="folder the task runs in (default: the current folder when it is "
                        "inside the repository, else the script's folder)")
    create.add_argument("--project", default=None, help="project name (created if missing)")
    create.add_argument("--name", default=None,
                        help="task name (default: the script's or module's name)")
    requirements = create.add_mutually_exclusive_group()
    requirements.add_argument("--requirements", type=Path, default=None, metavar="FILE",
                              help="requirements file to record (default: the repository's "
                              "requirements.txt; none with uv.lock / pyproject.toml)")
    requirements.add_argument("--packages", nargs="+", default=None, metavar="PKG",
                              help='packages to record, e.g. --packages "torch==2.5" numpy')
    create.add_argument("--include-untracked", nargs="+", action="extend", default=[],
                        type=Path, metavar="PATH",
                        help="untracked files or folders to carry in the diff as new files")
    create.add_argument("--python", default=None, metavar="VERSION",
                        help="Python version the agent should use, e.g. 3.12")
    create.add_argument("--docker", default=None, metavar="IMAGE", help="container image")
    create.add_argument("--docker-args", default=None, metavar='"ARGS"',
                        help="arguments for the container run (with --docker)")
    create.add_argument("--docker-setup", type=Path, default=None, metavar="FILE",
                        help="shell script to run in the container first (with --docker)")
    create.add_argument("--queue", default=None, help="enqueue the task in this queue right away")
    create.set_defaults(run=run_create)


# --- shared helpers -----------------------------------------------------------------------------


def _api_message(exc: ApiError, has_force: bool = False) -> str:
    return exc.msg.replace("force=true", "--force") if has_force else \
        re.sub(r"\s*\((?:use|or use)? ?force=true[^)]*\)", "", exc.msg)


def get_task(session: Session, task_id: str) -> dict[str, Any]:
    try:
        return dict(session.call("tasks.get_by_id", {"task": task_id})["task"])
    except ApiError as exc:
        if exc.subcode == INVALID_TASK_ID:
            raise UserError(f"no task with id {task_id}") from exc
        raise UserError(f"task {task_id}: {exc.msg}") from exc


def find_project(session: Session, name: str) -> dict[str, Any] | None:
    found = session.call("projects.get_all", {"name": f"^{re.escape(name)}$"})["projects"]
    exact: list[dict[str, Any]] = [p for p in found if p.get("name") == name]
    return exact[0] if exact else None


def ensure_project(session: Session, name: str) -> str:
    project = find_project(session, name)
    if project is not None:
        return str(project["id"])
    try:
        return str(session.call("projects.create", {"name": name})["id"])
    except ApiError as exc:
        if exc.subcode == EXPECTED_UNIQUE:  # made by someone else meanwhile
            again = find_project(session, name)
            if again is not None:
                return str(again["id"])
        raise UserError(f"cannot create project '{name}': {exc.msg}") from exc


def _project_names(session: Session, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    found = session.call("projects.get_all", {"id": sorted(ids)})["projects"]
    return {p["id"]: p["name"] for p in found}


def _status(session: Session, task_id: str) -> tuple[str, str]:
    found = session.call("tasks.get_all", {"id": [task_id], "search_hidden": True,
                                           "only_fields": ["status", "status_message"]})["tasks"]
    if not found:
        raise UserError(f"task {task_id} was deleted")
    return str(found[0].get("status")), str(found[0].get("status_message") or "")


def _enqueue(session: Session, task_id: str, queue: dict[str, Any]) -> None:
    try:
        session.call("tasks.enqueue", {"task": task_id, "queue": queue["id"]})
    except ApiError as exc:
        raise UserError(f"cannot enqueue task {task_id} in {queue['name']}: "
                        f"{_api_message(exc)}") from exc


def _warn(message: str) -> None:
    print(f"bosun: warning: {message}", file=sys.stderr)


# --- create -------------------------------------------------------------------------------------


def _container(args: argparse.Namespace) -> dict[str, str]:
    if args.docker is None:
        if args.docker_args is not None or args.docker_setup is not None:
            raise UserError("--docker-args and --docker-setup need --docker IMAGE")
        return {}
    setup = ""
    if args.docker_setup is not None:
        try:
            setup = args.docker_setup.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read --docker-setup {args.docker_setup}: "
                            f"{getattr(exc, 'strerror', None) or exc}") from exc
    return {"image": args.docker, "arguments": args.docker_args or "",
            "setup_shell_script": setup}


def run_create(args: argparse.Namespace) -> int:
    spec = ScriptSpec(script=args.script, module=args.module, args=args.args, cwd=args.cwd,
                      requirements_file=args.requirements, packages=args.packages,
                      include_untracked=args.include_untracked, python=args.python)
    container = _container(args)
    try:
        built = build_script(spec, Path.cwd())
    except CaptureError as exc:
        raise UserError(str(exc)) from exc
    for warning in built.warnings:
        _warn(warning)
    name = args.name or (args.script.stem if args.script is not None else args.module)
    with connect(args) as session:
        queue = find_queue(session, args.queue) if args.queue else None
        project_id = ensure_project(session, args.project) if args.project else None
        body: dict[str, Any] = {
            "name": name, "type": "training", "script": built.script,
            "hyperparams": built.hyperparams, "comment": "created by bosun task create",
        }
        if project_id:
            body["project"] = project_id
        if container:
            body["container"] = container
        try:
            task_id = str(session.call("tasks.create", body)["id"])
        except ApiError as exc:
            raise UserError(f"cannot create the task: {exc.msg}") from exc
        if queue is not None:
            try:
                _enqueue(session, task_id, queue)
            except UserError as exc:
                raise UserError(f"task {task_id} was created, but {exc}") from exc
    if args.json:
        print_json({"id": task_id, "name": name, "project": args.project, "project_id":
                    project_id, "queue": queue["name"] if queue else None,
                    "queue_id": queue["id"] if queue else None, "script": built.script,
                    "container": container, "hyperparams": built.hyperparams,
                    "requirements_source": built.requirements.source,
                    "warnings": built.warnings})
    else:
        print(task_id)
    return 0


# --- queueing and status changes ----------------------------------------------------------------


def run_enqueue(args: argparse.Namespace) -> int:
    with connect(args) as session:
        get_task(session, args.id)
        queue = find_queue(session, args.queue)
        _enqueue(session, args.id, queue)
    if args.json:
        print_json({"id": args.id, "status": "queued", "queue": queue["name"],
                    "queue_id": queue["id"]})
    else:
        print(f"task {args.id} queued in {queue['name']}")
    return 0


def run_dequeue(args: argparse.Namespace) -> int:
    with connect(args) as session:
        get_task(session, args.id)
        try:
            fields = session.call("tasks.dequeue", {"task": args.id})["fields"]
        except ApiError as exc:
            raise UserError(f"cannot dequeue task {args.id}: {_api_message(exc)}") from exc
    status = fields.get("status", "created")
    if args.json:
        print_json({"id": args.id, "status": status})
    else:
        print(f"task {args.id} dequeued (now {status})")
    return 0


def run_clone(args: argparse.Namespace) -> int:
    with connect(args) as session:
        source = get_task(session, args.id)
        queue = find_queue(session, args.queue) if args.queue else None
        body: dict[str, Any] = {"task": args.id}
        if args.name:
            body["new_task_name"] = args.name
        new_id = str(session.call("tasks.clone", body)["id"])
        if queue is not None:
            try:
                _enqueue(session, new_id, queue)
            except UserError as exc:
                raise UserError(f"clone {new_id} was created, but {exc}") from exc
    if args.json:
        print_json({"id": new_id, "source": source["id"], "name": args.name or
                    f"{source['name']} (clone)", "queue": queue["name"] if queue else None})
    else:
        print(new_id)
    return 0


def run_abort(args: argparse.Namespace) -> int:
    with connect(args) as session:
        get_task(session, args.id)
        try:
            fields = session.call("tasks.stop", {"task": args.id, "force": args.force})["fields"]
        except ApiError as exc:
            raise UserError(f"cannot abort task {args.id}: {_api_message(exc, True)}") from exc
    stopping = fields.get("status") == "in_progress"
    if args.json:
        print_json({"id": args.id, "status": fields.get("status"),
                    "status_message": fields.get("status_message")})
    elif stopping:
        worker = fields.get("last_worker") or "its worker"
        print(f"task {args.id} is stopping: {worker} ends the run and marks it stopped")
    else:
        print(f"task {args.id} stopped")
    return 0


def run_reset(args: argparse.Namespace) -> int:
    with connect(args) as session:
        get_task(session, args.id)
        try:
            result = session.call("tasks.reset", {"task": args.id, "force": args.force})
        except ApiError as exc:
            raise UserError(f"cannot reset task {args.id}: {_api_message(exc, True)}") from exc
    dequeued = bool((result.get("dequeued") or {}).get("removed"))
    if args.json:
        print_json({"id": args.id, "status": "created", "dequeued": dequeued})
    else:
        print(f"task {args.id} reset to created" + (" (taken out of its queue)" if dequeued
                                                      else ""))
    return 0


# --- show / list ----------------------------------------------------------------------------------


def _duration(start: Any, end: Any) -> str:
    try:
        seconds = (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))
                   ).total_seconds()
    except (TypeError, ValueError):
        return ""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _diff_summary(diff: str) -> str:
    if not diff.strip():
        return "none"
    if not diff.lstrip().startswith("diff "):
        return f"the script's text ({len(diff.splitlines())} lines; no repository)"
    files = sum(1 for line in diff.splitlines() if line.startswith("diff --git "))
    return f"{files} file(s) changed ({len(diff.encode('utf-8', 'surrogateescape'))} bytes)"


def _requirements_text(script: dict[str, Any]) -> str:
    pip = (script.get("requirements") or {}).get("pip")
    if isinstance(pip, list):
        pip = "\n".join(str(p) for p in pip)
    lines = [line for line in str(pip or "").splitlines() if line.strip()]
    if lines:
        return "\n".join(lines)
    return ("none stored: the agent installs the repository's requirements.txt or project "
            "(uv.lock / pyproject.toml)") if script.get("repository") else "none"


def run_show(args: argparse.Namespace) -> int:
    with connect(args) as session:
        task = get_task(session, args.id)
        project = ""
        if task.get("project"):
            project = _project_names(session, {task["project"]}).get(task["project"],
                                                                     task["project"])
        queue_name = ""
        queue_id = (task.get("execution") or {}).get("queue")
        if queue_id and task.get("status") == "queued":
            try:
                queue_name = session.call("queues.get_by_id", {"queue": queue_id}
                                          )["queue"]["name"]
            except ApiError:
                queue_name = queue_id
    if args.json:
        print_json(task)
        return 0
    script = task.get("script") or {}
    container = task.get("container") or {}
    status = task.get("status", "")
    message = task.get("status_message") or task.get("status_reason") or ""
    message = "" if message == status else message
    params = ((task.get("hyperparams") or {}).get("Args") or {}).values()
    fields: list[tuple[str, Any]] = [
        ("id", task["id"]), ("name", task.get("name")), ("project", project),
        ("status", f"{status} ({message})" if message else status),
    ]
    if queue_name:
        fields.append(("queue", queue_name))
    fields += [
        ("repository", script.get("repository") or "(none: the script's text is stored)"),
        ("branch", script.get("branch")), ("commit", script.get("version_num")),
        ("entry point", script.get("entry_point")), ("working dir", script.get("working_dir")),
        ("python", script.get("binary")),
        ("uncommitted changes" if script.get("repository") else "script",
         _diff_summary(script.get("diff") or "")),
    ]
    if params:
        fields.append(("args", " ".join(f"{p.get('name')}={p.get('value')}" for p in params)))
    fields.append(("requirements", _requirements_text(script)))
    if container.get("image"):
        image = container["image"] + (f" {container['arguments']}"
                                      if container.get("arguments") else "")
        fields.append(("container", image))
    fields += [
        ("worker", task.get("last_worker")), ("created", short_time(task.get("created"))),
        ("started", short_time(task.get("started"))),
        ("completed", short_time(task.get("completed"))),
    ]
    if task.get("started") and task.get("completed"):
        fields.append(("ran for", _duration(task["started"], task["completed"])))
    fields.append(("last update", short_time(task.get("last_update"))))
    print_fields(fields)
    return 0


def run_list(args: argparse.Namespace) -> int:
    with connect(args) as session:
        body: dict[str, Any] = {"order_by": ["-created"], "only_fields": [
            "id", "name", "project", "status", "status_message", "last_worker", "created",
            "last_update", "execution.queue", "script.entry_point"]}
        if args.limit and args.limit > 0:
            body["page_size"] = args.limit
        if args.status:
            body["status"] = args.status
        if args.project:
            project = find_project(session, args.project)
            if project is None:
                raise UserError(f"project '{args.project}' does not exist")
            body["project"] = [project["id"]]
        order: list[str] = []
        if args.queue:
            queue = find_queue(session, args.queue)
            order = [e["task"] for e in queue.get("entries") or []]
            body["id"] = order
        tasks = session.call("tasks.get_all", body)["tasks"] if not args.queue or order else []
        if order:  # queue order, first out first
            position = {task_id: i for i, task_id in enumerate(order)}
            tasks.sort(key=lambda t: position.get(t["id"], len(order)))
        projects = _project_names(session, {t["project"] for t in tasks if t.get("project")})
    if args.json:
        print_json([{**t, "project_name": projects.get(t.get("project") or "")} for t in tasks])
        return 0
    print_table(["ID", "NAME", "PROJECT", "STATUS", "WORKER", "CREATED"], [
        (t["id"], t.get("name"), projects.get(t.get("project") or "", "-"), t.get("status"),
         t.get("last_worker") or "-", short_time(t.get("created"))) for t in tasks],
        empty="no tasks")
    return 0


# --- logs / wait --------------------------------------------------------------------------------


class _Printer:
    """Writes log events to stdout; stops quietly when the reader went away (`| head`)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.closed = False

    def write(self, events: list[dict[str, Any]]) -> None:
        if self.closed or not events:
            return
        try:
            for event in events:
                if self.as_json:
                    sys.stdout.write(json.dumps(event) + "\n")
                else:
                    msg = str(event.get("msg") if event.get("msg") is not None else "")
                    sys.stdout.write(msg if msg.endswith("\n") else msg + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            self.closed = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so that the exit flush does not fail


def _log_page(session: Session, task_id: str, cursor: str | None
              ) -> tuple[list[dict[str, Any]], str | None]:
    body: dict[str, Any] = {"task": task_id, "navigate_earlier": False, "batch_size": LOG_BATCH}
    if cursor is not None:
        body["scroll_id"] = cursor
    page = session.call("events.get_task_log", body)
    return list(page.get("events") or []), page.get("scroll_id") or cursor


def run_logs(args: argparse.Namespace) -> int:
    printer = _Printer(args.json)
    with connect(args) as session:
        get_task(session, args.id)
        cursor: str | None = None
        ended = not args.follow
        while not printer.closed:
            events, cursor = _log_page(session, args.id, cursor)
            printer.write(events)
            if len(events) >= LOG_BATCH:
                continue  # more is waiting
            if ended:
                break
            status, _ = _status(session, args.id)
            if status not in RUNNING:
                ended = True  # one more pass drains what came before the end
                continue
            time.sleep(POLL_SECONDS)
    return 0


def run_wait(args: argparse.Namespace) -> int:
    started = time.monotonic()
    with connect(args) as session:
        get_task(session, args.id)
        while True:
            status, message = _status(session, args.id)
            message = "" if message == status else message
            if status in WAIT_EXIT:
                code = WAIT_EXIT[status]
                if args.json:
                    print_json({"id": args.id, "status": status, "status_message": message,
                                "exit_code": code})
                else:
                    print(f"task {args.id} {status}" + (f": {message}" if message else ""))
                return code
            if status not in RUNNING:
                raise UserError(f"task {args.id} is {status}: it is neither queued nor running, "
                                "so it will not end (enqueue it first)")
            elapsed = time.monotonic() - started
            if args.timeout is not None and elapsed >= args.timeout:
                print(f"bosun: timed out after {args.timeout:g}s: task {args.id} is still "
                      f"{status}", file=sys.stderr)
                return WAIT_TIMEOUT_EXIT
            # Poll twice a second at first, then less often for long runs.
            interval = min(POLL_SECONDS + elapsed / 60, 5.0)
            if args.timeout is not None:
                interval = min(interval, max(args.timeout - elapsed, 0.05))
            time.sleep(interval)
