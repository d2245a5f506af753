"""`bosun worker list`: the agents the server knows, what they pull from and what they run."""

from __future__ import annotations

import argparse
from typing import Any

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
