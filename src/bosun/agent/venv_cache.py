"""A cache of built virtual environments, keyed by what went into them.

Layout under ``root``: ``<key>/`` is a venv, complete once it holds the marker file
``.bosun-venv-complete`` (written last); ``.locks/<key>.lock`` serialises builders of one key
across processes (``flock``). Venvs do not survive being moved (scripts carry absolute paths), so
an entry is built in place at its final path while holding its lock; an entry without a marker
is a build that crashed or is still running, never a cache hit, and is deleted and rebuilt by
the next builder. The marker's mtime is the entry's last use, for LRU eviction.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from bosun.agent.requirements import Requirements

MARKER = ".bosun-venv-complete"
_LOCKS = ".locks"
_GIB = 1024**3
_KEY_VERSION = 1


def _file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def cache_key(python_version: str, manager: str, requirements: Requirements,
              extra: Sequence[str] = ()) -> str:
    """sha256 (hex) over what decides a venv's content.

    That is the interpreter's full version string, the package manager, the requirements kind and
    normalised lines, for ``project`` the content of ``uv.lock`` and ``pyproject.toml``, for
    ``-r`` / ``-c`` option lines the content of the referenced file, and ``extra`` (the builder's
    settings that change the result: system site packages, extra indexes, priority packages ...).
    """
    payload: dict[str, object] = {
        "v": _KEY_VERSION,
        "python": python_version,
        "manager": manager,
        "kind": requirements.kind,
        "lines": list(requirements.lines),
        "extra": list(extra),
    }
    base = requirements.project_dir
    if base is not None:
        files: dict[str, str | None] = {}
        if requirements.kind == "project":
            for name in ("uv.lock", "pyproject.toml"):
                files[name] = _file_digest(base / name)
        for line in requirements.lines:
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[0] in ("-r", "--requirement", "-c", "--constraint"):
                files[line] = _file_digest(base / parts[1].strip())
        payload["files"] = files
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():  # a file appeared while deleting, or permissions: try once more, loudly
            shutil.rmtree(path)


class VenvCache:
    """Complete venvs under ``root``, at most ``max_entries`` (<= 0: no limit), LRU evicted.

    ``free_space_threshold_gb`` > 0: entries are also evicted (oldest first) while the free space
    of the file system holding ``root`` is below it. ``enabled`` False: ``lookup`` never hits,
    ``evict`` does nothing and ``store`` is refused.

    A venv handed out by ``lookup`` / ``store`` can be evicted by another agent while a task
    still runs in it; with max_entries at ClearML's default of 10 that takes ten other
    environments built in the meantime.
    """

    def __init__(self, root: Path, max_entries: int = 10, free_space_threshold_gb: float = 2.0,
                 enabled: bool = True) -> None:
        self.root = Path(root).expanduser()
        self.max_entries = max_entries
        self.free_space_threshold_gb = free_space_threshold_gb
        self.enabled = enabled

    def path_for(self, key: str) -> Path:
        return self.root / key

    # --- locks -------------------------------------------------------------------------------

    def _lock_path(self, key: str) -> Path:
        return self.root / _LOCKS / f"{key}.lock"

    def _acquire(self, key: str, blocking: bool,
                 on_wait: Callable[[], None] | None = None) -> int | None:
        """An fd holding the key's lock, or None (only when not blocking and it is held)."""
        path = self._lock_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if not blocking:
                        os.close(fd)
                        return None
                    if on_wait is not None:
                        on_wait()
                        on_wait = None
                    fcntl.flock(fd, fcntl.LOCK_EX)
                # the evicter unlinks lock files while holding them: make sure ours is current
                try:
                    current = os.stat(path).st_ino
                except FileNotFoundError:
                    current = None
                if current == os.fstat(fd).st_ino:
                    return fd
                os.close(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise

    @staticmethod
    def _release(fd: int) -> None:
        os.close(fd)  # closing the last descriptor releases the flock

    # --- entries -----------------------------------------------------------------------------

    @staticmethod
    def _touch(entry: Path) -> None:
        now = time.time_ns()
        os.utime(entry / MARKER, ns=(now, now))

    def lookup(self, key: str) -> Path | None:
        """The complete venv for ``key`` (marking it used), else None."""
        if not self.enabled:
            return None
        entry = self.path_for(key)
        try:
            self._touch(entry)
        except OSError:
            return None
        return entry

    def store(self, key: str, build: Callable[[Path], None],
              on_wait: Callable[[], None] | None = None) -> Path:
        """The venv for ``key``, built with ``build(path)`` unless complete already.

        ``build`` creates the venv at ``path`` (which does not exist when it is called). Another
        process building the same key is waited for (``on_wait`` is called once when that
        happens) and its result used. A failed build leaves nothing behind and re-raises.
        """
        if not self.enabled:
            raise RuntimeError("the venv cache is disabled")
        self.root.mkdir(parents=True, exist_ok=True)
        self.evict(keep=[key])
        entry = self.path_for(key)
        fd = self._acquire(key, blocking=True, on_wait=on_wait)
        assert fd is not None
        try:
            if (entry / MARKER).is_file():
                self._touch(entry)
                return entry
            remove_tree(entry)  # a build that crashed before its marker
            try:
                build(entry)
                if not entry.is_dir():
                    raise RuntimeError(f"the venv build did not create {entry}")
                tmp = entry / f"{MARKER}.tmp"
                tmp.write_text(json.dumps({"key": key, "built": time.time()}) + "\n")
                os.replace(tmp, entry / MARKER)
            except BaseException:
                remove_tree(entry)
                raise
        finally:
            self._release(fd)
        self.evict(keep=[key])
        return entry

    def discard(self, key: str) -> bool:
        """Delete the entry for ``key`` (e.g. found broken); False when another process holds it."""
        return self._remove_entry(key, blocking=True)

    def _remove_entry(self, key: str, blocking: bool = False) -> bool:
        fd = self._acquire(key, blocking=blocking)
        if fd is None:
            return False
        try:
            entry = self.path_for(key)
            (entry / MARKER).unlink(missing_ok=True)  # not a hit from here on
            remove_tree(entry)
            self._lock_path(key).unlink(missing_ok=True)
        finally:
            self._release(fd)
        return True

    def entries(self) -> list[tuple[int, str]]:
        """(last use in ns, key) of the complete entries, least recently used first."""
        found: list[tuple[int, str]] = []
        try:
            children = list(self.root.iterdir())
        except OSError:
            return []
        for child in children:
            if child.name.startswith("."):
                continue
            try:
                found.append((os.stat(child / MARKER).st_mtime_ns, child.name))
            except OSError:
                continue
        return sorted(found)

    def _incomplete(self) -> list[str]:
        try:
            children = list(self.root.iterdir())
        except OSError:
            return []
        return [c.name for c in children
                if not c.name.startswith(".") and c.is_dir() and not (c / MARKER).exists()]

    def _free_gb(self) -> float:
        return shutil.disk_usage(self.root).free / _GIB

    def evict(self, keep: Iterable[str] = ()) -> list[str]:
        """Delete least recently used entries beyond ``max_entries`` and while free space is
        below the threshold, plus abandoned incomplete builds; never ``keep`` nor entries being
        built. Returns the keys deleted."""
        if not self.enabled or not self.root.is_dir():
            return []
        kept = set(keep)
        removed: list[str] = []
        for key in self._incomplete():  # crashed builds (a running build holds its lock)
            if key not in kept and self._remove_entry(key):
                removed.append(key)
        candidates = [key for _, key in self.entries() if key not in kept]
        if self.max_entries > 0:
            excess = len(self.entries()) - self.max_entries
            while excess > 0 and candidates:
                key = candidates.pop(0)
                if self._remove_entry(key):
                    removed.append(key)
                    excess -= 1
        if self.free_space_threshold_gb > 0:
            while candidates and self._free_gb() < self.free_space_threshold_gb:
                key = candidates.pop(0)
                if self._remove_entry(key):
                    removed.append(key)
        return removed
