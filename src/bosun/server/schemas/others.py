"""queues.*, models.*, projects.*, workers.*, auth.*, users.*, server.* and debug.*."""

from __future__ import annotations

from typing import Any

from bosun.server.schemas.types import (
    Body,
    Flag,
    Id,
    Ids,
    Integer,
    Line,
    Listing,
    Name,
    Number,
    Object,
    Paging,
    ShortName,
    Strings,
    Tags,
    TaskRef,
    Text,
)

# --- queues ----------------------------------------------------------------------------------


class QueueRef(Body):
    queue: Id | None = None


class QueueFields(QueueRef):
    name: ShortName | None = None
    tags: Tags | None = None
    system_tags: Tags | None = None
    metadata: Object | None = None
    force: Flag | None = None


class QueueTask(QueueRef):
    task: Id | None = None


class NextTask(Body):
    queue: Ids | None = None
    queues: Ids | None = None
    wait_sec: Number | None = None
    worker: Id | None = None
    get_task_info: Flag | None = None


# --- models ----------------------------------------------------------------------------------


class ModelFields(Body):
    model: Id | None = None
    name: Name | None = None
    uri: Text | None = None
    comment: Text | None = None
    tags: Tags | None = None
    system_tags: Tags | None = None
    framework: Line | None = None
    design: Any = None
    labels: dict[str, Integer] | None = None
    ready: Flag | None = None
    project: Id | None = None
    parent: Id | None = None
    task: Id | None = None
    metadata: list[Object] | Object | None = None
    iteration: Integer | None = None
    override_model_id: Id | None = None
    replace_metadata: Flag | None = None
    keys: Strings | None = None
    force: Flag | None = None


class ModelGetAll(Listing):
    project: Ids | None = None
    task: Ids | None = None
    framework: Strings | None = None
    uri: Strings | None = None
    user: Strings | None = None
    ready: Flag | None = None


class ManyIds(Body):
    ids: Ids | None = None


# --- projects --------------------------------------------------------------------------------


class ProjectFields(Body):
    project: Id | None = None
    name: ShortName | None = None
    description: Text | None = None
    tags: Tags | None = None
    system_tags: Tags | None = None
    default_output_destination: Line | None = None


class ProjectGetAll(Paging):
    id: Ids | None = None
    name: Line | None = None
    parent: Ids | None = None
    shallow_search: Flag | None = None
    search_hidden: Flag | None = None


# --- workers ---------------------------------------------------------------------------------


class WorkerFields(Body):
    worker: Id | None = None
    queues: Ids | None = None
    queue: Id | None = None
    tags: Tags | None = None
    timeout: Number | None = None
    restarted: Flag | None = None
    task: Id | None = None
    machine_stats: Object | None = None


class WorkerGetAll(Body):
    last_seen: Integer | None = None
    worker_pattern: Line | None = None


class RuntimeProperties(Body):
    worker: Id | None = None
    runtime_properties: list[Any] | None = None  # each item is checked by the handler


# --- auth, users, server -----------------------------------------------------------------------


class Login(Body):
    expiration_sec: Number | None = None


class Revoke(Body):
    access_key: Line | None = None


SCHEMAS: dict[str, type[Body]] = {
    "queues.create": QueueFields,
    "queues.get_by_id": QueueRef,
    "queues.get_all": Listing,
    "queues.get_default": Body,
    "queues.get_num_entries": QueueRef,
    "queues.update": QueueFields,
    "queues.delete": QueueFields,
    "queues.add_task": QueueTask,
    "queues.remove_task": QueueTask,
    "queues.move_task_to_front": QueueTask,
    "queues.move_task_to_back": QueueTask,
    "queues.get_next_task": NextTask,
    "models.create": ModelFields,
    "models.get_by_id": ModelFields,
    "models.get_by_task_id": TaskRef,
    "models.get_all": ModelGetAll,
    "models.edit": ModelFields,
    "models.update": ModelFields,
    "models.update_for_task": ModelFields,
    "models.set_ready": ModelFields,
    "models.delete": ModelFields,
    "models.add_or_update_metadata": ModelFields,
    "models.delete_metadata": ModelFields,
    "models.archive_many": ManyIds,
    "models.unarchive_many": ManyIds,
    "projects.create": ProjectFields,
    "projects.get_by_id": ProjectFields,
    "projects.get_all": ProjectGetAll,
    "projects.update": ProjectFields,
    "workers.register": WorkerFields,
    "workers.unregister": WorkerFields,
    "workers.status_report": WorkerFields,
    "workers.get_all": WorkerGetAll,
    "workers.get_runtime_properties": WorkerFields,
    "workers.set_runtime_properties": RuntimeProperties,
    "auth.login": Login,
    "auth.create_credentials": Body,
    "auth.get_credentials": Body,
    "auth.revoke_credentials": Revoke,
    "users.get_current_user": Body,
    "users.get_vaults": Body,
    "server.info": Body,
    "debug.ping": Body,
}
