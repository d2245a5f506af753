"""The state of a local git checkout, as a task records it so that an agent can rebuild it.

- ``repository``: the URL of the remote ``origin`` (else of the remote the current branch
  tracks) with any credentials taken out of it, or the repository's absolute path when it has
  no remote.
- ``branch``: the checked-out branch (empty on a detached HEAD); ``commit``: HEAD.
- ``diff``: ``git diff --binary HEAD`` (staged and unstaged changes of tracked files) plus the
  untracked files the user names, as new-file hunks. The untracked files are added
  intent-to-add (``git add -N``) in a temporary copy of the index (``GIT_INDEX_FILE``), so the
  user's own index is never touched.

Applying ``diff`` with ``git apply`` to a clone of ``repository`` checked out at ``commit``
reproduces the working tree (tracked files and the named untracked ones) byte for byte.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bosun.agent.git_credentials import is_local, strip_credentials

GIT_TIMEOUT_S = 120.0
# Settings that would change what `git diff` prints, pinned to what `git apply` expects.
_DIFF_CONFIG = ("-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false",
                "-c", "color.ui=false", "-c", "core.quotePath=true")


class GitError(Exception):
    """A git problem the user can act on; the message is one line."""


@dataclass(frozen=True)
class GitState:
    root: Path
    repository: str
    branch: str
    commit: str
    diff: str
    untracked: tuple[str, ...] = ()  # repo-relative paths that went into the diff as new files
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _env(index_file: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
    env.update(LC_ALL="C", GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0",
               GIT_LITERAL_PATHSPECS="1")
    if index_file is not None:
        env["GIT_INDEX_FILE"] = str(index_file)
    return env


def _git(cwd: Path, *args: str, index_file: Path | None = None,
         check: bool = True) -> subprocess.CompletedProcess[bytes]:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, env=_env(index_file),
                                capture_output=True, timeout=GIT_TIMEOUT_S, check=False)
    except FileNotFoundError as exc:
        raise GitError("git is not installed (needed to read the repository)") from exc
    except subprocess.TimeoutExpired as exc:
        raise GitError(f"git {args[0]} in {cwd} took longer than {GIT_TIMEOUT_S:.0f}s") from exc
    if check and result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        detail = message[-1] if message else f"exit code {result.returncode}"
        raise GitError(f"git {args[0]} failed in {cwd}: {detail}")
    return result


def _text(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode(errors="replace").strip()


def repo_root(path: Path) -> Path | None:
    """The top folder of the git work tree holding ``path`` (a file or folder), or None."""
    folder = path if path.is_dir() else path.parent
    if not folder.is_dir() or shutil.which("git") is None:
        return None
    result = _git(folder, "rev-parse", "--show-toplevel", check=False)
    top = _text(result)
    if result.returncode != 0 or not top:
        return None
    return Path(top).resolve()


# --- remote -------------------------------------------------------------------------------------


def clean_remote_url(url: str, root: Path) -> str:
    """A remote URL fit to store: no password or token in it (an http(s) URL loses its whole
    user part, an ssh URL keeps its user but not a password); a relative local path made
    absolute."""
    url = url.strip()
    if is_local(url):
        path = Path(url).expanduser()
        return str(path if path.is_absolute() else (root / path).resolve())
    if url.lower().startswith(("http://", "https://")):
        return strip_credentials(url)
    if "://" in url:
        parts = urlsplit(url)
        userinfo, at, host = parts.netloc.rpartition("@")
        if at and ":" in userinfo:
            netloc = f"{userinfo.partition(':')[0]}@{host}"
            return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url


def _remote(root: Path, branch: str) -> tuple[str, str]:
    """(remote name, URL) of origin, else of the branch's upstream remote; ("", "") if none."""
    names = [n for n in _text(_git(root, "remote")).splitlines() if n]
    chosen = ""
    if "origin" in names:
        chosen = "origin"
    elif branch:
        upstream = _text(_git(root, "config", "--get", f"branch.{branch}.remote", check=False))
        chosen = upstream if upstream in names else ""
    if not chosen and len(names) == 1:
        chosen = names[0]
    if not chosen:
        return "", ""
    url = _text(_git(root, "remote", "get-url", chosen, check=False))
    return (chosen, url) if url else ("", "")


