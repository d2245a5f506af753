"""The endpoint table: `service.action` -> handler, wired explicitly from the service modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bosun.server.call import Call
from bosun.server.services import (
    auth,
    events,
    models,
    projects,
    queues,
    server_info,
    task_cleanup,
    task_lifecycle,
    task_query,
    tasks,
    users,
    workers,
)

Handler = Callable[[Call], dict[str, Any]] | Callable[[Call], Awaitable[dict[str, Any]]]


def endpoint_table() -> dict[str, Handler]:
    services: dict[str, dict[str, Any]] = {
        "auth": auth.ACTIONS,
        "projects": projects.ACTIONS,
        "tasks": {**tasks.ACTIONS, **task_lifecycle.ACTIONS,
                  **task_query.ACTIONS, **task_cleanup.ACTIONS},
        "queues": queues.ACTIONS,
        "workers": workers.ACTIONS,
        "events": events.ACTIONS,
        "models": models.ACTIONS,
        "users": users.ACTIONS,
        "server": server_info.SERVER_ACTIONS,
        "debug": server_info.DEBUG_ACTIONS,
    }
    return {
        f"{service}.{action}": handler
        for service, actions in services.items()
        for action, handler in actions.items()
    }
