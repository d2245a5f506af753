"""The schema runner: new databases are created at the latest version, old ones upgraded in
order, and a database from a newer bosun is refused."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bosun.server.store import migrations, open_store, schema
from bosun.server.store.migrations import LATEST, SchemaTooNew, migrate

from ...conftest import DbFactory


def _version(db: str) -> int:
    store = open_store(db)
    try:
        with store.read() as conn:
            return conn.execute(sa.select(schema.schema_version.c.version)).scalar_one()
    finally:
        store.dispose()


def test_new_database_is_created_at_latest(new_db: DbFactory) -> None:
    db = new_db()
    store = open_store(db)
    assert migrate(store) == 0
    assert migrate(store) == LATEST  # idempotent: a second run finds it current
    store.dispose()
    assert _version(db) == LATEST


def test_old_database_runs_pending_migrations_in_order(
    new_db: DbFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = new_db()
    store = open_store(db)
    migrate(store)
    ran: list[int] = []

    def add_column(conn: Connection) -> None:
        ran.append(LATEST + 1)
        conn.execute(sa.text("ALTER TABLE projects ADD COLUMN archived_note TEXT"))

    monkeypatch.setattr(migrations, "MIGRATIONS",
                        [*migrations.MIGRATIONS, (LATEST + 1, "add a column", add_column)])
    monkeypatch.setattr(migrations, "LATEST", LATEST + 1)
    assert migrate(store) == LATEST
    assert ran == [LATEST + 1]
    with store.read() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("projects")}
    assert "archived_note" in columns
    assert migrate(store) == LATEST + 1  # nothing left to run
    assert ran == [LATEST + 1]
    store.dispose()


def test_newer_database_is_refused(new_db: DbFactory) -> None:
    db = new_db()
    store = open_store(db)
    migrate(store)
    with store.write() as conn:
        conn.execute(schema.schema_version.update().values(version=LATEST + 5))
    with pytest.raises(SchemaTooNew, match="newer than this bosun"):
        migrate(store)
    store.dispose()
