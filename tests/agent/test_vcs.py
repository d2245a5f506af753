"""The agent's code fetching, against real git repositories made in temporary directories."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from bosun.agent.git_credentials import GitCredentials
from bosun.agent.secret_mask import SecretMasker, mask_url
from bosun.agent.vcs import (
    RepoCache,
    VcsError,
    apply_diff,
    cache_key,
    is_script_body,
)
from tests.support.git_http_server import GitHttpServer

_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", "-c", "protocol.file.allow=always", *args], cwd=cwd,
                            env=_ENV, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"git {args}: {result.stderr}"
    return result.stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


class Upstream:
    """main: c1 (tag v1) -> c2; feature: c2 -> c3."""

    def __init__(self, root: Path) -> None:
        self.path = root / "upstream"
        self.path.mkdir()
        git(self.path, "init", "-q", "-b", "main")
        self.write("a.txt", "".join(f"line {i}\n" for i in range(1, 11)))
        self.write("b.txt", "bee\n")
        (self.path / "data.bin").write_bytes(bytes(range(256)) * 4)
        self.c1 = commit_all(self.path, "one")
        git(self.path, "tag", "v1")
        self.write("c.txt", "sea\n")
        self.c2 = commit_all(self.path, "two")
        git(self.path, "checkout", "-q", "-b", "feature")
        self.write("f.txt", "feature\n")
        self.c3 = commit_all(self.path, "three")
        git(self.path, "checkout", "-q", "main")

    def write(self, name: str, text: str) -> None:
        (self.path / name).write_text(text)

    @property
    def url(self) -> str:
        return self.path.as_uri()


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path)


class Harness:
    def __init__(self, root: Path, enabled: bool = True,
                 credentials: GitCredentials | None = None) -> None:
        self.root = root
        self.logs: list[str] = []
        self.masker = SecretMasker()
        self.cache = RepoCache(root / "cache", enabled, credentials or GitCredentials(),
                               self.logs.append, self.masker)
        self._n = 0

    def target(self) -> Path:
        self._n += 1
        return self.root / f"work{self._n}"

    def checkout(self, repository: str, **revision: str) -> tuple[str, Path]:
        target = self.target()
        self.logs.clear()
        sha = self.cache.checkout(repository, target, **revision)
        return sha, target


@pytest.fixture(params=[True, False], ids=["cache", "nocache"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    return Harness(tmp_path, enabled=request.param)


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD")


def current_branch(repo: Path) -> str:
    return git(repo, "rev-parse", "--abbrev-ref", "HEAD")


# -- revisions -------------------------------------------------------------------------------


def test_default_branch(harness: Harness, upstream: Upstream) -> None:
    sha, work = harness.checkout(str(upstream.path))
    assert sha == upstream.c2 == head(work)
    assert current_branch(work) == "main"
    assert (work / "c.txt").read_text() == "sea\n"
    assert git(work, "remote", "get-url", "origin") == str(upstream.path)
    assert any(line.startswith(f"vcs: checked out {sha} (main)") for line in harness.logs)


def test_commit(harness: Harness, upstream: Upstream) -> None:
    sha, work = harness.checkout(upstream.url, commit=upstream.c1)
    assert sha == upstream.c1 == head(work)
    assert current_branch(work) == "HEAD"  # detached
    assert not (work / "c.txt").exists()
    assert git(work, "status", "--porcelain") == ""


def test_short_commit_with_branch(harness: Harness, upstream: Upstream) -> None:
    sha, work = harness.checkout(upstream.url, commit=upstream.c1[:10], branch="main")
    assert sha == upstream.c1 == head(work)
    assert current_branch(work) == "main"


def test_commit_wins_over_tag_and_branch(harness: Harness, upstream: Upstream) -> None:
    sha, _ = harness.checkout(upstream.url, commit=upstream.c3, tag="v1", branch="main")
    assert sha == upstream.c3


def test_tag(harness: Harness, upstream: Upstream) -> None:
    sha, work = harness.checkout(upstream.url, tag="v1", branch="feature")
    assert sha == upstream.c1 == head(work)
    assert any("(tag v1)" in line for line in harness.logs)


@pytest.mark.parametrize("branch", ["feature", "origin/feature", "refs/heads/feature"])
def test_branch(harness: Harness, upstream: Upstream, branch: str) -> None:
    sha, work = harness.checkout(str(upstream.path), branch=branch)
    assert sha == upstream.c3 == head(work)
    assert current_branch(work) == "feature"
    assert git(work, "rev-parse", "--abbrev-ref", "@{upstream}") == "origin/feature"


def test_unknown_revisions(harness: Harness, upstream: Upstream) -> None:
    for revision, words in [({"commit": "0" * 40}, "commit 0000"),
                            ({"commit": "not-a-sha"}, "commit not-a-sha"),
                            ({"tag": "v9"}, "tag v9"), ({"branch": "nope"}, "branch nope")]:
        target = harness.target()
        with pytest.raises(VcsError) as caught:
            harness.cache.checkout(upstream.url, target, **revision)
        assert words in caught.value.reason and "not found" in caught.value.reason
        assert not target.exists()  # nothing half-made left behind


def test_nonexistent_repository(harness: Harness, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-repo"
    for repository in (str(missing), missing.as_uri()):
        target = harness.target()
        with pytest.raises(VcsError) as caught:
            harness.cache.checkout(repository, target)
        reason = caught.value.reason
        assert "\n" not in reason and "failed" in reason and "no-such-repo" in reason
        assert caught.value.detail
        assert not target.exists()
    cache = harness.root / "cache"
    assert not cache.exists() or not [p for p in cache.iterdir() if not p.name.endswith(".lock")]


def test_target_must_be_empty(harness: Harness, upstream: Upstream) -> None:
    target = harness.target()
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(VcsError, match="not an empty directory"):
        harness.cache.checkout(upstream.url, target)
    assert (target / "keep.txt").read_text() == "mine"
    empty = harness.target()
    empty.mkdir()
    assert harness.cache.checkout(upstream.url, empty) == upstream.c2


def test_submodules(harness: Harness, upstream: Upstream, tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    outer.mkdir()
    git(outer, "init", "-q", "-b", "main")
    git(outer, "submodule", "add", "-q", str(upstream.path), "lib")
    sha = commit_all(outer, "with submodule")
    got, work = harness.checkout(str(outer), commit=sha)
    assert got == sha
    assert (work / "lib" / "c.txt").read_text() == "sea\n"


# -- the cache -------------------------------------------------------------------------------


def test_cache_layout_and_independent_tree(tmp_path: Path, upstream: Upstream) -> None:
    h = Harness(tmp_path)
    _, work1 = h.checkout(upstream.url)
    _, work2 = h.checkout(str(upstream.path) + "/")  # same repository, another spelling
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    mirror = h.cache.mirror_dir(upstream.url)
    assert entries == [mirror.name, mirror.name + ".lock"]
    slug, digest = mirror.name.rsplit("-", 1)
    assert slug.endswith("_upstream") and len(digest) == 12
    assert git(mirror, "rev-parse", "--is-bare-repository") == "true"
    # The task's tree stands alone: no alternates into the mirror, its own commits stay its own.
    assert not (work1 / ".git" / "objects" / "info" / "alternates").exists()
    (work1 / "a.txt").write_text("changed\n")
    mine = commit_all(work1, "local")
    assert subprocess.run(["git", "cat-file", "-e", mine], cwd=mirror).returncode != 0
    assert git(work2, "rev-parse", "HEAD") == upstream.c2


def test_cache_hit_does_not_fetch(tmp_path: Path, upstream: Upstream) -> None:
    h = Harness(tmp_path)
    h.checkout(upstream.url, commit=upstream.c1)
    assert any(line.startswith("vcs: fetching") for line in h.logs)
    upstream.path.rename(tmp_path / "gone")  # a fetch now would fail: proves there is none
    sha, work = h.checkout(upstream.url, commit=upstream.c3, branch="feature")
    assert sha == upstream.c3 == head(work)
    assert not any(line.startswith("vcs: fetching") for line in h.logs)
    assert any("cache hit" in line for line in h.logs)


def test_new_commits_are_fetched(tmp_path: Path, upstream: Upstream) -> None:
    h = Harness(tmp_path)
    assert h.checkout(upstream.url)[0] == upstream.c2
    upstream.write("d.txt", "dee\n")
    c4 = commit_all(upstream.path, "four")
    sha, work = h.checkout(upstream.url, branch="main")  # a branch head is always refreshed
    assert sha == c4 and (work / "d.txt").exists()
    upstream.write("e.txt", "e\n")
    c5 = commit_all(upstream.path, "five")
    sha, _ = h.checkout(upstream.url, commit=c5)  # an unknown commit makes it fetch
    assert sha == c5
    assert any(line.startswith("vcs: fetching") for line in h.logs)


def test_commit_on_no_branch_is_fetched_by_id(tmp_path: Path, upstream: Upstream) -> None:
    git(upstream.path, "config", "uploadpack.allowAnySHA1InWant", "true")
    git(upstream.path, "checkout", "-q", "--detach")
    upstream.write("x.txt", "orphan\n")
    orphan = commit_all(upstream.path, "orphan")
    git(upstream.path, "checkout", "-q", "main")
    for enabled in (True, False):
        h = Harness(tmp_path / f"h{enabled}", enabled=enabled)
        (tmp_path / f"h{enabled}").mkdir()
        assert h.checkout(upstream.url, commit=orphan)[0] == orphan


def test_concurrent_checkouts_share_one_mirror(tmp_path: Path, upstream: Upstream) -> None:
    h = Harness(tmp_path)
    results: list[str] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        cache = RepoCache(tmp_path / "cache", True, GitCredentials(), lambda _: None,
                          SecretMasker())
        try:
            results.append(cache.checkout(upstream.url, tmp_path / f"t{i}", commit=upstream.c1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [upstream.c1] * 4
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 1
    assert h.cache.mirror_dir(upstream.url).is_dir()


def test_cache_disabled_makes_no_cache(tmp_path: Path, upstream: Upstream) -> None:
    h = Harness(tmp_path, enabled=False)
    sha, work = h.checkout(upstream.url, tag="v1")
    assert sha == upstream.c1
    assert not (tmp_path / "cache").exists()
    assert git(work, "remote", "get-url", "origin") == upstream.url


def test_cache_key() -> None:
    assert cache_key("https://u:p@GitHub.com/org/repo.git/") == "https://github.com/org/repo"
    assert cache_key("https://github.com/org/repo") == "https://github.com/org/repo"
    assert cache_key("git@GitHub.com:org/repo.git") == "git@github.com:org/repo"
    assert cache_key("file:///srv/x/repo") == cache_key("/srv/x/repo/")


# -- credentials -----------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PASSWORD = "Sup3r/S3cret:pw"  # needs URL-quoting, so both forms must be masked


@pytest.mark.parametrize("enabled", [True, False], ids=["cache", "nocache"])
def test_credentials_are_masked(tmp_path: Path, enabled: bool) -> None:
    creds = GitCredentials(user="alice", password=PASSWORD)
    h = Harness(tmp_path, enabled=enabled, credentials=creds)
    url = f"https://127.0.0.1:{closed_port()}/org/repo.git"
    assert PASSWORD not in creds.fetch_url(url)
    target = h.target()
    with pytest.raises(VcsError) as caught:
        h.cache.checkout(url, target, branch="main")
    err = caught.value
    texts = [err.reason, err.detail, str(err), *h.logs]
    for text in texts:
        for form in (PASSWORD, "Sup3r%2FS3cret%3Apw", "S3cret", "alice:"):
            assert form not in text, text
    assert "https://127.0.0.1" in err.reason and err.reason.startswith("git ")
    assert "\n" not in err.reason
    assert not target.exists()


def test_credentials_in_the_url_are_masked(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    url = f"https://bob:EmbeddedPw123@127.0.0.1:{closed_port()}/x.git"
    with pytest.raises(VcsError) as caught:
        h.cache.checkout(url, h.target())
    for text in [caught.value.reason, caught.value.detail, *h.logs]:
        assert "EmbeddedPw123" not in text
    assert h.masker.mask("oops EmbeddedPw123 leaked") == "oops **** leaked"


SERVED_PASSWORD = "Zq9-unguessable-77"


def _command_lines_holding(secret: bytes, seen: list[str], stop: threading.Event) -> None:
    """Look at every process's command line until `stop`, noting any that holds `secret`."""
    while not stop.is_set():
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                data = cmdline.read_bytes()
            except OSError:
                continue
            if secret in data or quote(secret.decode(), safe="").encode() in data:
                seen.append(data.replace(b"\0", b" ").decode(errors="replace"))
        time.sleep(0.005)


