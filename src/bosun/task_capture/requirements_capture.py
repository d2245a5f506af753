"""Which packages a new task records in ``script.requirements.pip``.

In order: the file the user gives (``--requirements``; ``-r other.txt`` includes are inlined),
the packages the user lists (``--packages``), else what the code's folders hold: a ``uv.lock`` or
a ``pyproject.toml`` with a ``[project]`` table means nothing is stored (the agent installs the
project itself, with ``uv sync``, from the checkout), else a ``requirements.txt`` is stored as
text. The folders are searched nearest first (the working dir, then the repository root).
"""

from __future__ import annotations

import shlex
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_INCLUDE_DEPTH = 10


class RequirementsError(Exception):
    """A requirements file that cannot be read; the message is one line."""


@dataclass(frozen=True)
class CapturedRequirements:
    pip: str  # the text for script.requirements.pip; "" means none is stored
    source: str  # where they came from, in words, for the user


def _include_target(line: str) -> str | None:
    for prefix in ("-r", "--requirement"):
        if line.startswith(prefix):
            rest = line[len(prefix):]
            if rest[:1] in (" ", "\t", "="):
                parts = shlex.split(rest.lstrip(" \t="), comments=True)
                return parts[0] if parts else None
            if prefix == "-r" and rest and not rest.startswith("-"):
                return rest.strip()
    return None


def read_requirements_file(path: Path, _depth: int = 0,
                           _seen: frozenset[Path] = frozenset()) -> str:
    """The file's lines, ``-r FILE`` includes replaced by the included file's lines (paths
    relative to the including file, as pip reads them)."""
    resolved = path.resolve()
    if resolved in _seen or _depth > MAX_INCLUDE_DEPTH:
        raise RequirementsError(f"requirements file {path} includes itself")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RequirementsError(f"requirements file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RequirementsError(f"cannot read requirements file {path}: {exc}") from None
    out: list[str] = []
    for line in text.splitlines():
        target = _include_target(line.strip())
        if target is None:
            out.append(line)
            continue
        included = Path(target).expanduser()
        if not included.is_absolute():
            included = path.parent / included
        out.append(read_requirements_file(included, _depth + 1, _seen | {resolved}).rstrip("\n"))
    return "\n".join(out).strip("\n") + "\n" if any(o.strip() for o in out) else ""


def _is_project(folder: Path) -> str:
    """The file that makes ``folder`` a Python project the agent installs itself, or ""."""
    if (folder / "uv.lock").is_file():
        return "uv.lock"
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return ""
        if isinstance(data.get("project"), dict):
            return "pyproject.toml"
    return ""


def capture_requirements(requirements_file: Path | None, packages: Sequence[str] | None,
                         search_dirs: Sequence[Path]) -> CapturedRequirements:
    if requirements_file is not None:
        return CapturedRequirements(read_requirements_file(requirements_file),
                                    f"from {requirements_file}")
    if packages:
        lines = [p.strip() for p in packages if p.strip()]
        return CapturedRequirements("\n".join(lines) + "\n" if lines else "", "from --packages")
    folders = list(dict.fromkeys(d.resolve() for d in search_dirs))
    for folder in folders:
        marker = _is_project(folder)
        if marker:
            return CapturedRequirements(
                "", f"none stored: the agent installs the project in {folder} ({marker})")
    for folder in folders:
        candidate = folder / "requirements.txt"
        if candidate.is_file():
            return CapturedRequirements(read_requirements_file(candidate), f"from {candidate}")
    return CapturedRequirements("", "none found (no requirements.txt, uv.lock or "
                                "pyproject.toml)")
