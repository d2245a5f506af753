"""Reading `clearml.conf` (HOCON) into plain data without keeping the HOCON parser in memory.

pyhocon builds its grammar with pyparsing: about 13 MiB that a daemon would carry for its whole
life for a file it reads once. So the file is parsed by a short-lived child process
(`python -m bosun.agent.config_file PATH`, JSON on stdout) and the result is cached by the
file's content, so a later start reads JSON only. A file with an `include` is parsed every time
(what it includes may have changed). Should the child fail to start, the file is parsed here.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import platformdirs

from bosun.cli.errors import UserError

PARSE_TIMEOUT_S = 60
USER_ERROR_EXIT = 2
CACHE_VERSION = "1"
CACHE_ENTRIES = 64  # parsed files kept; the oldest go first


class ConfigFileError(UserError):
    """The file cannot be read or is not valid HOCON; the message names the file."""


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    cache = None if b"include" in text else _cache_path(text)
    if cache is not None:
        cached = _read_cache(cache)
        if cached is not None:
            return cached
    tree = _parse_in_child(path)
    if cache is not None:
        _write_cache(cache, tree)
    return tree


def parse_here(path: Path) -> dict[str, Any]:
    """Parse with pyhocon in this process (the child's side, and the fallback)."""
    import pyparsing
    from pyhocon import ConfigFactory, ConfigTree
    from pyhocon.exceptions import ConfigException

    try:
        parsed = ConfigFactory.parse_file(str(path))
    except (pyparsing.ParseBaseException, ConfigException) as exc:
        raise ConfigFileError(f"{path}: {hocon_error(exc)}") from None
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not isinstance(parsed, ConfigTree):
        raise ConfigFileError(
            f"{path}: expected sections such as api {{ ... }} and agent {{ ... }}")
    plain = _plain(parsed)
    assert isinstance(plain, dict)
    return plain


def hocon_error(exc: Exception, show_text: bool = True) -> str:
    """A HOCON parser error as one short line: what was expected, where (and, with `show_text`,
    the text found there). pyparsing can describe its whole grammar: that is cut."""
    import pyparsing

    if not isinstance(exc, pyparsing.ParseBaseException):
        return " ".join(str(exc).split())
    where = f"line {exc.lineno}, column {exc.col}"
    expected = " ".join(exc.msg.split())
    if len(expected) > 60:
        expected = "syntax error"
    if not show_text:
        return f"{expected} ({where})"
    rest = exc.pstr[exc.loc:].split()
    found = repr(rest[0][:20]) if rest else "end of file"
    return f"{expected}, found {found} ({where})"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):  # ConfigTree is an OrderedDict
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _parse_in_child(path: Path) -> dict[str, Any]:
    try:
        done = subprocess.run([sys.executable, "-m", "bosun.agent.config_file", str(path)],
                              capture_output=True, text=True, timeout=PARSE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return parse_here(path)
    if done.returncode == USER_ERROR_EXIT:
        raise ConfigFileError(done.stderr.strip())
    if done.returncode != 0:  # the child itself broke: no reason to fail the user's command
        return parse_here(path)
    tree = json.loads(done.stdout)
    assert isinstance(tree, dict)
    return tree


def _cache_path(text: bytes) -> Path:
    digest = hashlib.sha256(CACHE_VERSION.encode() + b"\0" + text).hexdigest()
    return Path(platformdirs.user_cache_dir("bosun")) / "config" / f"{digest}.json"


def _read_cache(cache: Path) -> dict[str, Any] | None:
    try:
        tree = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    return tree if isinstance(tree, dict) else None


def _write_cache(cache: Path, tree: dict[str, Any]) -> None:
    """Best effort and atomic: a reader never sees half a file; no cache is no error."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as out:
            json.dump(tree, out)
        os.replace(tmp, cache)
        _prune(cache.parent)
    except OSError:
        pass


def _prune(folder: Path) -> None:
    entries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[CACHE_ENTRIES:]:
        old.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    try:
        tree = parse_here(Path(argv[0]))
    except ConfigFileError as exc:
        print(exc, file=sys.stderr)
        return USER_ERROR_EXIT
    json.dump(tree, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
