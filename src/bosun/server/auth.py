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
    return Identity(user=row.user_id)


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
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str) -> Identity:
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"])
            ident = claims["identity"]
            identity = Identity(user=ident["user"], company=ident.get("company", COMPANY))
            if len(self._verified) >= self.CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = (identity, float(claims["exp"]))
            return identity
        except jwt.ExpiredSignatureError as exc:
            raise errors.InvalidToken("invalid token: expired") from exc
        except (jwt.InvalidTokenError, KeyError, TypeError) as exc:
            raise errors.InvalidToken() from exc


def load_signer(conn: Connection) -> TokenSigner:
    value = conn.execute(
        sa.select(schema.settings.c.value).where(schema.settings.c.key == "token_secret")
    ).scalar_one()
    return TokenSigner(value)
