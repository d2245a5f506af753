"""auth.*: log in with a key pair, get a token; make new key pairs."""

from __future__ import annotations

from typing import Any

from bosun.api import errors
from bosun.server import auth
from bosun.server.call import Call
from bosun.server.fields import optional


def login(call: Call) -> dict[str, Any]:
    """Basic `key:secret` -> token. Without auth any key pair is fine: the clients always log in."""
    header = call.headers.get("authorization", "")
    identity = auth.ANONYMOUS
    if header.lower().startswith("bearer "):
        identity = call.state.signer.verify(header[7:].strip())
    elif header:
        key, secret = auth.parse_basic(header)
        if call.state.auth_required:
            with call.store.read() as conn:
                identity = auth.check_credentials(conn, key, secret)
    elif call.state.auth_required:
        raise errors.NoCredentials("unauthorized (missing credentials): log in with HTTP Basic "
                                   "access_key:secret_key")
    expiration = optional(call.body, "expiration_sec", int, 0) or None
    return {"token": call.state.signer.issue(identity, expiration)}


def create_credentials(call: Call) -> dict[str, Any]:
    with call.store.write() as conn:
        key, secret = auth.create_credentials(conn, call.identity.user)
    return {"credentials": {"access_key": key, "secret_key": secret}}


ACTIONS = {"login": login, "create_credentials": create_credentials}
