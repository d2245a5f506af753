"""What `bosun task`, `bosun queue` and `bosun worker` share: the server connection flags, the
session opened with them, and the output (rich tables for people, JSON with ``--json``).

Connection settings, strongest first: the flags ``--api-host`` / ``--access-key`` /
``--secret-key``; the environment (``CLEARML_API_HOST``, ``CLEARML_API_ACCESS_KEY``, ...); the
``api`` section of ``clearml.conf`` (``--config-file``, else the file the agent reads). The flags
work before or after the sub-command (``bosun task --api-host URL list`` and ``bosun task list
--api-host URL``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bosun.agent.config import Config, load_config
from bosun.api.errors import ApiError
from bosun.cli.connection import open_session
from bosun.cli.errors import UserError
from bosun.client import ConnectionFailed, Session


def add_connection_flags(parser: argparse.ArgumentParser, *, sub_command: bool) -> None:
    """On the group parser (defaults None) and again on each sub-command (no default, so a flag
    given before the sub-command is not overwritten by the sub-command's default)."""
    default: Any = argparse.SUPPRESS if sub_command else None
    group = parser.add_argument_group("server connection (flags beat CLEARML_* env vars, which "
                                      "beat clearml.conf)")
    group.add_argument("--api-host", metavar="URL", default=default,
                       help="API server URL (default: $CLEARML_API_HOST or api.api_server in "
                       "clearml.conf)")
    group.add_argument("--access-key", metavar="KEY", default=default,
                       help="access key (default: $CLEARML_API_ACCESS_KEY or clearml.conf)")
    group.add_argument("--secret-key", metavar="KEY", default=default,
                       help="secret key (default: $CLEARML_API_SECRET_KEY or clearml.conf)")
    group.add_argument("--config-file", metavar="PATH", type=Path, default=default,
                       help="clearml.conf to read (default: $CLEARML_CONFIG_FILE or "
                       "~/clearml.conf)")


def add_command(sub: Any, name: str, help_text: str, *, json_flag: bool = True,
                description: str | None = None) -> argparse.ArgumentParser:
    """A sub-command parser with the connection flags and, unless told otherwise, ``--json``."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text,
                                                     description=description or help_text)
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_connection_flags(parser, sub_command=True)
    return parser


def client_config(args: argparse.Namespace) -> Config:
    config = load_config(getattr(args, "config_file", None))
    overrides: dict[str, str] = {}
    for field, flag in (("api_server", "api_host"), ("access_key", "access_key"),
                        ("secret_key", "secret_key")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[field] = value
    if overrides:
        config = dataclasses.replace(config, api=dataclasses.replace(config.api, **overrides))
    return config


@contextlib.contextmanager
def connect(args: argparse.Namespace) -> Iterator[Session]:
    """A logged-in session; API errors and a lost connection become one-line UserErrors."""
    config = client_config(args)
    session = open_session(config)
    try:
        yield session
    except ConnectionFailed as exc:
        raise UserError(f"lost the connection to the API server at {config.api.api_server}: "
                        f"{exc}") from exc
    except ApiError as exc:
        raise UserError(exc.msg) from exc
    finally:
        session.close()


# --- printing -----------------------------------------------------------------------------------


def emit(renderable: Any) -> None:
    """Print a rich table: styled on a terminal; piped, never wrapped or cut (ids must stay
    whole) and without trailing blanks."""
    from rich.console import Console  # rich is imported only to print: the daemon never does

    out = Console(highlight=False)
    if out.is_terminal:
        out.print(renderable)
        return
    buffer = io.StringIO()
    Console(file=buffer, highlight=False, width=100_000, color_system=None).print(renderable)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], empty: str) -> None:
    if not rows:
        print(empty)
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(Text("" if value is None else str(value)) for value in row))
    emit(table)


def print_fields(fields: Sequence[tuple[str, Any]]) -> None:
    """``label  value`` lines, labels aligned; multi-line values stay indented."""
    from rich.table import Table
    from rich.text import Text

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in fields:
        table.add_row(Text(label), Text("-" if value in (None, "") else str(value)))
    emit(table)


def short_time(value: Any) -> str:
    """``2026-01-02T03:04:05.678+00:00`` -> ``2026-01-02 03:04:05``."""
    if not value:
        return "-"
    text = str(value)
    return text[:19].replace("T", " ") if len(text) >= 19 and text[10] == "T" else text
