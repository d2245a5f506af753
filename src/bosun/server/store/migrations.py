"""A small versioned migration runner.

A fresh database gets the current schema and is stamped with the latest version; an older one
runs each migration above its version, in order, in one transaction. Add a migration whenever
`schema.py` changes, and append it to MIGRATIONS.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bosun.server.store import schema
from bosun.server.store.engine import Store

log = logging.getLogger(__name__)


class SchemaTooNew(RuntimeError):
    pass


def _v1_initial(conn: Connection) -> None:
    schema.metadata.create_all(conn)


def _v2_models(conn: Connection) -> None:
    schema.models.create(conn, checkfirst=True)


def _v3_event_streams(conn: Connection) -> None:
    schema.event_streams.create(conn, checkfirst=True)


def _v4_revoked_credentials(conn: Connection) -> None:
    schema.revoked_credentials.create(conn, checkfirst=True)


# (version, description, function). Version 1 is the first release's schema.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "initial schema", _v1_initial),
    (2, "models", _v2_models),
    (3, "event streams (console lines stored once)", _v3_event_streams),
    (4, "revoked credentials", _v4_revoked_credentials),
]
LATEST = MIGRATIONS[-1][0]


def current_version(conn: Connection) -> int | None:
    if not sa.inspect(conn).has_table("schema_version"):
        return None
    row = conn.execute(sa.select(schema.schema_version.c.version)).first()
    return row.version if row else None


def migrate(store: Store) -> int:
    """Bring the database to the latest schema; returns the version it was at (0 if new)."""
    with store.write() as conn:
        if not store.is_sqlite:
            # Several server processes may start at once against one PostgreSQL.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(424242)"))
        version = current_version(conn)
        if version is None:
            schema.metadata.create_all(conn)
            conn.execute(schema.schema_version.insert().values(version=LATEST))
            _seed(conn)
            log.info("created a new database at schema version %d", LATEST)
            return 0
        if version > LATEST:
            raise SchemaTooNew(
                f"the database is at schema version {version}, newer than this bosun "
                f"({LATEST}); upgrade bosun"
            )
        for number, description, step in MIGRATIONS:
            if number > version:
                log.info("migrating database to version %d: %s", number, description)
                step(conn)
        if version < LATEST:
            conn.execute(schema.schema_version.update().values(version=LATEST))
        _seed(conn)
        return version


def _seed(conn: Connection) -> None:
    """Values every database needs: the token signing secret."""
    exists = conn.execute(
        sa.select(schema.settings.c.key).where(schema.settings.c.key == "token_secret")
    ).first()
    if not exists:
        conn.execute(
            schema.settings.insert().values(key="token_secret", value=secrets.token_hex(32))
        )
