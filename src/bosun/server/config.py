"""How a server is started: address, database and whether credentials are checked."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

LOST_TASK_POLICIES = ("requeue", "fail")
DEFAULT_MAX_BODY_MB = 64  # the clearml SDK keeps its requests under 15 MB
DEFAULT_MAX_TOKEN_SECONDS = 30 * 24 * 3600  # as ClearML's server
DEFAULT_MAX_FILE_MB = 64 << 10  # one uploaded file: 64 GiB


def is_loopback(host: str) -> bool:
    """127.0.0.0/8 in any form the system accepts (127.1 too), ::1 and localhost."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        return socket.inet_aton(host)[0] == 127
    except OSError:
        return False


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
    max_body_mb: float = DEFAULT_MAX_BODY_MB
    max_token_seconds: int = DEFAULT_MAX_TOKEN_SECONDS
    files_dir: str | None = None  # None: next to the SQLite file (files_store.py)
    max_file_mb: float = DEFAULT_MAX_FILE_MB

    @property
    def auth_required(self) -> bool:
        if self.auth is not None:
            return self.auth
        return not is_loopback(self.host)

    @property
    def recovery(self) -> RecoveryPolicy:
        return RecoveryPolicy(self.worker_timeout, self.lost_task_policy, self.lost_task_retries)
