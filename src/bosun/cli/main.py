"""`bosun`: one entry point, a sub-command per part of the system."""

from __future__ import annotations

import argparse
import sys

from bosun import __version__
from bosun.cli import agent_cmd, queue_cmd, server_cmd, task_cmd, worker_cmd
from bosun.cli.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bosun",
        description="bosun: a fast, self-hostable task-queue server and execution agent for "
        "machine-learning work, wire-compatible with ClearML.",
    )
    parser.add_argument("--version", action="version", version=f"bosun {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    server_cmd.add_parser(commands)
    agent_cmd.add_parser(commands)
    task_cmd.add_parser(commands)
    queue_cmd.add_parser(commands)
    worker_cmd.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except UserError as exc:
        print(f"bosun: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
