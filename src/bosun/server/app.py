"""The HTTP application: parse a ClearML-style call, authenticate it, run its handler, wrap the
answer in the envelope. Errors never leak a traceback to the client."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson
from anyio import to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bosun.api import errors
from bosun.api.envelope import envelope
from bosun.server import auth, revocations, schemas, storage_faults
from bosun.server.call import Call, ServerState
from bosun.server.config import ServerConfig
from bosun.server.files.file_store import FileStore, default_files_dir
from bosun.server.files.routes import file_routes
from bosun.server.identity import identify
from bosun.server.queue_wakeups import QueueWakeups
from bosun.server.queue_watch import watching
from bosun.server.routing import Handler, endpoint_table
from bosun.server.services import queues
from bosun.server.store import open_store
from bosun.server.store.migrations import migrate
from bosun.server.worker_reaper import reaping

log = logging.getLogger("bosun.server")

# Endpoints that read their body in pieces as it arrives (Call.chunks) instead of whole.
STREAMED_BODY_ENDPOINTS = frozenset({"events.add_batch"})
WORKER_HEADERS = ("x-clearml-worker", "x-trains-worker")
MAX_THREADS = 64
CONFIG_ENV = "BOSUN_SERVER_CONFIG"


def open_state(config: ServerConfig) -> ServerState:
    store = open_store(config.db)
    migrate(store)
    with store.write() as conn:
        queues.ensure_default(conn)
        signer = auth.load_signer(conn)
    state = ServerState(store=store, signer=signer, auth_required=config.auth_required,
                        wakeups=QueueWakeups(), recovery=config.recovery,
                        max_body_bytes=int(config.max_body_mb * (1 << 20)),
                        max_token_seconds=config.max_token_seconds,
                        files=open_files(config))
    revocations.load(store, signer)
    return state


def open_files(config: ServerConfig) -> FileStore:
    root = Path(config.files_dir).expanduser() if config.files_dir else default_files_dir(
        config.db)
    files = FileStore(root.resolve(), int(config.max_file_mb * (1 << 20)))
    if swept := files.sweep_incoming():
        log.info("files: removed %d unfinished upload(s) left by a stopped server", swept)
    return files


def _json(payload: dict[str, Any], status: int) -> Response:
    body = orjson.dumps(payload, default=str)
    return Response(body, status_code=status, media_type="application/json")


def _parse_body(raw: bytes, request: Request) -> dict[str, Any]:
    body: dict[str, Any] = dict(request.query_params)
    if raw.strip():
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise errors.ValidationError(f"malformed JSON body: {exc}") from exc
        if not isinstance(parsed, dict):
            raise errors.ValidationError("the request body must be a JSON object")
        body.update(parsed)
    return body


def _too_large(limit: int) -> errors.ApiError:
    return errors.RequestTooLarge(
        f"request body larger than the server's limit of {limit / (1 << 20):g} MiB "
        "(bosun server --max-body-mb)", limit=limit)


def _declared_length(request: Request, limit: int) -> None:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(limit)


async def _limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body in pieces, refused (413) as soon as it grows past `limit`."""
    _declared_length(request, limit)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        if chunk:
            yield chunk


async def _read_body(request: Request, limit: int) -> bytes:
    return b"".join([chunk async for chunk in _limited(request, limit)])


async def _run(handler: Handler, call: Call) -> dict[str, Any]:
    if inspect.iscoroutinefunction(handler):
        return await handler(call)
    return await to_thread.run_sync(handler, call)  # type: ignore[arg-type]


def create_app(config: ServerConfig, state: ServerState | None = None) -> Starlette:
    state = state or open_state(config)
    table = endpoint_table()

    async def dispatch(request: Request) -> Response:
        started = time.perf_counter()
        endpoint = request.path_params["endpoint"]
        version = request.path_params.get("version")
        trx = uuid.uuid4().hex
        status = 200
        try:
            handler = table.get(endpoint)
            if handler is None:
                raise errors.EndpointNotSupported(
                    f"endpoint '{endpoint}' is not supported by this server", endpoint=endpoint)
            headers = request.headers
            client = request.client.host if request.client else None
            # Who is calling, from the headers, before a byte of the body is read.
            identity = await identify(state, endpoint, headers, client)
            limit = state.max_body_bytes
            streamed = endpoint in STREAMED_BODY_ENDPOINTS
            if streamed:
                _declared_length(request, limit)
            raw = b"" if streamed else await _read_body(request, limit)
            body = dict(request.query_params) if streamed else _parse_body(raw, request)
            schemas.validate(endpoint, body, may_hold_nul=b"\\u0000" in raw
                             or bool(request.url.query))
            call = Call(
                endpoint=endpoint, body=body, identity=identity, state=state,
                worker=next((headers[h] for h in WORKER_HEADERS if h in headers), None),
                headers=headers, disconnected=request.is_disconnected, client=client,
                chunks=_limited(request, limit) if streamed else None,
            )
            data = await _run(handler, call)
            payload = envelope(endpoint, version, trx, data)
        except errors.ApiError as exc:
            status = exc.code
            payload = envelope(endpoint, version, trx, None, exc)
        except Exception as exc:
            status = 500
            fault = storage_faults.describe(exc)
            if fault is None:
                log.exception("%s failed (trx %s)", endpoint, trx)
                fault = (f"internal server error ({type(exc).__name__}); see the server log, "
                         f"trx {trx}")
            payload = envelope(endpoint, version, trx, None, errors.InternalError(fault))
        log.debug("%s %s %d %.1fms", request.method, endpoint, status,
                  (time.perf_counter() - started) * 1000)
        return _json(payload, status)

    async def not_found(request: Request) -> Response:
        if request.method == "POST" and request.url.path == "/":
            # The clearml SDK uploads artifacts, models and debug images to its files host.
            message = (f"bosun's files server is at {request.base_url}files: set "
                       "api.files_server (or CLEARML_FILES_HOST) to that address")
        else:
            message = (f"no such endpoint: {request.url.path}; calls look like "
                       "POST /v2.23/<service>.<action>")
        log.debug("%s %s 400 (no such endpoint)", request.method, request.url.path)
        return _json(envelope(request.url.path, None, uuid.uuid4().hex, None,
                              errors.EndpointNotSupported(message)), 400)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        state.wakeups.bind(asyncio.get_running_loop())
        anyio.to_thread.current_default_thread_limiter().total_tokens = MAX_THREADS
        async with watching(state.store, state.wakeups), \
                reaping(state.store, state.recovery, state.wakeups), \
                revocations.refreshing(state.store, state.signer):
            yield
        state.store.dispose()

    methods = ["GET", "POST"]
    routes = [
        *file_routes(state),
        Route("/v{version}/{endpoint}", dispatch, methods=methods),
        Route("/{endpoint}", dispatch, methods=methods),
        Route("/{path:path}", not_found, methods=methods),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.bosun = state
    return app


def app_from_env() -> Starlette:
    """Factory for multi-process serving: each process reads its config from the environment."""
    raw = os.environ.get(CONFIG_ENV)
    if not raw:
        raise RuntimeError(f"{CONFIG_ENV} is not set")
    return create_app(ServerConfig(**json.loads(raw)))
