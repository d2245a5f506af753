"""The current schema. Objects live as JSON documents beside the columns that filters need.

A change here must come with a migration in `migrations.py` for databases made by older versions.
"""

import sqlalchemy as sa

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

settings = sa.Table(
    "settings",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

credentials = sa.Table(
    "credentials",
    metadata,
    sa.Column("access_key", sa.String(64), primary_key=True),
    sa.Column("secret_hash", sa.String(256), nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("created", sa.String(40), nullable=False),
)

# Key pairs taken back (`auth.revoke_credentials`): the tokens issued for them stop working.
revoked_credentials = sa.Table(
    "revoked_credentials",
    metadata,
    sa.Column("access_key", sa.String(64), primary_key=True),
    sa.Column("revoked", sa.String(40), nullable=False),
)

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(512), nullable=False, unique=True),
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("doc", sa.JSON, nullable=False),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(1024), nullable=False),
    sa.Column("project", sa.String(36)),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("type", sa.String(64)),
    sa.Column("user_id", sa.String(64)),
    # Tags joined as "\x1fa\x1fb\x1f" so that a portable LIKE finds one exactly.
    sa.Column("tags", sa.Text, nullable=False, default=""),
    sa.Column("system_tags", sa.Text, nullable=False, default=""),
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("started", sa.String(40)),
    sa.Column("completed", sa.String(40)),
    sa.Column("last_update", sa.String(40), nullable=False),
    sa.Column("doc", sa.JSON, nullable=False),
    sa.Index("ix_tasks_project_status", "project", "status"),
    sa.Index("ix_tasks_status", "status"),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(1024), nullable=False),
    sa.Column("project", sa.String(36)),
    sa.Column("task", sa.String(36)),
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("doc", sa.JSON, nullable=False),
    sa.Index("ix_models_project", "project"),
    sa.Index("ix_models_task", "task"),
)

queues = sa.Table(
    "queues",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(512), nullable=False, unique=True),
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("doc", sa.JSON, nullable=False),
)

queue_entries = sa.Table(
    "queue_entries",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("queue", sa.String(36), nullable=False),
    sa.Column("task", sa.String(36), nullable=False),
    sa.Column("position", sa.Float, nullable=False),
    sa.Column("added", sa.String(40), nullable=False),
    sa.Index("ix_queue_entries_order", "queue", "position", "seq"),
    sa.Index("ix_queue_entries_task", "task"),
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(512), primary_key=True),
    sa.Column("last_seen", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
    sa.Column("doc", sa.JSON, nullable=False),
)

runtime_properties = sa.Table(
    "runtime_properties",
    metadata,
    sa.Column("worker", sa.String(512), primary_key=True),
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("expires", sa.Float),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("task", sa.String(36), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("iter", sa.BigInteger),
    sa.Column("metric", sa.String(512)),
    sa.Column("variant", sa.String(512)),
    sa.Column("value", sa.Float),
    sa.Column("level", sa.String(16)),
    sa.Column("worker", sa.String(512)),
    sa.Column("msg", sa.Text),
    # The whole event, for types that carry more than the columns above (plots, images).
    sa.Column("doc", sa.JSON(none_as_null=True)),
    sa.Index("ix_events_task_type_seq", "task", "type", "seq"),
)

# The highest sequence number stored per (task, stream): lines sent again (a retry after an
# answer was lost, an agent's journal sent by the next agent) are stored once. bosun agents
# number their console lines; events without a stream are stored as they come.
event_streams = sa.Table(
    "event_streams",
    metadata,
    sa.Column("task", sa.String(36), primary_key=True),
    sa.Column("stream", sa.String(64), primary_key=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
)
