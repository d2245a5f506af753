"""Persistence: one schema, two engines (SQLite embedded, PostgreSQL for scale-out)."""

from bosun.server.store.engine import Store, open_store

__all__ = ["Store", "open_store"]
