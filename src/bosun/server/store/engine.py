"""Opening the database: SQLite (WAL, one file) or PostgreSQL, behind one small `Store` facade."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import platformdirs
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from bosun.server import user_regex


def default_sqlite_path() -> Path:
    return Path(platformdirs.user_data_dir("bosun")) / "bosun.db"


def normalize_db_url(db: str | None) -> str:
    """Accept `sqlite:///file`, `postgresql://...` or a plain file path; pick the psycopg driver."""
    if not db:
        return f"sqlite:///{default_sqlite_path()}"
    if db.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + db.split("://", 1)[1]
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).expanduser().resolve()}"


class Store:
    """Hands out connections in a transaction: `read()` for queries, `write()` for changes.

    SQLite allows one writer at a time; a write transaction takes the lock up front
    (BEGIN IMMEDIATE) so that it never fails half-way on a lock upgrade, and writers of one
    process queue on a mutex instead of spinning in SQLite's busy handler.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._write_lock = threading.Lock() if self.is_sqlite else None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        if self._write_lock is None:
            with self.engine.connect() as conn, conn.begin():
                yield conn
            return
        with self._write_lock, self.engine.connect() as conn:
            conn.execution_options(bosun_write=True)
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()

    def bulk_insert(self, conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """Insert many rows of the same shape: executemany on SQLite, COPY on PostgreSQL (one
        round trip instead of one INSERT per row)."""
        if not rows:
            return
        names = list(rows[0])
        json_columns = {n for n in names if isinstance(table.c[n].type, sa.JSON)}
        if self.is_sqlite:
            # The driver's executemany with positional rows: SQLAlchemy's per-row parameter
            # handling cost a third of log ingestion. Same transaction (same connection).
            sql = (f"INSERT INTO {table.name} ({', '.join(names)}) "
                   f"VALUES ({', '.join('?' * len(names))})")
            conn.connection.driver_connection.executemany(sql, [  # type: ignore[union-attr]
                tuple(_json_dumps(row[n]) if n in json_columns and row[n] is not None
                      else row[n] for n in names)
                for row in rows
            ])
            return
        copy_sql = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(copy_sql) as copy:
            for row in rows:
                copy.write_row([
                    _json_dumps(row[n]) if n in json_columns and row[n] is not None else row[n]
                    for n in names
                ])


def _prepare_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        # Let SQLAlchemy's "begin" event decide how a transaction starts.
        dbapi_conn.isolation_level = None
        # REGEXP in linear time (RE2): a caller's pattern can not stall the server.
        dbapi_conn.create_function("regexp", 2, user_regex.search, deterministic=True)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("bosun_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def open_store(db: str | None) -> Store:
    url = normalize_db_url(db)
    json_args = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, pool_size=16, max_overflow=48, **json_args)
        _prepare_sqlite(engine)
    else:
        # No pre-ping: it costs a round trip per call; a connection broken by a database
        # restart fails one call and the pool is then invalidated and refilled.
        engine = sa.create_engine(url, pool_size=16, max_overflow=48, **json_args)
    return Store(engine)
