"""Building a task's ``script`` section (and its ``Args`` hyperparameters) from a local script or
module, the way ``clearml-task`` does.

Inside a git checkout: ``repository`` / ``branch`` / ``version_num`` / ``diff`` come from
:mod:`git_state`; ``working_dir`` is relative to the repository root and ``entry_point`` is
relative to ``working_dir`` (that is where the agent runs it), followed by the arguments:
``train.py --lr 0.1`` or ``-m pkg.mod --lr 0.1``. The script itself goes into the diff as a new
file when it is not committed. Outside a checkout the script's text is stored in ``diff`` (an
agent runs a ``diff`` that does not start with ``diff `` as the script body) and
``entry_point`` is its file name.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bosun.task_capture.git_state import GitError, GitState, capture, repo_root
from bosun.task_capture.requirements_capture import (
    CapturedRequirements,
    RequirementsError,
    capture_requirements,
)

ARGS_SECTION = "Args"
DEFAULT_BINARY = "python3"
_VERSION = re.compile(r"^(?:python)?(\d+(?:\.\d+){0,2})$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")


class CaptureError(Exception):
    """Something the user has to fix before a task can be made; the message is one line."""


@dataclass(frozen=True)
class ScriptSpec:
    script: Path | None = None
    module: str | None = None
    args: str = ""
    cwd: Path | None = None
    requirements_file: Path | None = None
    packages: Sequence[str] | None = None
    include_untracked: Sequence[Path] = ()
    python: str | None = None


@dataclass
class TaskScript:
    script: dict[str, Any]
    hyperparams: dict[str, dict[str, dict[str, str]]]
    requirements: CapturedRequirements
    git: GitState | None = None
    warnings: list[str] = field(default_factory=list)


def python_binary(python: str | None) -> str:
    """``--python``: ``3.12`` / ``python3.12`` -> ``python3.12``; a path is kept as given."""
    if not python:
        return DEFAULT_BINARY
    value = python.strip()
    if "/" in value:
        return value
    match = _VERSION.match(value)
    if not match:
        raise CaptureError(f"--python {python}: expected a version like 3.12 or a path to a "
                           "python interpreter")
    return f"python{match.group(1)}"


def split_args(args: str) -> list[str]:
    try:
        return shlex.split(args)
    except ValueError as exc:
        raise CaptureError(f"--args: {exc} in {args!r}") from None


def args_hyperparams(tokens: Sequence[str]) -> dict[str, dict[str, str]]:
    """The ``Args`` section clearml-task writes: one entry per option, named by its argparse
    ``dest`` (``--batch-size 8`` -> ``batch_size = 8``; a bare ``--flag`` -> ``True``).
    Positional arguments stay in the entry point only."""
    params: dict[str, dict[str, str]] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token == "--":
            break
        if not token.startswith("-") or token == "-" or _is_number(token):
            continue
        name, eq, value = token.lstrip("-").partition("=")
        if not eq:
            if i < len(tokens) and (not tokens[i].startswith("-") or _is_number(tokens[i])):
                value = tokens[i]
                i += 1
            else:
                value = "True"
        dest = name.replace("-", "_")
        if dest:
            params[dest] = {"section": ARGS_SECTION, "name": dest, "value": value,
                            "type": "str", "description": ""}
    return params


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _absolute(path: Path, here: Path) -> Path:
    """An absolute path with its folders resolved (a symlinked script keeps its own name)."""
    full = Path(os.path.abspath(here / path.expanduser()))
    return full.parent.resolve() / full.name


def build_script(spec: ScriptSpec, here: Path) -> TaskScript:
    """The ``script`` section for ``spec``; ``here`` is the folder relative paths start from."""
    if (spec.script is None) == (spec.module is None):
        raise CaptureError("give exactly one of --script or --module")
    if spec.module is not None and not _MODULE.match(spec.module):
        raise CaptureError(f"--module {spec.module}: not a dotted module name")
    tokens = split_args(spec.args or "")
    binary = python_binary(spec.python)
    here = here.resolve()
    cwd = _absolute(spec.cwd, here) if spec.cwd is not None else None
    if cwd is not None and not cwd.is_dir():
        raise CaptureError(f"--cwd {spec.cwd}: no such directory")
    script_path: Path | None = None
    if spec.script is not None:
        script_path = _absolute(spec.script, here)
        if not script_path.is_file():
            raise CaptureError(f"script {spec.script} not found")
        root = repo_root(script_path)
    else:
        root = repo_root(cwd or here)
    try:
        if root is None:
            return _outside_repo(spec, script_path, cwd, tokens, binary)
        return _in_repo(spec, root, script_path, cwd, here, tokens, binary)
    except (GitError, RequirementsError) as exc:
        raise CaptureError(str(exc)) from None


def _in_repo(spec: ScriptSpec, root: Path, script_path: Path | None, cwd: Path | None,
             here: Path, tokens: list[str], binary: str) -> TaskScript:
    if cwd is not None:
        if not _inside(cwd, root):
            raise CaptureError(f"--cwd {spec.cwd} is outside the repository {root}")
        working = cwd
    elif _inside(here, root):
        working = here
    else:  # running from elsewhere: the script's own folder (or the root, for a module)
        working = script_path.parent if script_path is not None else root
    untracked = [Path(os.path.abspath(here / p.expanduser())) for p in spec.include_untracked]
    if script_path is not None:
        entry = [Path(os.path.relpath(script_path, working)).as_posix()]
        untracked.append(script_path)
    else:
        assert spec.module is not None
        entry = ["-m", spec.module]
    state = capture(root, untracked)
    warnings = list(state.warnings)
    if script_path is not None:
        relative = script_path.relative_to(root).as_posix()
        if relative in state.untracked:
            warnings.append(f"{relative} is not committed: it goes into the task's diff as a "
                            "new file")
    requirements = capture_requirements(spec.requirements_file, spec.packages,
                                        [working, root])
    working_dir = Path(os.path.relpath(working, root)).as_posix()
    script = {
        "repository": state.repository, "branch": state.branch, "version_num": state.commit,
        "tag": "", "entry_point": shlex.join([*entry, *tokens]), "working_dir": working_dir,
        "binary": binary, "diff": state.diff,
        "requirements": {"pip": requirements.pip} if requirements.pip else {},
    }
    return TaskScript(script, _hyperparams(tokens), requirements, state, warnings)


def _outside_repo(spec: ScriptSpec, script_path: Path | None, cwd: Path | None,
                  tokens: list[str], binary: str) -> TaskScript:
    if script_path is None:
        raise CaptureError(f"--module {spec.module} needs a git repository (the folder it runs "
                           "in is not inside one); use --script outside a repository")
    if spec.include_untracked:
        raise CaptureError(f"--include-untracked: {script_path.parent} is not inside a git "
                           "repository")
    try:
        body = script_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CaptureError(f"cannot read script {spec.script}: {exc}") from None
    if not body.strip():
        raise CaptureError(f"script {spec.script} is empty")
    if body.lstrip().startswith("diff "):
        raise CaptureError(f"script {spec.script} starts with 'diff ': an agent would take "
                           "it for a patch")
    warnings = [f"{script_path.parent} is not inside a git repository: the task stores the "
                "script's text, and no other file of that folder"]
    search = [script_path.parent] if cwd is None else [cwd, script_path.parent]
    requirements = capture_requirements(spec.requirements_file, spec.packages, search)
    script = {
        "repository": "", "branch": "", "version_num": "", "tag": "",
        "entry_point": shlex.join([script_path.name, *tokens]), "working_dir": ".",
        "binary": binary, "diff": body,
        "requirements": {"pip": requirements.pip} if requirements.pip else {},
    }
    return TaskScript(script, _hyperparams(tokens), requirements, None, warnings)


def _hyperparams(tokens: list[str]) -> dict[str, dict[str, dict[str, str]]]:
    params = args_hyperparams(tokens)
    return {ARGS_SECTION: params} if params else {}
