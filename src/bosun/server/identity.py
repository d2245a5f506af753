"""Who is calling, from the request's headers alone (before its body is read): a bearer token,
or HTTP Basic key:secret (checked against the stored hashes, slowed down after failures)."""

from __future__ import annotations

from collections.abc import Mapping

from anyio import to_thread

from bosun.api import errors
from bosun.server import auth
from bosun.server.call import ServerState


def check_basic(state: ServerState, header: str, client: str | None) -> auth.Identity:
    """Basic key:secret -> the key's identity. Blocking (scrypt): run it off the event loop."""
    key, secret = auth.parse_basic(header)
    state.throttle.check(key, client)
    with state.store.read() as conn:
        try:
            return auth.check_credentials(conn, key, secret)
        except errors.InvalidCredentials:
            state.throttle.failed(key, client)
            raise


async def identify(state: ServerState, endpoint: str, headers: Mapping[str, str],
                   client: str | None) -> auth.Identity:
    if endpoint == "auth.login":
        return auth.ANONYMOUS  # login checks its own credentials
    header = headers.get("authorization", "")
    try:
        if header.lower().startswith("bearer "):
            return state.signer.verify(header[7:].strip())
        if header.lower().startswith("basic ") and state.auth_required:
            return await to_thread.run_sync(check_basic, state, header, client)
    except errors.ApiError:
        if state.auth_required:
            raise
        return auth.ANONYMOUS
    if state.auth_required:
        raise errors.NoCredentials(
            "unauthorized (missing credentials): call auth.login, then send the token as "
            "'Authorization: Bearer <token>'")
    return auth.ANONYMOUS