# --- untracked files ----------------------------------------------------------------------------


def _tracked(root: Path, relative: str) -> bool:
    return bool(_git(root, "ls-files", "-z", "--", relative).stdout)


def _untracked_files(root: Path, paths: Sequence[Path]) -> list[str]:
    """Repo-relative (posix) paths of the untracked files among ``paths``: a file named
    explicitly is taken even when .gitignore matches it; a folder gives its untracked files
    that .gitignore does not exclude."""
    found: dict[str, None] = {}
    for given in paths:
        absolute = Path(os.path.abspath(given))
        if not absolute.exists() and not absolute.is_symlink():
            raise GitError(f"--include-untracked: {given} does not exist")
        try:
            relative = absolute.parent.resolve().joinpath(absolute.name).relative_to(root)
        except ValueError:
            raise GitError(f"--include-untracked: {given} is outside the repository "
                           f"{root}") from None
        rel = relative.as_posix()
        if absolute.is_dir() and not absolute.is_symlink():
            listed = _git(root, "ls-files", "-z", "--others", "--exclude-standard", "--",
                          rel or ".").stdout
            found.update(dict.fromkeys(p.decode(errors="surrogateescape")
                                       for p in listed.split(b"\0") if p))
        elif not _tracked(root, rel):
            found[rel] = None
    return list(found)


# --- capture ------------------------------------------------------------------------------------


def _diff(root: Path, untracked: Sequence[str]) -> str:
    args = [*_DIFF_CONFIG, "diff", "--binary", "--no-color", "--no-ext-diff", "--no-textconv",
            "--src-prefix=a/", "--dst-prefix=b/", "HEAD", "--"]
    if not untracked:
        return _git(root, *args).stdout.decode("utf-8", errors="surrogateescape")
    index = Path(_text(_git(root, "rev-parse", "--git-path", "index")))
    index = index if index.is_absolute() else root / index
    with tempfile.TemporaryDirectory(prefix="bosun-index-") as tmp:
        temp_index = Path(tmp) / "index"
        if index.is_file():
            shutil.copyfile(index, temp_index)
        _git(root, "add", "--intent-to-add", "--force", "--", *untracked, index_file=temp_index)
        output = _git(root, *args, index_file=temp_index).stdout
    return output.decode("utf-8", errors="surrogateescape")


def capture(root: Path, include_untracked: Sequence[Path] = ()) -> GitState:
    """The git state of the work tree at ``root`` (see the module docstring)."""
    root = root.resolve()
    commit = _text(_git(root, "rev-parse", "--verify", "-q", "HEAD^{commit}", check=False))
    if not commit:
        raise GitError(f"the repository {root} has no commit yet: commit the code first")
    branch = _text(_git(root, "symbolic-ref", "-q", "--short", "HEAD", check=False))
    warnings: list[str] = []
    remote_name, url = _remote(root, branch)
    if url:
        repository = clean_remote_url(url, root)
        if not _text(_git(root, "branch", "-r", "--contains", commit, check=False)):
            warnings.append(f"commit {commit[:12]} is on no branch of remote '{remote_name}' "
                            "known here: push it, or an agent cannot check it out")
    else:
        repository = str(root)
        warnings.append(f"the repository has no remote: the task points at the local path "
                        f"{root}, which only an agent on this machine can read")
    untracked = _untracked_files(root, include_untracked)
    diff = _diff(root, untracked)
    return GitState(root=root, repository=repository, branch=branch, commit=commit, diff=diff,
                    untracked=tuple(untracked), warnings=tuple(warnings))
