"""Fetching a task's code: clone (through a local mirror cache) and apply the recorded diff.

ClearML agent flow step "Clone the code from a git repository; apply any uncommitted changes
recorded". The revision is the task's ``script.version_num`` (commit), else ``script.tag``, else
the head of ``script.branch``, else the repository's default branch.

Cache layout (``agent.vcs_cache.path``, one entry per repository URL without credentials)::

    <root>/<slug>-<hash12>/       a bare mirror: refs/heads/*, refs/tags/*, refs/bosun/keep/*
    <root>/<slug>-<hash12>.lock   flock: shared while a task's tree is cloned from the mirror,
                                  exclusive while the mirror is created or fetched

A wanted commit already in the mirror is cloned without any network traffic (the warm path);
otherwise the mirror is fetched first. The task's tree is ``git clone --local`` of the mirror
(objects are hard-linked, so it is fast and fully independent of the mirror) with ``origin``
pointing at the original URL. Credentials never reach the disk, a command line, a log line or
an error: git gets them from a credential helper that reads its environment (git_credentials),
and everything git prints goes through the masker.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from bosun.agent.file_lock import file_lock
from bosun.agent.git_credentials import (
    SCP,
    URL,
    GitAuth,
    GitCredentials,
    host_of,
    is_local,
    strip_credentials,
    url_secrets,
)
from bosun.agent.secret_mask import SecretMasker

Log = Callable[[str], None]

DEFAULT_TIMEOUT_S = 1800.0
_LOCAL_TIMEOUT_S = 300.0

_HEX = re.compile(r"^[0-9a-fA-F]{4,64}$")
_FULL_SHA = re.compile(r"^(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})$")
_SLUG_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_FETCH_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
_BRANCH_PREFIXES = ("refs/heads/", "refs/remotes/origin/", "remotes/origin/", "origin/")


class VcsError(Exception):
    """Fetching or patching the code failed. ``reason``: one line for the task's status
    message; ``detail``: the longer text for the task log (git's output). Both are masked by
    whoever raises."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return self.reason


# ---------------------------------------------------------------------------------------------
# Running git


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"  # never ask for a user name or password
    env.pop("GIT_ASKPASS", None)
    env.pop("SSH_ASKPASS", None)
    env["LC_ALL"] = "C"  # error messages we can summarize
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    return env


_BASE = ("git", "-c", "credential.helper=", "-c", "advice.detachedHead=false",
         "-c", "core.askPass=")


@dataclass
class _Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return "\n".join(s.strip("\n") for s in (self.stderr, self.stdout) if s.strip())


def _run_git(args: Sequence[str], cwd: Path | None, timeout_s: float,
             stdin: bytes | None = None, auth: GitAuth | None = None) -> _Result:
    """Run git in its own session (no controlling terminal, so ssh cannot prompt either);
    the whole process group is killed on timeout. `auth`: the login git may use, handed over
    through the credential helper and the environment."""
    env = _git_env()
    config: list[str] = []
    if auth is not None:
        env.update(auth.environment())
        config = auth.config()
    proc = subprocess.Popen(
        [*_BASE, *config, *args], cwd=cwd, env=env, start_new_session=True,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(stdin, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return _Result(-9, out.decode(errors="replace"),
                       err.decode(errors="replace") + f"\ntimed out after {timeout_s:.0f}s")
    return _Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


_GENERIC = "Could not read from remote repository."


def _summary(result: _Result) -> str:
    """The line of git's output that says what went wrong: the first ``fatal:`` / ``error:``,
    or, when that is only "Could not read from remote repository.", the line before it (ssh's
    "Permission denied (publickey)." and the like)."""
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        prefix = next((p for p in ("fatal:", "error:") if line.startswith(p)), None)
        if prefix is None:
            continue
        message = line[len(prefix):].strip()
        if message == _GENERIC and i > 0:
            before = lines[i - 1]
            return before.removeprefix("fatal:").removeprefix("error:").strip()
        return message
    return lines[-1] if lines else f"exit code {result.returncode}"


def _slug(clean_url: str) -> str:
    """A readable directory name for a repository: ``github.com_org_repo``."""
    text = clean_url
    if URL.match(text):
        parts = urlsplit(text)
        text = f"{parts.hostname or ''}/{parts.path}"
    elif (scp := SCP.match(text)) is not None:
        text = f"{scp.group('host')}/{scp.group('path')}"
    pieces = [p for p in re.split(r"[/\\:]+", text) if p]
    slug = _SLUG_CHARS.sub("_", "_".join(pieces[-3:])).strip("._-")
    return slug.removesuffix(".git")[-60:] or "repo"


def cache_key(repository: str) -> str:
    """The identity of a repository in the cache: the URL without credentials, trailing
    ``/`` and ``.git``, host lower-cased; a local path (or ``file://`` URL) made an absolute
    path."""
    url = strip_credentials(repository.strip())
    if url.lower().startswith("file://"):
        parts = urlsplit(url)
        if parts.netloc in ("", "localhost"):
            url = unquote(parts.path)
    if is_local(url):
        return str(Path(url).expanduser().resolve())
    if URL.match(url):
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")
        netloc_text = netloc[0] + netloc[1] + netloc[2].lower()
        url = urlunsplit((parts.scheme.lower(), netloc_text, parts.path, parts.query, ""))
    else:
        user_host, _, path = url.partition(":")
        url = f"{user_host.lower()}:{path}"
    return url.rstrip("/").removesuffix(".git").rstrip("/")


# ---------------------------------------------------------------------------------------------
# Checkout


class RepoCache:
    """Checks out task code, through per-repository bare mirrors under ``root`` when
    ``enabled`` (``agent.vcs_cache``), or by a plain clone otherwise."""

    def __init__(self, root: Path, enabled: bool, credentials: GitCredentials, log: Log,
                 masker: SecretMasker, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.root = Path(root).expanduser()
        self.enabled = enabled
        self.credentials = credentials
        self.masker = masker
        self.timeout_s = timeout_s
        self._log_fn = log
        self._auth: GitAuth | None = None  # the current checkout's login, if it needs one
        masker.add(credentials.password)

    # -- helpers ------------------------------------------------------------------------------

    def _log(self, line: str) -> None:
        self._log_fn(self.masker.mask(line))

    def _error(self, reason: str, detail: str = "") -> VcsError:
        return VcsError(self.masker.mask(reason), self.masker.mask(detail))

    def _git(self, args: Sequence[str], cwd: Path | None, *, what: str = "",
             network: bool = False, check: bool = True) -> _Result:
        timeout = self.timeout_s if network else min(self.timeout_s, _LOCAL_TIMEOUT_S)
        result = _run_git(args, cwd, timeout, auth=self._auth if network else None)
        if check and result.returncode != 0:
            what = what or "git " + " ".join(args[:2])
            raise self._error(f"{what} failed: {_summary(result)}", result.output)
        return result

    def _rev(self, repo: Path, rev: str) -> str | None:
        result = self._git(["rev-parse", "-q", "--verify", rev], repo, check=False)
        return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None

    def mirror_dir(self, repository: str) -> Path:
        """Where the bare mirror of ``repository`` lives (whether it exists yet or not)."""
        key = cache_key(repository)
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return self.root / f"{_slug(key)}-{digest}"

    # -- public -------------------------------------------------------------------------------

    def checkout(self, repository: str, target: Path, *, commit: str = "", tag: str = "",
                 branch: str = "") -> str:
        """Make ``target`` (absent or empty) a checkout of ``repository`` at the task's
        revision: ``commit``, else ``tag``, else the head of ``branch``, else the default
        branch. Returns the checked-out commit sha; raises VcsError."""
        repository = (repository or "").strip()
        commit, tag, branch = (commit or "").strip(), (tag or "").strip(), (branch or "").strip()
        if not repository:
            raise VcsError("the task has no repository to check out")
        for secret in url_secrets(repository):
            self.masker.add(secret)
        clean = strip_credentials(repository)
        self._auth = self.credentials.auth_for(repository)
        if is_local(repository):
            local = Path(repository).expanduser()
            if not local.is_absolute():
                raise self._error(f"repository path {repository} is not absolute")
            fetch_url = clean = str(local)
        else:
            fetch_url = self.credentials.fetch_url(repository)
        target = Path(target)
        created = not target.exists()
        if not created and (not target.is_dir() or any(target.iterdir())):
            raise self._error(f"checkout target {target} exists and is not an empty directory")
        started = time.monotonic()
        try:
            if self.enabled:
                self._clone_cached(clean, fetch_url, target, commit=commit,
                                   default=not (commit or tag or branch))
            else:
                self._clone_direct(clean, fetch_url, target, commit=commit)
            self._git(["remote", "set-url", "origin", clean], target)
            sha, name, label = self._resolve(target, clean, commit=commit, tag=tag,
                                             branch=branch)
            self._switch(target, sha, name)
            self._submodules(target, clean)
        except BaseException:
            if created:
                shutil.rmtree(target, ignore_errors=True)
            else:
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            raise
        self._log(f"vcs: checked out {sha} ({label}) in {time.monotonic() - started:.2f}s")
        return sha

    # -- cloning ------------------------------------------------------------------------------

    def _clone_direct(self, clean: str, fetch_url: str, target: Path, *, commit: str) -> None:
        self._log(f"vcs: cloning {clean} (cache disabled)")
        started = time.monotonic()
        self._git(["clone", "-q", "--no-checkout", "--", fetch_url, str(target)], None,
                  what=f"git clone {fetch_url}", network=True)
        self._log(f"vcs: cloned in {time.monotonic() - started:.2f}s")
        if commit and _FULL_SHA.match(commit) and not self._rev(target, f"{commit}^{{commit}}"):
            # A commit no branch or tag reaches (a PR ref, a force-pushed one): ask for it.
            self._git(["fetch", "-q", "--", fetch_url, commit], target, check=False,
                      network=True)

    def _clone_cached(self, clean: str, fetch_url: str, target: Path, *, commit: str,
                      default: bool) -> None:
        mirror = self.mirror_dir(clean)
        lock = mirror.with_name(mirror.name + ".lock")
        self.root.mkdir(parents=True, exist_ok=True)
        if commit and _HEX.match(commit):
            with file_lock(lock, exclusive=False):
                if (mirror / "HEAD").exists() and self._rev(mirror, f"{commit}^{{commit}}"):
                    self._log(f"vcs: cache hit: {commit} already in {mirror.name}, no fetch")
                    self._clone_from_mirror(mirror, target)
                    return
        with file_lock(lock, exclusive=True):
            if (mirror / "HEAD").exists():
                self._fetch(mirror, clean, fetch_url)
            else:
                self._create_mirror(mirror, clean, fetch_url)
            if commit and _FULL_SHA.match(commit) and not self._rev(mirror, f"{commit}^{{commit}}"):
                self._log(f"vcs: {commit} is on no branch or tag, fetching it by id")
                self._git(["fetch", "-q", "--", fetch_url, f"{commit}:refs/bosun/keep/{commit}"],
                          mirror, check=False, network=True)
            if default:
                self._update_default_branch(mirror, fetch_url)
            self._clone_from_mirror(mirror, target)

    def _create_mirror(self, mirror: Path, clean: str, fetch_url: str) -> None:
        partial = mirror.with_name(mirror.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)  # left by a crash; we hold the lock
        self._git(["init", "-q", "--bare", str(partial)], None)
        try:
            # For people looking at the cache; fetches always name the URL explicitly, so
            # credentials are never written here.
            self._git(["config", "remote.origin.url", clean], partial)
            self._fetch(partial, clean, fetch_url)
            partial.rename(mirror)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise

    def _fetch(self, mirror: Path, clean: str, fetch_url: str) -> None:
        self._log(f"vcs: fetching {clean}")
        started = time.monotonic()
        self._git(["fetch", "-q", "--prune", "--", fetch_url, *_FETCH_REFSPECS], mirror,
                  what=f"git fetch {fetch_url}", network=True)
        self._log(f"vcs: fetched in {time.monotonic() - started:.2f}s")

    def _update_default_branch(self, mirror: Path, fetch_url: str) -> None:
        """Point the mirror's HEAD at the remote's default branch (a clone of the mirror then
        gets it as ``origin/HEAD``)."""
        result = self._git(["ls-remote", "--symref", "--", fetch_url, "HEAD"], mirror,
                           what=f"git ls-remote {fetch_url}", network=True)
        for line in result.stdout.splitlines():
            if line.startswith("ref: ") and line.endswith("\tHEAD"):
                ref = line[len("ref: "):].split("\t", 1)[0]
                self._git(["symbolic-ref", "HEAD", ref], mirror)
                return

    def _clone_from_mirror(self, mirror: Path, target: Path) -> None:
        started = time.monotonic()
        self._git(["clone", "-q", "--no-checkout", "--local", "--", str(mirror), str(target)],
                  None, what="git clone (from the cache)")
        self._log(f"vcs: working tree cloned from the cache in "
                  f"{time.monotonic() - started:.2f}s")

    # -- revision -----------------------------------------------------------------------------

    def _resolve(self, repo: Path, clean: str, *, commit: str, tag: str,
                 branch: str) -> tuple[str, str | None, str]:
        """(sha, local branch name or None for a detached HEAD, label for the log)."""
        if commit:
            sha = self._rev(repo, f"{commit}^{{commit}}") if _HEX.match(commit) else None
            if not sha:
                raise self._error(f"commit {commit} not found in {clean}")
            name = None
            if branch:
                name = self._remote_branch(repo, branch) or _strip_branch(branch)
            return sha, name, name or "detached"
        if tag:
            for candidate in dict.fromkeys([tag, tag.removeprefix("refs/tags/")]):
                sha = self._rev(repo, f"refs/tags/{candidate}^{{commit}}")
                if sha:
                    return sha, None, f"tag {candidate}"
            raise self._error(f"tag {tag} not found in {clean}")
        if branch:
            name = self._remote_branch(repo, branch)
            if not name:
                raise self._error(f"branch {branch} not found in {clean}")
            sha = self._rev(repo, f"refs/remotes/origin/{name}^{{commit}}")
            assert sha is not None
            return sha, name, name
        head = self._git(["symbolic-ref", "-q", "refs/remotes/origin/HEAD"], repo, check=False)
        ref = head.stdout.strip()
        sha = self._rev(repo, f"{ref}^{{commit}}") if ref else None
        if not sha:
            raise self._error(f"{clean} has no default branch (is it empty?)")
        name = ref.removeprefix("refs/remotes/origin/")
        return sha, name, name

    def _remote_branch(self, repo: Path, branch: str) -> str | None:
        for candidate in dict.fromkeys([branch, _strip_branch(branch)]):
            if self._rev(repo, f"refs/remotes/origin/{candidate}^{{commit}}"):
                return candidate
        return None

    def _switch(self, repo: Path, sha: str, name: str | None) -> None:
        if name is None:
            self._git(["checkout", "-q", "-f", "--detach", sha], repo, what="git checkout")
            return
        self._git(["checkout", "-q", "-f", "-B", name, sha], repo, what="git checkout")
        if self._rev(repo, f"refs/remotes/origin/{name}"):
            self._git(["branch", "-q", f"--set-upstream-to=origin/{name}", name], repo,
                      check=False)

    def _submodules(self, repo: Path, clean: str) -> None:
        if not (repo / ".gitmodules").is_file():
            return
        self._log("vcs: updating submodules")
        started = time.monotonic()
        config = ["-c", "protocol.file.allow=always"]
        for new, old in self.credentials.submodule_rewrites(host_of(clean)):
            config += ["-c", f"url.{new}.insteadOf={old}"]
        self._git([*config, "submodule", "update", "--init", "--recursive", "-q"], repo,
                  what="git submodule update", network=True)
        self._log(f"vcs: submodules updated in {time.monotonic() - started:.2f}s")


def _strip_branch(branch: str) -> str:
    for prefix in _BRANCH_PREFIXES:
        if branch.startswith(prefix):
            return branch[len(prefix):]
    return branch


# ---------------------------------------------------------------------------------------------
# The recorded diff


def is_script_body(diff: str) -> bool:
    """ClearML semantics of ``script.diff``: text that does not start with ``diff `` (after
    leading whitespace) is the literal body of the script, not a patch."""
    return bool(diff and diff.strip()) and not diff.lstrip().startswith("diff ")


def apply_diff(workdir: Path, diff: str, log: Log) -> None:
    """Apply the task's uncommitted changes (a ``git diff [--binary]``) to the checkout at
    ``workdir`` (the repository root): ``git apply``, else ``git apply --3way``; raises
    VcsError naming the commit with git's complaints (the rejected hunks) as the detail.
    ``--unidiff-zero`` as clearml-agent: the hunk clearml-task adds to put ``Task.init`` at
    the top of the script has no context lines (``@@ -0,0 +1,4 @@``), which git refuses
    without it."""
    if not diff or not diff.strip():
        return
    text = diff if diff.endswith("\n") else diff + "\n"
    data = text.encode("utf-8", errors="surrogateescape")
    workdir = Path(workdir)
    started = time.monotonic()
    options = ["--unidiff-zero", "--whitespace=nowarn", "-"]
    plain = _run_git(["apply", *options], workdir, _LOCAL_TIMEOUT_S, data)
    if plain.returncode == 0:
        log(f"vcs: applied uncommitted changes with git apply in "
            f"{time.monotonic() - started:.2f}s")
        return
    log("vcs: git apply failed, trying git apply --3way")
    merged = _run_git(["apply", "--3way", *options], workdir,
                      _LOCAL_TIMEOUT_S, data)
    if merged.returncode == 0:
        # --3way stages what it applied; leave the changes unstaged, as a plain apply does.
        _run_git(["reset", "-q"], workdir, _LOCAL_TIMEOUT_S)
        log(f"vcs: applied uncommitted changes with git apply --3way in "
            f"{time.monotonic() - started:.2f}s")
        return
    head = _run_git(["rev-parse", "HEAD"], workdir, _LOCAL_TIMEOUT_S)
    sha = head.stdout.strip() if head.returncode == 0 else "the checked-out commit"
    detail = (f"git apply:\n{plain.output or f'exit code {plain.returncode}'}\n"
              f"git apply --3way:\n{merged.output or f'exit code {merged.returncode}'}")
    raise VcsError(f"uncommitted changes (diff) do not apply to {sha}", detail)