@pytest.mark.parametrize("where", ["clearml.conf", "task url"])
@pytest.mark.parametrize("enabled", [True, False], ids=["cache", "nocache"])
def test_a_login_never_shows_in_a_command_line(tmp_path: Path, upstream: Upstream,
                                               where: str, enabled: bool) -> None:
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(upstream.path),
                    str(served / "repo.git")], check=True)
    with GitHttpServer(served, "alice", SERVED_PASSWORD, delay=0.3) as server:
        url = f"{server.url}/repo.git"
        if where == "clearml.conf":
            h = Harness(tmp_path, enabled=enabled,
                        credentials=GitCredentials(user="alice", password=SERVED_PASSWORD))
        else:
            h = Harness(tmp_path, enabled=enabled)
            url = url.replace("http://", f"http://alice:{SERVED_PASSWORD}@")
        seen: list[str] = []
        stop = threading.Event()
        watcher = threading.Thread(target=_command_lines_holding,
                                   args=(SERVED_PASSWORD.encode(), seen, stop))
        watcher.start()
        try:
            sha, _target = h.checkout(url, branch="main")
        finally:
            stop.set()
            watcher.join(10)
        assert sha == upstream.c2
        assert server.refused >= 1 and server.served >= 1  # it did have to log in
    assert seen == []
    for path in [*tmp_path.rglob("config"), *tmp_path.rglob("FETCH_HEAD")]:
        if path.is_file() and "served" not in path.parts:
            assert SERVED_PASSWORD not in path.read_text(errors="replace"), path
    assert all(SERVED_PASSWORD not in line for line in h.logs)


