"""Which Python packages a task needs: from the task itself, the repository, or nothing.

ClearML stores a task's packages in ``script.requirements.pip`` (the SDK writes a frozen list of
what was installed when the task ran first). When that is empty the agent falls back to the
repository: a ``requirements.txt`` in the task's working dir or the repository root, else a
``uv.lock`` / ``pyproject.toml`` with a ``[project]`` table (installed with ``uv sync``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("task", "file", "project", "none")

# name, optional extras, then the rest (specifiers, URL, markers)
_REQUIREMENT = re.compile(r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(\[[^\]]*\])?\s*(.*)$")
_LOCAL_URL = re.compile(r"@\s*file:", re.IGNORECASE)


@dataclass
class Requirements:
    """What to install: ``kind`` is one of ``task``, ``file``, ``project``, ``none``.

    ``lines`` are normalised requirement lines (for ``project``: the ``[project]`` dependencies,
    informational only; ``uv sync`` reads the project itself). ``project_dir`` is the folder
    the install runs in: the project root for ``project``, the folder holding the requirements
    file for ``file`` (so ``-r other.txt`` / ``-e .`` resolve), the repository for ``task``.
    ``notes`` say what was dropped and why.
    """

    kind: str
    lines: list[str]
    project_dir: Path | None
    notes: list[str] = field(default_factory=list)
    source: Path | None = None  # the requirements.txt / pyproject.toml read, when any


def canonical_name(name: str) -> str:
    """PEP 503: lowercase, runs of ``-``, ``_``, ``.`` become one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _split_lines(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.splitlines()
    if isinstance(value, list | tuple):
        out: list[str] = []
        for item in value:
            out.extend(str(item).splitlines())
        return out
    return str(value).splitlines()


def _strip_comment(line: str) -> str:
    # pip treats " #" (whitespace then #) as the start of a comment; "#egg=" in URLs is not one
    return re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()


def _normalize_requirement(line: str) -> str | None:
    match = _REQUIREMENT.match(line)
    if match is None:
        return None
    name, extras, rest = match.groups()
    out = canonical_name(name)
    if extras:
        inner = ",".join(sorted(e.strip().lower() for e in extras[1:-1].split(",") if e.strip()))
        out += f"[{inner}]" if inner else ""
    rest = rest.strip()
    if not rest:
        return out
    if rest.startswith("@"):  # direct reference: keep the URL as written
        return f"{out} {rest}"
    spec, _, marker = rest.partition(";")
    if not re.fullmatch(r"[\s<>=!~.,*+A-Za-z0-9_-]*", spec):
        return None
    spec = re.sub(r"\s+", "", spec)
    out += spec
    if marker.strip():
        out += f"; {marker.strip()}"
    return out


def normalize(lines: Iterable[str], notes: list[str] | None = None) -> list[str]:
    """Canonical, sorted requirement lines; option lines (``-e``, ``--extra-index-url`` ...) first.

    Comments and blank lines go; names are lowercased and PEP 503 canonicalised; version
    specifiers stay. ``pkg @ file:///...`` lines (local paths from the machine that made the
    frozen list, e.g. conda builds) cannot install here and are dropped, with a note appended to
    ``notes`` when given. Lines that do not parse as a requirement are kept verbatim.
    """
    options: list[str] = []
    requirements: set[str] = set()
    for raw in lines:
        line = _strip_comment(raw)
        if not line:
            continue
        if line.startswith("-"):
            if line not in options:
                options.append(line)
            continue
        if _LOCAL_URL.search(line):
            if notes is not None:
                notes.append(f"dropped local-path requirement (not installable here): {line}")
            continue
        normalized = _normalize_requirement(line)
        requirements.add(normalized if normalized is not None else line)
    return options + sorted(requirements)


def project_dependencies(pyproject: Path) -> list[str]:
    """The ``[project] dependencies`` of a pyproject.toml ([] when it has none or is unreadable)."""
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return []
    project = data.get("project")
    if not isinstance(project, dict):
        return []
    deps = project.get("dependencies", [])
    return [str(d) for d in deps] if isinstance(deps, list) else []


def _has_project_table(pyproject: Path) -> bool:
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data.get("project"), dict)


def _search_dirs(script: dict[str, Any], repo_dir: Path | None) -> list[Path]:
    if repo_dir is None:
        return []
    dirs: list[Path] = []
    working_dir = str(script.get("working_dir") or "").strip()
    if working_dir and working_dir != ".":
        candidate = (repo_dir / working_dir).resolve()
        root = repo_dir.resolve()
        if candidate.is_dir() and (candidate == root or root in candidate.parents):
            dirs.append(candidate)
    dirs.append(repo_dir.resolve())
    return dirs


def requirements_for(script: dict[str, Any], repo_dir: Path | None) -> Requirements:
    """The requirements of a task's ``script`` section, checked out at ``repo_dir`` (or None)."""
    section = script.get("requirements") or {}
    if not isinstance(section, dict):
        section = {}
    notes: list[str] = []
    lines = normalize(_split_lines(section.get("pip")), notes)
    if any(not line.startswith("-") for line in lines):
        return Requirements("task", lines, repo_dir.resolve() if repo_dir else None, notes)
    notes_before = list(notes)

    dirs = _search_dirs(script, repo_dir)
    for folder in dirs:
        path = folder / "requirements.txt"
        if path.is_file():
            notes = list(notes_before)
            text = path.read_text(encoding="utf-8", errors="replace")
            return Requirements("file", normalize(text.splitlines(), notes), folder, notes, path)
    for folder in dirs:
        pyproject = folder / "pyproject.toml"
        has_project = pyproject.is_file() and _has_project_table(pyproject)
        if (folder / "uv.lock").is_file() or has_project:
            deps = normalize(project_dependencies(pyproject)) if pyproject.is_file() else []
            return Requirements("project", deps, folder, notes_before, pyproject)
    return Requirements("none", [], None, notes_before)
