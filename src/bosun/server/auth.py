"""Credentials (key pairs stored hashed) and the JWT tokens the clients carry.

Both ClearML clients decode the token without verifying it and read the server's API version
from it, so it must be a real three-part JWT with ClearML's claims.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bosun.api import errors
from bosun.api.envelope import API_VERSION, SERVER_VERSION
from bosun.server.store import schema
from bosun.server.timestamps import now_iso

COMPANY = "bosun"
DEFAULT_USER = "bosun"
DEFAULT_TOKEN_SECONDS = 30 * 24 * 3600
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class Identity:
    user: str
    company: str = COMPANY
    key: str | None = None  # the access key it logged in with (None without auth)


ANONYMOUS = Identity(user=DEFAULT_USER)


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        _, salt_hex, digest_hex = stored.split("$")
        digest = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt_hex), **_SCRYPT)
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), digest_hex)


def create_credentials(conn: Connection, user: str = DEFAULT_USER) -> tuple[str, str]:
    """A new key pair; only the secret's hash is kept."""
    access_key = secrets.token_hex(10).upper()
    secret_key = secrets.token_urlsafe(36)
    conn.execute(
        schema.credentials.insert().values(
            access_key=access_key,
            secret_hash=hash_secret(secret_key),
            user_id=user,
            created=now_iso(),
        )
    )
    return access_key, secret_key


def check_credentials(conn: Connection, access_key: str, secret_key: str) -> Identity:
    row = conn.execute(
        sa.select(schema.credentials).where(schema.credentials.c.access_key == access_key)
    ).first()
    if row is None or not verify_secret(secret_key, row.secret_hash):
        raise errors.InvalidCredentials()
    return Identity(user=row.user_id, key=access_key)


def list_credentials(conn: Connection, user: str | None = None) -> list[dict[str, str]]:
    """The key pairs (never their secrets), of `user` or of everyone."""
    query = sa.select(schema.credentials).order_by(schema.credentials.c.created)
    if user is not None:
        query = query.where(schema.credentials.c.user_id == user)
    return [{"access_key": row.access_key, "user": row.user_id, "created": row.created}
            for row in conn.execute(query)]


def revoke_credentials(conn: Connection, access_key: str, user: str | None = None) -> None:
    """Take a key pair back (of `user` only, when given): it can not log in any more, and the
    tokens issued for it are refused."""
    query = schema.credentials.delete().where(schema.credentials.c.access_key == access_key)
    if user is not None:
        query = query.where(schema.credentials.c.user_id == user)
    if conn.execute(query).rowcount == 0:
        raise errors.ValidationError(f"no credentials with access_key {access_key!r}"
                                     + (" for this user" if user is not None else ""),
                                     field="access_key")
    conn.execute(schema.revoked_credentials.insert().values(access_key=access_key,
                                                            revoked=now_iso()))


def revoked_keys(conn: Connection) -> frozenset[str]:
    return frozenset(conn.scalars(sa.select(schema.revoked_credentials.c.access_key)))


def parse_basic(header: str) -> tuple[str, str]:
    """`Basic base64(key:secret)` -> (key, secret)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise errors.BadCredentials("unauthorized (expected Basic credentials for auth.login)")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise errors.BadCredentials() from exc
    key, sep, secret = decoded.partition(":")
    if not sep:
        raise errors.BadCredentials()
    return key, secret


class TokenSigner:
    # Verified tokens are remembered: every call carries one, and decoding costs more than the
    # rest of a small call. Bounded; cleared when full.
    CACHE_SIZE = 10_000

    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._verified: dict[str, tuple[Identity, float]] = {}
        # Keys taken back; refreshed from the database by every server process (revocations.py).
        self.revoked: frozenset[str] = frozenset()

    def issue(self, identity: Identity, expiration_sec: int | None = None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "api_version": API_VERSION,
            "server_version": SERVER_VERSION,
            "feature_set": "basic",
            "env": "bosun",
            "identity": {
                "user": identity.user,
                "company": identity.company,
                "user_name": identity.user,
                "company_name": identity.company,
                "role": "user",
            },
            "iat": now,
            "exp": now + (expiration_sec or DEFAULT_TOKEN_SECONDS),
        }
        if identity.key is not None:
            claims["key"] = identity.key  # bosun's: lets a revocation reach the token
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str) -> Identity:
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return self._not_revoked(cached[0])
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"])
            ident = claims["identity"]
            key = claims.get("key")
            identity = Identity(user=ident["user"], company=ident.get("company", COMPANY),
                                key=key if isinstance(key, str) else None)
            if len(self._verified) >= self.CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = (identity, float(claims["exp"]))
        except jwt.ExpiredSignatureError as exc:
            raise errors.InvalidToken("invalid token: expired") from exc
        except (jwt.InvalidTokenError, KeyError, TypeError) as exc:
            raise errors.InvalidToken() from exc
        return self._not_revoked(identity)

    def _not_revoked(self, identity: Identity) -> Identity:
        if identity.key is not None and identity.key in self.revoked:
            raise errors.InvalidToken("invalid token: its credentials were revoked")
        return identity


def load_signer(conn: Connection) -> TokenSigner:
    value = conn.execute(
        sa.select(schema.settings.c.value).where(schema.settings.c.key == "token_secret")
    ).scalar_one()
    return TokenSigner(value)
