"""The files server's folder: where an uploaded path lives, written so that no half file is ever
visible (each upload goes to `.incoming/` on the same disk, is flushed, then renamed into place)
and nothing outside the folder can be named."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import platformdirs

from bosun.api import errors

INCOMING = ".incoming"
# An upload not finished after this long belongs to a server that died mid-upload.
STALE_INCOMING_SECONDS = 6 * 3600
MAX_PATH_CHARS = 1024


def default_files_dir(db: str | None) -> Path:
    """Next to the SQLite file; for a database server, in the user data dir."""
    if db and not db.startswith(("postgresql://", "postgres://")):
        path = db.split("sqlite:///", 1)[1] if db.startswith("sqlite:///") else db
        return Path(path).expanduser().resolve().parent / "files"
    return Path(platformdirs.user_data_dir("bosun")) / "files"


def clean_path(raw: str) -> str:
    """`raw` as a relative path of plain segments, or a 400 naming what is wrong with it."""
    text = raw.replace("\\", "/").lstrip("/")
    if not text or len(text) > MAX_PATH_CHARS or "\x00" in text:
        raise errors.ValidationError(
            f"file path must be 1 to {MAX_PATH_CHARS} characters without NUL", field="path")
    parts = text.split("/")
    if any(part in ("", ".", "..") for part in parts) or parts[0] == INCOMING:
        raise errors.ValidationError(
            f"file path {raw[:200]!r} may not hold empty, '.' or '..' segments or start "
            f"with {INCOMING}", field="path")
    return "/".join(parts)


class FileStore:
    def __init__(self, root: Path, max_file_bytes: int) -> None:
        self.root = root
        self.max_file_bytes = max_file_bytes
        self.incoming = root / INCOMING
        self.incoming.mkdir(parents=True, exist_ok=True)

    def resolve(self, raw: str) -> Path:
        return self.root / clean_path(raw)

    def existing_file(self, raw: str) -> Path:
        path = self.resolve(raw)
        if not path.is_file():
            raise errors.FileNotFound(f"no such file: {clean_path(raw)}", path=clean_path(raw))
        return path

    def new_incoming(self) -> Path:
        return self.incoming / f"{uuid.uuid4().hex}.part"

    def commit(self, incoming: Path, raw: str) -> str:
        """Renames a finished upload into place (atomic: readers see the old file or the new)."""
        name = clean_path(raw)
        target = self.root / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(incoming, target)
        except (NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
            raise errors.ValidationError(
                f"file path {name!r} collides with an existing file or folder", field="path"
            ) from exc
        return name

    def delete_file(self, raw: str) -> str:
        path = self.existing_file(raw)
        path.unlink()
        self._prune_empty(path.parent)
        return clean_path(raw)

    def delete_many(self, raws: list[str]) -> tuple[dict[str, str], dict[str, list[str]]]:
        """Files or whole folders. ClearML's answer: deleted {given: path}, errors {why: [...]}."""
        deleted: dict[str, str] = {}
        failed: dict[str, list[str]] = {}
        for raw in raws:
            try:
                path = self.resolve(raw)
                if path.is_file():
                    path.unlink()
                elif path.is_dir():
                    shutil.rmtree(path)
                else:
                    failed.setdefault("Not found", []).append(raw)
                    continue
            except errors.ApiError as exc:
                failed.setdefault(exc.msg, []).append(raw)
                continue
            except OSError as exc:
                failed.setdefault(exc.strerror or str(exc), []).append(raw)
                continue
            self._prune_empty(path.parent)
            deleted[raw] = clean_path(raw)
        return deleted, failed

    def sweep_incoming(self, older_than: float = STALE_INCOMING_SECONDS) -> int:
        """Removes the parts of uploads that a dead server left behind; returns how many."""
        cutoff = time.time() - older_than
        removed = 0
        for part in self.incoming.glob("*.part"):
            try:
                if part.stat().st_mtime < cutoff:
                    part.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def _prune_empty(self, folder: Path) -> None:
        # Task folders emptied by deletes go too, up to (not including) the root.
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent
