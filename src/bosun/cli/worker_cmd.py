"""`bosun worker list`: the agents the server knows, what they pull from and what they run.
`bosun worker force ID on|off|clear [--for 24h]`: override a worker's working hours."""

from __future__ import annotations

import argparse
from typing import Any

from bosun.cli.errors import UserError
from bosun.cli.output import add_command, add_connection_flags, connect, print_json, print_table
from bosun.cli.output import short_time as _time


def add_parser(commands: Any) -> None:
    worker = commands.add_parser(
        "worker", help="list the workers (agents) known to the server",
        description="Workers are running agents (bosun agent daemon, clearml-agent).")
    add_connection_flags(worker, sub_command=False)
    sub = worker.add_subparsers(dest="worker_command", metavar="COMMAND", required=True)
    add_command(sub, "list", "list the workers, their queues and the task each runs"
                ).set_defaults(run=run_list)
    force = add_command(
        sub, "force", "make a worker pull tasks (on) or not (off) whatever its schedule",
        json_flag=False, description="Sets the worker's runtime property force=on|off, which "
        "overrides its --uptime/--downtime (queue tags force_workers:on|off override both); "
        "clear removes it.")
    force.add_argument("worker", help="the worker id (see bosun worker list)")
    force.add_argument("state", choices=["on", "off", "clear"])
    force.add_argument("--for", dest="duration", metavar="DURATION", default=None,
                       help="expire after this long, e.g. 90m, 24h, 7d (default: until cleared)")
    force.set_defaults(run=run_force)


def _queue_names(worker: dict[str, Any]) -> list[str]:
    return [str(q.get("name") or q.get("id")) if isinstance(q, dict) else str(q)
            for q in worker.get("queues") or []]


def run_list(args: argparse.Namespace) -> int:
    with connect(args) as session:
        workers = session.call("workers.get_all")["workers"]
    if args.json:
        print_json([{"id": w["id"], "queues": _queue_names(w),
                     "task": (w.get("task") or {}).get("id"),
                     "task_name": (w.get("task") or {}).get("name"),
                     "last_activity_time": w.get("last_activity_time")} for w in workers])
        return 0
    rows = []
    for worker in workers:
        task = worker.get("task") or {}
        running = f"{task.get('id', '')} {task.get('name', '')}".strip() or "-"
        rows.append((worker["id"], ", ".join(_queue_names(worker)) or "-", running,
                     _time(worker.get("last_activity_time"))))
    print_table(["WORKER", "QUEUES", "TASK", "LAST ACTIVITY"], rows, empty="no workers")
    return 0


def run_force(args: argparse.Namespace) -> int:
    from bosun.agent.schedule import parse_duration

    item: dict[str, Any] = {"key": "force", "value": args.state}
    if args.state == "clear":  # ClearML: an expiry of 0 deletes the property
        item.update(value="", expiry=0)
    elif args.duration is not None:
        try:
            item["expiry"] = parse_duration(args.duration)
        except ValueError as exc:
            raise UserError(f"--for: {exc}") from exc
    with connect(args) as session:
        session.call("workers.set_runtime_properties",
                     {"worker": args.worker, "runtime_properties": [item]})
    until = f" for {args.duration}" if args.duration and args.state != "clear" else ""
    print(f"worker {args.worker}: force {args.state}{until}")
    return 0