def test_a_wrong_login_fails_with_gits_reason(tmp_path: Path, upstream: Upstream) -> None:
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(upstream.path),
                    str(served / "repo.git")], check=True)
    with GitHttpServer(served, "alice", SERVED_PASSWORD) as server:
        h = Harness(tmp_path, credentials=GitCredentials(user="alice", password="wrong-pw-1"))
        with pytest.raises(VcsError) as caught:
            h.checkout(f"{server.url}/repo.git")
    assert "Authentication failed" in caught.value.reason, caught.value.reason
    assert "wrong-pw-1" not in caught.value.reason + caught.value.detail


def test_credentials_url_rewriting() -> None:
    """The URL git gets never holds credentials; the login goes to the helper."""
    creds = GitCredentials(user="u", password="p w")
    for url in ("https://h.com/o/r.git", "git@h.com:o/r.git", "ssh://git@h.com:22/o/r.git"):
        assert creds.fetch_url(url) == "https://h.com/o/r.git", url
        auth = creds.auth_for(url)
        assert auth is not None and (auth.origin, auth.user, auth.password) == (
            "https://h.com", "u", "p w")
    assert creds.fetch_url("/srv/repo") == "/srv/repo" and creds.auth_for("/srv/repo") is None
    embedded = creds.auth_for("https://old:x%2Fy@h.com:8443/o/r.git")  # the task's own wins
    assert embedded is not None and (embedded.origin, embedded.user, embedded.password) == (
        "https://h.com:8443", "old", "x/y")
    assert creds.fetch_url("https://old:x@h.com/o/r.git") == "https://h.com/o/r.git"
    token = GitCredentials().auth_for("https://ghp_token123@github.com/o/r")
    assert token is not None and token.password == "ghp_token123"
    limited = GitCredentials(user="u", password="p", host="github.com")
    assert limited.fetch_url("https://github.com/o/r") == "https://github.com/o/r"
    assert limited.auth_for("https://github.com/o/r") is not None
    assert limited.auth_for("https://gitlab.com/o/r") is None
    ssh = GitCredentials(force_ssh=True)
    assert ssh.fetch_url("https://github.com/o/r.git") == "git@github.com:o/r.git"
    assert ssh.fetch_url("git@github.com:o/r.git") == "git@github.com:o/r.git"
    assert ssh.auth_for("git@github.com:o/r.git") is None
    port = GitCredentials(force_ssh=True, ssh_port=2222, ssh_user="me")
    assert port.fetch_url("https://h.com/o/r.git") == "ssh://me@h.com:2222/o/r.git"
    # user/pass win over force_ssh, as in clearml.conf
    both = GitCredentials(user="u", password="p", force_ssh=True)
    assert both.fetch_url("https://h.com/o/r") == "https://h.com/o/r"
    assert both.submodule_rewrites("h.com") == [("https://h.com/", "git@h.com:")]


