"""The files server's HTTP side, ClearML's fileserver protocol under `/files` on the API's port:
`POST /files` (multipart, each part named by its path) uploads, `GET|HEAD /files/<path>`
downloads (HTTP Range served; `?download` as an attachment), `DELETE /files/<path>` removes a
file, `POST /files/delete_many {"files": [...]}` files or folders. Guarded by the API's auth."""

from __future__ import annotations

import logging
import mimetypes
import time
import uuid
from typing import Any

import orjson
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from bosun.api import errors
from bosun.api.envelope import envelope
from bosun.server import storage_faults
from bosun.server.call import ServerState
from bosun.server.files import upload
from bosun.server.files.file_store import FileStore
from bosun.server.identity import identify

log = logging.getLogger("bosun.server")
MAX_DELETE_BODY_BYTES = 16 << 20


def _answer(name: str, status: int, data: Any, error: errors.ApiError | None = None) -> Response:
    if error is not None:
        data = envelope(name, None, uuid.uuid4().hex, None, error)
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def file_routes(state: ServerState) -> list[Route]:
    async def guarded(request: Request, name: str, act: Any) -> Response:
        started = time.perf_counter()
        status = 200
        try:
            store = state.files
            if store is None:
                raise errors.EndpointNotSupported("this server runs without a files server")
            client = request.client.host if request.client else None
            await identify(state, name, request.headers, client)
            response = await act(request, store)
        except errors.ApiError as exc:
            status = exc.code
            response = _answer(name, status, None, exc)
        except OSError as exc:  # the disk: full, read-only, gone
            status = 500
            log.error("%s %s failed: %s", name, request.url.path, exc)
            response = _answer(name, status, None, errors.InternalError(
                f"the files server could not write or read its disk: {exc.strerror or exc}"))
        except Exception as exc:
            status = 500
            fault = storage_faults.describe(exc)
            if fault is None:
                log.exception("%s %s failed", name, request.url.path)
            response = _answer(name, status, None, errors.InternalError(
                fault or f"internal server error ({type(exc).__name__}); see the server log"))
        log.debug("%s %s %d %.1fms", request.method, name, status,
                  (time.perf_counter() - started) * 1000)
        return response

    async def root(request: Request) -> Response:
        if request.method == "POST":
            return await guarded(request, "files.upload", _upload)
        return await guarded(request, "files.ping", _ping)

    async def one_file(request: Request) -> Response:
        if request.method == "DELETE":
            return await guarded(request, "files.delete", _delete)
        return await guarded(request, "files.download", _download)

    async def many(request: Request) -> Response:
        return await guarded(request, "files.delete_many", _delete_many)

    return [
        Route("/files", root, methods=["GET", "HEAD", "POST"]),
        Route("/files/", root, methods=["GET", "HEAD", "POST"]),
        Route("/files/delete_many", many, methods=["POST"]),
        Route("/files/{path:path}", one_file, methods=["GET", "HEAD", "DELETE"]),
    ]


async def _ping(_request: Request, _store: FileStore) -> Response:
    return Response("OK", media_type="text/plain")


async def _upload(request: Request, store: FileStore) -> Response:
    saved = await upload.receive(store, request.headers.get("content-type", ""),
                                 request.stream())
    log.info("files: stored %s", ", ".join(saved) if len(saved) < 4 else f"{len(saved)} files")
    return _answer("files.upload", 200, saved)


async def _download(request: Request, store: FileStore) -> Response:
    name = request.path_params["path"]
    path = await to_thread.run_sync(store.existing_file, name)
    # A .gz is sent as bytes: a client that sees gzip encoding would unpack it on the way in.
    guessed, encoding = mimetypes.guess_type(path.name)
    media_type = "application/octet-stream" if encoding or not guessed else guessed
    attachment = "download" in request.query_params
    return FileResponse(path, media_type=media_type,
                        filename=path.name if attachment else None)


async def _delete(request: Request, store: FileStore) -> Response:
    deleted = await to_thread.run_sync(store.delete_file, request.path_params["path"])
    log.info("files: deleted %s", deleted)
    return _answer("files.delete", 200, deleted)


async def _delete_many(request: Request, store: FileStore) -> Response:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_DELETE_BODY_BYTES:
            raise errors.RequestTooLarge("a delete_many body is at most 16 MiB")
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise errors.ValidationError(f"malformed JSON body: {exc}") from exc
    files = body.get("files") if isinstance(body, dict) else None
    if not files or not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise errors.ValidationError("files must be a non-empty list of paths", field="files")
    deleted, failed = await to_thread.run_sync(store.delete_many, files)
    log.info("files: deleted %d (%d not)", len(deleted), sum(map(len, failed.values())))
    return _answer("files.delete_many", 200, {"deleted": deleted, "errors": failed})
