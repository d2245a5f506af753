"""`bosun queue list|create|delete|tags`: the queues agents pull tasks from."""

from __future__ import annotations

import argparse
import re
from typing import Any

from bosun.api.errors import ApiError
from bosun.cli.errors import UserError
from bosun.cli.output import (
    add_command,
    add_connection_flags,
    connect,
    print_json,
    print_table,
)
from bosun.client import Session

_ID = re.compile(r"^[0-9a-f]{32}$")
QUEUE_NOT_EMPTY = 702


def add_parser(commands: Any) -> None:
    queue = commands.add_parser(
        "queue", help="list, create and delete queues",
        description="Queues hold tasks until an agent pulls them (bosun agent daemon --queue Q).")
    add_connection_flags(queue, sub_command=False)
    sub = queue.add_subparsers(dest="queue_command", metavar="COMMAND", required=True)
    add_command(sub, "list", "list the queues, their tasks and the workers pulling from them"
                ).set_defaults(run=run_list)
    create = add_command(sub, "create", "create a queue")
    create.add_argument("name", help="the new queue's name")
    create.add_argument("--tags", nargs="+", default=[], metavar="TAG", help="tags to give it")
    create.set_defaults(run=run_create)
    delete = add_command(sub, "delete", "delete a queue")
    delete.add_argument("queue", help="queue name or id")
    delete.add_argument("--force", action="store_true",
                        help="delete it even when it holds tasks (they go back to created)")
    delete.set_defaults(run=run_delete)
    tags = add_command(sub, "tags", "show a queue's tags, or change them with --add / --remove")
    tags.add_argument("queue", help="queue name or id")
    tags.add_argument("--add", nargs="+", default=[], metavar="TAG", help="tags to add")
    tags.add_argument("--remove", nargs="+", default=[], metavar="TAG", help="tags to remove")
    tags.set_defaults(run=run_tags)


def find_queue(session: Session, name_or_id: str) -> dict[str, Any]:
    """The queue with this exact name (or id); a UserError naming it when there is none."""
    if _ID.match(name_or_id):
        try:
            return dict(session.call("queues.get_by_id", {"queue": name_or_id})["queue"])
        except ApiError:
            pass  # a name that looks like an id
    found = session.call("queues.get_all", {"name": f"^{re.escape(name_or_id)}$"})["queues"]
    exact: list[dict[str, Any]] = [q for q in found if q.get("name") == name_or_id]
    if not exact:
        raise UserError(f"queue '{name_or_id}' does not exist (create it with: bosun queue "
                        f"create {name_or_id})")
    return exact[0]


def _workers_by_queue(session: Session) -> dict[str, list[str]]:
    listening: dict[str, list[str]] = {}
    for worker in session.call("workers.get_all")["workers"]:
        for queue in worker.get("queues") or []:
            queue_id = queue.get("id") if isinstance(queue, dict) else queue
            listening.setdefault(str(queue_id), []).append(worker["id"])
    return listening


def run_list(args: argparse.Namespace) -> int:
    with connect(args) as session:
        queues = session.call("queues.get_all")["queues"]
        listening = _workers_by_queue(session)
    if args.json:
        print_json([{"id": q["id"], "name": q["name"], "tags": q.get("tags") or [],
                     "system_tags": q.get("system_tags") or [],
                     "tasks": [e["task"] for e in q.get("entries") or []],
                     "workers": listening.get(q["id"], [])} for q in queues])
        return 0
    print_table(["NAME", "ID", "TASKS", "WORKERS", "TAGS"], [
        (q["name"], q["id"], len(q.get("entries") or []),
         ", ".join(listening.get(q["id"], [])) or "-", ", ".join(q.get("tags") or []) or "-")
        for q in queues], empty="no queues")
    return 0


def run_create(args: argparse.Namespace) -> int:
    with connect(args) as session:
        try:
            queue_id = session.call("queues.create", {"name": args.name,
                                                      "tags": args.tags})["id"]
        except ApiError as exc:
            raise UserError(f"cannot create queue '{args.name}': {exc.msg}") from exc
    if args.json:
        print_json({"id": queue_id, "name": args.name, "tags": args.tags})
    else:
        print(queue_id)
    return 0


def run_delete(args: argparse.Namespace) -> int:
    with connect(args) as session:
        queue = find_queue(session, args.queue)
        try:
            session.call("queues.delete", {"queue": queue["id"], "force": args.force})
        except ApiError as exc:
            if exc.subcode == QUEUE_NOT_EMPTY:
                count = len(queue.get("entries") or []) or exc.info.get("tasks", "some")
                raise UserError(f"queue '{queue['name']}' holds {count} task(s): dequeue them "
                                "first, or use --force (they go back to created)") from exc
            raise UserError(f"cannot delete queue '{queue['name']}': {exc.msg}") from exc
    if args.json:
        print_json({"id": queue["id"], "name": queue["name"], "deleted": True})
    else:
        print(f"deleted queue {queue['name']} ({queue['id']})")
    return 0


def run_tags(args: argparse.Namespace) -> int:
    with connect(args) as session:
        queue = find_queue(session, args.queue)
        tags = list(queue.get("tags") or [])
        if args.add or args.remove:
            tags = [t for t in dict.fromkeys([*tags, *args.add]) if t not in args.remove]
            session.call("queues.update", {"queue": queue["id"], "tags": tags})
    if args.json:
        print_json({"id": queue["id"], "name": queue["name"], "tags": tags})
    else:
        print(" ".join(tags) if tags else f"queue {queue['name']} has no tags")
    return 0