# -- the diff --------------------------------------------------------------------------------


def make_diff(upstream: Upstream, tmp_path: Path, base: str,
              edit: Callable[[Path], None]) -> str:
    """A ``git diff --binary`` of ``edit`` applied to a clone at ``base``, as the SDK records."""
    work = tmp_path / "author"
    subprocess.run(["git", "clone", "-q", str(upstream.path), str(work)], check=True)
    git(work, "checkout", "-q", base)
    edit(work)
    git(work, "add", "-A")
    return git(work, "diff", "--cached", "--binary") + "\n"


def test_diff_applies(tmp_path: Path, upstream: Upstream) -> None:
    def edit(work: Path) -> None:
        (work / "a.txt").write_text((work / "a.txt").read_text().replace("line 5", "five"))
        (work / "new.txt").write_text("brand new\n")
        (work / "b.txt").unlink()
        (work / "data.bin").write_bytes(bytes(reversed(range(256))) * 8)
        (work / "new.bin").write_bytes(b"\x00\xff\x01" * 100)

    diff = make_diff(upstream, tmp_path, upstream.c1, edit)
    assert "GIT binary patch" in diff and not is_script_body(diff)
    h = Harness(tmp_path)
    _, work = h.checkout(upstream.url, commit=upstream.c1)
    logs: list[str] = []
    apply_diff(work, diff, logs.append)
    author = tmp_path / "author"
    for name in ("a.txt", "new.txt", "data.bin", "new.bin"):
        assert (work / name).read_bytes() == (author / name).read_bytes(), name
    assert not (work / "b.txt").exists()
    assert any("with git apply in" in line for line in logs)
    assert git(work, "diff", "--cached", "--name-only") == ""


