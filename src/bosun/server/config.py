"""How a server is started: address, database and whether credentials are checked."""

from __future__ import annotations

from dataclasses import dataclass

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
LOST_TASK_POLICIES = ("requeue", "fail")


@dataclass(frozen=True)
class RecoveryPolicy:
    """What happens to the tasks of a worker that stops reporting (see recovery.py)."""

    worker_timeout: float = 60.0  # seconds without a report before a worker is lost
    policy: str = "requeue"  # or "fail"
    retries: int = 1  # requeues per task before it is failed


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8008
    db: str | None = None
    auth: bool | None = None  # None: on unless bound to loopback
    log_level: str = "info"
    worker_timeout: float = 60.0
    lost_task_policy: str = "requeue"
    lost_task_retries: int = 1

    @property
    def auth_required(self) -> bool:
        if self.auth is not None:
            return self.auth
        return self.host not in LOOPBACK_HOSTS

    @property
    def recovery(self) -> RecoveryPolicy:
        return RecoveryPolicy(self.worker_timeout, self.lost_task_policy, self.lost_task_retries)
