"""A multipart upload (the clearml SDK's form: one part per file, the part's name is the path)
streamed straight into the file store: parts are written as they arrive, never held whole, and
only a part that arrived complete is renamed into place."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from anyio import to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from bosun.api import errors
from bosun.server.files.file_store import FileStore

# Bytes handed to the parser (and the disk) per thread hop.
WRITE_BATCH_BYTES = 1 << 20


def boundary_of(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise errors.ValidationError(
            "an upload is a multipart/form-data body with a boundary (one part per file, "
            "named by its path)", field="content-type")
    return boundary


class _Parts:
    """The parser's callbacks: one open incoming file per part, committed at the part's end."""

    def __init__(self, store: FileStore) -> None:
        self.store = store
        self.saved: list[str] = []
        self._header_field = b""
        self._header_value = b""
        self._disposition = b""
        self._name = ""
        self._incoming: Path | None = None
        self._file: IO[bytes] | None = None
        self._size = 0

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._begin, "on_header_field": self._field,
            "on_header_value": self._value, "on_header_end": self._header_end,
            "on_headers_finished": self._open, "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._disposition = b""

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_field.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_field = self._header_value = b""

    def _open(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode("utf-8", errors="replace")
        self.store.resolve(name)  # a bad path is refused before a byte is written
        self._name = name
        self._incoming = self.store.new_incoming()
        self._file = self._incoming.open("wb")
        self._size = 0

    def _data(self, data: bytes, start: int, end: int) -> None:
        assert self._file is not None
        self._size += end - start
        if self._size > self.store.max_file_bytes:
            limit = self.store.max_file_bytes / (1 << 20)
            raise errors.RequestTooLarge(
                f"file {self._name!r} is larger than the files server's limit of {limit:g} MiB "
                "(bosun server --max-file-mb)", limit=self.store.max_file_bytes)
        self._file.write(data[start:end])

    def _end(self) -> None:
        assert self._file is not None and self._incoming is not None
        self._file.flush()
        os.fsync(self._file.fileno())  # on disk before it is visible: a crash loses no file
        self._file.close()
        self._file = None
        self.saved.append(self.store.commit(self._incoming, self._name))
        self._incoming = None

    def abandon(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._incoming is not None:
            self._incoming.unlink(missing_ok=True)


async def receive(store: FileStore, content_type: str,
                  chunks: AsyncIterator[bytes]) -> list[str]:
    """Stores every part of the body; returns the paths saved, in order."""
    parts = _Parts(store)
    parser = MultipartParser(boundary_of(content_type), parts.callbacks())  # type: ignore[arg-type]
    pending: list[bytes] = []
    pending_size = 0
    try:
        async for chunk in chunks:
            pending.append(chunk)
            pending_size += len(chunk)
            if pending_size >= WRITE_BATCH_BYTES:
                await to_thread.run_sync(parser.write, b"".join(pending))
                pending, pending_size = [], 0
        if pending:
            await to_thread.run_sync(parser.write, b"".join(pending))
        parser.finalize()
    except MultipartParseError as exc:
        parts.abandon()
        raise errors.ValidationError(f"malformed multipart upload: {exc}", field="body") from exc
    except BaseException:
        parts.abandon()
        raise
    if parts._file is not None:  # the body ended inside a part: it is not stored
        parts.abandon()
        raise errors.ValidationError("the upload ended before its last part did", field="body")
    return parts.saved