def test_empty_diff_is_a_no_op(tmp_path: Path) -> None:
    logs: list[str] = []
    apply_diff(tmp_path / "does-not-matter", "", logs.append)
    apply_diff(tmp_path / "does-not-matter", "  \n", logs.append)
    assert logs == []


def test_diff_needing_three_way(tmp_path: Path, upstream: Upstream) -> None:
    # The diff changes line 2; upstream then changed line 4, inside the hunk's context.
    def edit(work: Path) -> None:
        (work / "a.txt").write_text((work / "a.txt").read_text().replace("line 2\n", "two\n"))

    diff = make_diff(upstream, tmp_path, upstream.c2, edit)
    upstream.write("a.txt", (upstream.path / "a.txt").read_text().replace("line 4\n", "four\n"))
    moved = commit_all(upstream.path, "moved on")
    h = Harness(tmp_path)
    _, work = h.checkout(upstream.url, commit=moved)
    logs: list[str] = []
    apply_diff(work, diff, logs.append)
    text = (work / "a.txt").read_text()
    assert "two\n" in text and "four\n" in text
    assert any("--3way" in line and "applied" in line for line in logs)
    assert git(work, "diff", "--cached", "--name-only") == ""  # unstaged, like a plain apply


def test_conflicting_diff_fails(tmp_path: Path, upstream: Upstream) -> None:
    def edit(work: Path) -> None:
        (work / "a.txt").write_text((work / "a.txt").read_text().replace("line 2\n", "two\n"))

    diff = make_diff(upstream, tmp_path, upstream.c2, edit)
    upstream.write("a.txt", (upstream.path / "a.txt").read_text().replace("line 2\n", "TWO\n"))
    moved = commit_all(upstream.path, "conflict")
    h = Harness(tmp_path)
    _, work = h.checkout(upstream.url, commit=moved)
    with pytest.raises(VcsError) as caught:
        apply_diff(work, diff, lambda _: None)
    assert caught.value.reason == f"uncommitted changes (diff) do not apply to {moved}"
    assert "a.txt" in caught.value.detail and "--3way" in caught.value.detail


