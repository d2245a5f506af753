"""auth.*: log in with a key pair, get a token; make, list and revoke key pairs."""

from __future__ import annotations

from typing import Any

from bosun.api import errors
from bosun.server import auth, revocations
from bosun.server.call import Call
from bosun.server.fields import optional, required
from bosun.server.identity import check_basic


def login(call: Call) -> dict[str, Any]:
    """Basic `key:secret` -> token. Without auth any key pair is fine: the clients always log in."""
    header = call.headers.get("authorization", "")
    identity = auth.ANONYMOUS
    if header.lower().startswith("bearer "):
        identity = call.state.signer.verify(header[7:].strip())
    elif header:
        if call.state.auth_required:
            identity = check_basic(call.state, header, call.client)
        else:
            auth.parse_basic(header)
    elif call.state.auth_required:
        raise errors.NoCredentials("unauthorized (missing credentials): log in with HTTP Basic "
                                   "access_key:secret_key")
    return {"token": call.state.signer.issue(identity, _lifetime(call))}


def _lifetime(call: Call) -> int:
    """`expiration_sec`: a whole number of seconds > 0, capped at the server's maximum."""
    longest = call.state.max_token_seconds
    seconds = optional(call.body, "expiration_sec", float, float(longest))
    if not 0 < seconds < float("inf"):
        raise errors.ValidationError("field 'expiration_sec' must be a number of seconds > 0",
                                     field="expiration_sec")
    return int(min(seconds, longest))


def create_credentials(call: Call) -> dict[str, Any]:
    with call.store.write() as conn:
        key, secret = auth.create_credentials(conn, call.identity.user)
    return {"credentials": {"access_key": key, "secret_key": secret}}


def get_credentials(call: Call) -> dict[str, Any]:
    """The caller's key pairs, without their secrets."""
    with call.store.read() as conn:
        return {"credentials": auth.list_credentials(conn, call.identity.user)}


def revoke_credentials(call: Call) -> dict[str, Any]:
    """Take back one of the caller's key pairs: it can not log in any more and its tokens are
    refused (by every server process within a few seconds)."""
    key = required(call.body, "access_key", str)
    with call.store.write() as conn:
        auth.revoke_credentials(conn, key, call.identity.user)
    revocations.load(call.store, call.state.signer)
    return {"revoked": 1}


ACTIONS = {"login": login, "create_credentials": create_credentials,
           "get_credentials": get_credentials, "revoke_credentials": revoke_credentials}
