"""Every server process learns of revoked credentials within REFRESH_SECONDS (the process that
revoked a key at once): the tokens of a revoked key are refused from then on."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import sqlalchemy as sa
from anyio import to_thread

from bosun.server import auth, background
from bosun.server.store.engine import Store

log = logging.getLogger("bosun.server")
REFRESH_SECONDS = 2.0


def load(store: Store, signer: auth.TokenSigner) -> None:
    with store.read() as conn:
        signer.revoked = auth.revoked_keys(conn)


async def _refresh(store: Store, signer: auth.TokenSigner) -> None:
    while True:
        await asyncio.sleep(REFRESH_SECONDS)
        try:
            await to_thread.run_sync(load, store, signer)
        except sa.exc.SQLAlchemyError as exc:  # the database is briefly away: next time
            log.warning("revoked-credentials refresh: %s", str(exc).splitlines()[0])


def refreshing(store: Store,
               signer: auth.TokenSigner) -> contextlib.AbstractAsyncContextManager[None]:
    return background.running(_refresh(store, signer), "revoked-credentials")
