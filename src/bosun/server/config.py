"""How a server is started: address, database and whether credentials are checked."""

from __future__ import annotations

from dataclasses import dataclass

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8008
    db: str | None = None
    auth: bool | None = None  # None: on unless bound to loopback
    log_level: str = "info"

    @property
    def auth_required(self) -> bool:
        if self.auth is not None:
            return self.auth
        return self.host not in LOOPBACK_HOSTS
