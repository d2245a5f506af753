"""`bosun server`: run the API server; `bosun server credentials create|list|revoke`: manage the
key pairs clients log in with."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import socket
from typing import Any

from bosun.cli.errors import UserError

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "server", help="run the API server (ClearML-compatible REST API)",
        description="Run the bosun API server: ClearML's REST API over an embedded SQLite file "
        "(default) or PostgreSQL.",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8008, help="port to bind (default 8008)")
    _add_db(parser)
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument("--auth", dest="auth", action="store_true", default=None,
                      help="require credentials (default when binding a non-loopback address)")
    auth.add_argument("--no-auth", dest="auth", action="store_false",
                      help="accept any client (default on a loopback address; elsewhere only "
                      "with --insecure-public)")
    parser.add_argument("--insecure-public", action="store_true",
                        help="allow --no-auth on an address other machines can reach: anyone "
                        "who reaches it can read every task and run code on your agents")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-body-mb", type=_megabytes, metavar="MB",
                        default=os.environ.get("BOSUN_MAX_BODY_MB", "64"),
                        help="largest request body accepted, in MiB (default 64, or "
                        "$BOSUN_MAX_BODY_MB); larger ones get 413")
    limits.add_argument("--max-token-days", type=_seconds, metavar="DAYS", default=30,
                        help="longest token lifetime a login may ask for (default 30 days)")
    limits.add_argument("--max-file-mb", type=_megabytes, metavar="MB",
                        default=os.environ.get("BOSUN_MAX_FILE_MB", str(64 << 10)),
                        help="largest file the files server takes, in MiB (default 65536, "
                        "or $BOSUN_MAX_FILE_MB); larger ones get 413")
    parser.add_argument("--files-dir", default=os.environ.get("BOSUN_FILES_DIR"),
                        help="folder of the files server (artifacts, models, debug images, "
                        "datasets; served at /files): default $BOSUN_FILES_DIR, else 'files' "
                        "next to the SQLite file. Several server processes or machines must "
                        "share one folder (the same path on a shared disk)")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes sharing the port (use with PostgreSQL)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                        help="log level; 'debug' logs every request with its timing")
    recovery = parser.add_argument_group(
        "lost workers", "a worker that stops reporting is declared lost; each task it ran is "
        "requeued to the front of its queue or failed, with the reason on the task. Per queue "
        "or per task: the tags lost_task_policy:requeue|fail and lost_task_retries:N (a "
        "queue's metadata keys of the same names work too)")
    recovery.add_argument("--worker-timeout", type=_seconds, metavar="SECONDS",
                          default=os.environ.get("BOSUN_WORKER_TIMEOUT", "60"),
                          help="seconds without a report before a worker is lost (default 60, "
                          "or $BOSUN_WORKER_TIMEOUT; a worker may register its own timeout)")
    recovery.add_argument("--lost-task-policy", choices=("requeue", "fail"), default="requeue",
                          help="what happens to a lost worker's task (default requeue)")
    recovery.add_argument("--lost-task-retries", type=_count, metavar="N", default=1,
                          help="requeues per task before it is failed (default 1)")
    parser.set_defaults(run=run_server)

    sub = parser.add_subparsers(dest="server_command", metavar="SUBCOMMAND")
    creds = sub.add_parser("credentials", help="manage API key pairs")
    creds_sub = creds.add_subparsers(dest="credentials_command", metavar="ACTION", required=True)
    create = creds_sub.add_parser("create", help="create a key pair and print it once")
    _add_db(create)
    create.add_argument("--user", default="bosun", help="user the key pair acts as")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(run=run_credentials_create)
    listing = creds_sub.add_parser("list", help="list the key pairs (never their secrets)")
    _add_db(listing)
    listing.add_argument("--user", default=None, help="only this user's key pairs")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=run_credentials_list)
    revoke = creds_sub.add_parser(
        "revoke", help="take a key pair back: it can not log in, and its tokens stop working "
        "within a few seconds on every server process")
    _add_db(revoke)
    revoke.add_argument("access_key", help="the access key to revoke")
    revoke.set_defaults(run=run_credentials_revoke)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1 << 20:
        raise argparse.ArgumentTypeError(f"expected a size in MiB > 0, got {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", default=os.environ.get("BOSUN_DB"),
        help="database: a SQLite file path or sqlite:///PATH, or postgresql://USER@HOST/DB "
        "(default: $BOSUN_DB, else bosun.db in the user data dir)")


def _safe_url(db: str | None) -> str:
    # Imported here: `bosun` starts fast for the commands that need no database.
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    from bosun.server.store.engine import normalize_db_url

    try:
        return make_url(normalize_db_url(db)).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError as exc:
        raise UserError(f"invalid --db value {db!r}: {exc}") from exc


def _port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def run_server(args: argparse.Namespace) -> int:
    import sqlalchemy.exc
    import uvicorn

    from bosun.server.app import CONFIG_ENV, create_app, open_state
    from bosun.server.config import ServerConfig
    from bosun.server.store.migrations import SchemaTooNew

    config = ServerConfig(host=args.host, port=args.port, db=args.db, auth=args.auth,
                          log_level=args.log_level, worker_timeout=args.worker_timeout,
                          lost_task_policy=args.lost_task_policy,
                          lost_task_retries=args.lost_task_retries,
                          max_body_mb=args.max_body_mb,
                          max_token_seconds=int(args.max_token_days * 24 * 3600),
                          files_dir=args.files_dir, max_file_mb=args.max_file_mb)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _public_without_auth(args.host, config.auth_required, args.insecure_public)
    url = _safe_url(args.db)
    _port_free(args.host, args.port)
    try:
        state = open_state(config)
    except SchemaTooNew as exc:
        raise UserError(str(exc)) from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise UserError(f"cannot open database {url}: {exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0]}") from exc
    logging.getLogger("bosun.server").info(
        "bosun server on http://%s:%d (database %s, files %s at /files, auth %s; a worker "
        "silent for %g s is lost, its tasks: %s, %d retr%s)", args.host, args.port, url,
        state.files.root if state.files else "off",
        "on" if config.auth_required else "off", config.worker_timeout,
        config.lost_task_policy, config.lost_task_retries,
        "y" if config.lost_task_retries == 1 else "ies")
    common = {"host": args.host, "port": args.port, "log_level": args.log_level,
              "access_log": False, "log_config": None, "timeout_keep_alive": 75}
    if args.workers > 1:
        state.store.dispose()
        os.environ[CONFIG_ENV] = json.dumps(dataclasses.asdict(config))
        uvicorn.run("bosun.server.app:app_from_env", factory=True, workers=args.workers,
                    **common)
    else:
        uvicorn.run(create_app(config, state), **common)
    return 0


def _public_without_auth(host: str, auth_required: bool, allowed: bool) -> None:
    """--no-auth where other machines can reach the server: refused unless the user says so."""
    from bosun.server.config import is_loopback

    if auth_required or is_loopback(host):
        return
    if not allowed:
        raise UserError(
            f"--no-auth on {host}, which other machines can reach: anyone who reaches it could "
            "read every task and run code on your agents. Create credentials instead (bosun "
            "server credentials create), bind 127.0.0.1, or add --insecure-public if you mean it")
    logging.getLogger("bosun.server").warning(
        "INSECURE: auth is off on %s (--no-auth --insecure-public): anyone who can reach this "
        "address can read every task and run code on the agents", host)


def _credentials_store(db: str | None) -> Any:
    import sqlalchemy.exc

    from bosun.server.store import open_store
    from bosun.server.store.migrations import migrate

    try:
        store = open_store(db)
        migrate(store)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise UserError(f"cannot open database {_safe_url(db)}: "
                        f"{str(exc).splitlines()[0]}") from exc
    return store


def run_credentials_list(args: argparse.Namespace) -> int:
    from bosun.server.auth import list_credentials

    with _credentials_store(args.db).read() as conn:
        found = list_credentials(conn, args.user)
    if args.json:
        print(json.dumps(found))
    elif not found:
        print("no credentials")
    else:
        width = max(len(c["access_key"]) for c in found)
        for item in found:
            print(f"{item['access_key']:<{width}}  {item['user']}  created {item['created']}")
    return 0


def run_credentials_revoke(args: argparse.Namespace) -> int:
    from bosun.api.errors import ApiError
    from bosun.server.auth import revoke_credentials

    try:
        with _credentials_store(args.db).write() as conn:
            revoke_credentials(conn, args.access_key)
    except ApiError as exc:
        raise UserError(exc.msg) from exc
    print(f"revoked {args.access_key}: it can not log in any more, and its tokens stop working "
          "within a few seconds")
    return 0


def run_credentials_create(args: argparse.Namespace) -> int:
    from bosun.server.auth import create_credentials

    with _credentials_store(args.db).write() as conn:
        key, secret = create_credentials(conn, args.user)
    if args.json:
        print(json.dumps({"access_key": key, "secret_key": secret}))
    else:
        print("New credentials (the secret is shown only now; it is stored hashed):")
        print(f'  access_key: "{key}"')
        print(f'  secret_key: "{secret}"')
        print("clearml.conf:")
        print(f'  api {{ credentials {{ "access_key" = "{key}", "secret_key" = "{secret}" }} }}')
    return 0