def test_garbage_diff_fails(tmp_path: Path, upstream: Upstream) -> None:
    _, work = Harness(tmp_path).checkout(upstream.url)
    with pytest.raises(VcsError, match="do not apply"):
        apply_diff(work, "diff --git a/zz b/zz\n@@ nonsense\n", lambda _: None)


def test_is_script_body() -> None:
    assert is_script_body("print('hello')\n")
    assert is_script_body("#!/bin/bash\necho hi\n")
    assert not is_script_body("diff --git a/x b/x\n")
    assert not is_script_body("\n  diff --git a/x b/x\n")
    assert not is_script_body("")
    assert not is_script_body("   \n")


# -- masking ---------------------------------------------------------------------------------


def test_mask_url() -> None:
    assert mask_url("https://u:p@h.com/x.git") == "https://****@h.com/x.git"
    assert mask_url("https://ghp_token@h.com/x") == "https://****@h.com/x"
    assert mask_url("fatal: unable to access 'https://u:p%40q@h.com:8443/x/': no") == (
        "fatal: unable to access 'https://****@h.com:8443/x/': no")
    assert mask_url("a https://a:b@x/ b http://c:d@y/") == "a https://****@x/ b http://****@y/"
    assert mask_url("ssh://git@h.com:22/x") == "ssh://****@h.com:22/x"
    assert mask_url("https://h.com/path@v1 and user@host") == "https://h.com/path@v1 and user@host"
    assert mask_url("no urls here") == "no urls here"


def test_secret_masker() -> None:
    masker = SecretMasker(["hunter2"])
    masker.add("")
    masker.add("ab")  # too short to mask
    masker.add("p@ss/word")
    masker.add("hunter2-long")
    assert masker.mask("pw hunter2, hunter2-long") == "pw ****, ****"
    assert masker.mask("quoted p%40ss%2Fword and raw p@ss/word") == "quoted **** and raw ****"
    assert masker.mask("ab cab") == "ab cab"
    assert masker.mask("see https://x:y@h/r") == "see https://****@h/r"
    assert masker.mask("") == ""


# What clearml-task appends to a task's diff to put Task.init at the top of its script: a hunk
# with no context lines, which git applies only with --unidiff-zero (as clearml-agent runs it).
TASK_INIT_HUNK = (
    "diff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n@@ -0,0 +1,4 @@\n"
    "+try: from allegroai import Task\n+except ImportError: from clearml import Task\n"
    '+(__name__ != "__main__") or Task.init()\n+\n'
)


def test_zero_context_hunk_after_a_diff_applies(tmp_path: Path, upstream: Upstream) -> None:
    def edit(work: Path) -> None:
        (work / "a.txt").write_text((work / "a.txt").read_text().replace("line 5", "five"))

    diff = make_diff(upstream, tmp_path, upstream.c2, edit) + TASK_INIT_HUNK
    _, work = Harness(tmp_path).checkout(upstream.url, commit=upstream.c2)
    refused = subprocess.run(["git", "apply", "--check", "-"], cwd=work, input=diff.encode(),
                             capture_output=True, check=False)
    assert refused.returncode != 0  # git's default: at least one line of context
    logs: list[str] = []
    apply_diff(work, diff, logs.append)
    lines = (work / "a.txt").read_text().splitlines()
    assert lines[:4] == ["try: from allegroai import Task",
                         "except ImportError: from clearml import Task",
                         '(__name__ != "__main__") or Task.init()', ""]
    assert lines[4:] == ["line 1", "line 2", "line 3", "line 4", "five",
                         "line 6", "line 7", "line 8", "line 9", "line 10"]
    assert any("with git apply in" in line for line in logs)
