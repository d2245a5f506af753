"""What a handler gets: the request body, who is calling, and the server's shared parts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bosun.server.auth import Identity, TokenSigner
from bosun.server.config import DEFAULT_MAX_BODY_MB, DEFAULT_MAX_TOKEN_SECONDS, RecoveryPolicy
from bosun.server.login_throttle import LoginThrottle
from bosun.server.queue_wakeups import QueueWakeups
from bosun.server.store import Store

if TYPE_CHECKING:
    from bosun.server.files.file_store import FileStore


@dataclass
class ServerState:
    store: Store
    signer: TokenSigner
    auth_required: bool
    wakeups: QueueWakeups
    recovery: RecoveryPolicy = field(default_factory=RecoveryPolicy)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    max_body_bytes: int = DEFAULT_MAX_BODY_MB << 20
    max_token_seconds: int = DEFAULT_MAX_TOKEN_SECONDS
    files: FileStore | None = None  # the files server's folder


@dataclass
class Call:
    endpoint: str
    body: dict[str, Any]
    identity: Identity
    state: ServerState
    worker: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Whether the caller has hung up (long polls stop waiting for a caller that is gone).
    disconnected: Callable[[], Awaitable[bool]] | None = field(default=None, repr=False)
    client: str | None = None  # the caller's address
    # The body as it arrives, for the endpoints that read it in pieces (events.add_batch).
    chunks: AsyncIterator[bytes] | None = field(default=None, repr=False)

    async def gone(self) -> bool:
        return self.disconnected is not None and await self.disconnected()

    @property
    def store(self) -> Store:
        return self.state.store
