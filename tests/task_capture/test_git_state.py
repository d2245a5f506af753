"""Capturing a checkout's state (remote, branch, commit, diff with named untracked files) and
building a task's script section from it, against real git repositories."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from bosun.task_capture.git_state import GitError, capture, clean_remote_url, repo_root
from bosun.task_capture.requirements_capture import capture_requirements
from bosun.task_capture.script_task import (
    CaptureError,
    ScriptSpec,
    args_hyperparams,
    build_script,
    python_binary,
)
from tests.support.agent_env import GIT_ENV, git, make_repo


def tree_files(root: Path) -> dict[str, tuple[bytes, bool]]:
    """Every file under ``root`` but .git: relative path -> (content, executable)."""
    files: dict[str, tuple[bytes, bool]] = {}
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if relative.parts[0] == ".git" or path.is_dir():
            continue
        executable = bool(path.stat().st_mode & stat.S_IXUSR)
        files[relative.as_posix()] = (path.read_bytes(), executable)
    return files


def reproduce(source: Path, commit: str, diff: str, dest: Path) -> Path:
    """A fresh clone of ``source`` at ``commit`` with ``diff`` applied by `git apply`."""
    subprocess.run(["git", "clone", "-q", str(source), str(dest)], check=True,
                   capture_output=True)
    git(dest, "checkout", "-q", "--detach", commit)
    if diff:
        subprocess.run(["git", "apply", "--whitespace=nowarn", "-"], cwd=dest, check=True,
                       input=diff.encode("utf-8", "surrogateescape"), capture_output=True,
                       env={**os.environ, **GIT_ENV})
    return dest


def _messy_repo(root: Path) -> tuple[Path, str]:
    """A committed repo, then: a modified, a deleted, a chmod-ed and a binary-changed tracked
    file, a staged new file, untracked files named and not named, an ignored file."""
    repo, sha = make_repo(root, {
        "train.py": "print('v1')\n", "gone.txt": "bye\n", "run.sh": "echo run\n",
        "pkg/__init__.py": "", ".gitignore": "*.log\n"})
    (repo / "blob.bin").write_bytes(bytes(range(256)) * 4)
    git(repo, "add", "blob.bin")
    git(repo, "commit", "-q", "-m", "binary")
    sha = git(repo, "rev-parse", "HEAD")
    (repo / "train.py").write_text("print('v2')\n# trailing space \n")
    (repo / "gone.txt").unlink()
    (repo / "run.sh").chmod(0o755)
    (repo / "blob.bin").write_bytes(bytes(reversed(range(256))) * 5)
    (repo / "pkg" / "staged.py").write_text("STAGED = 1\n")
    git(repo, "add", "pkg/staged.py")
    (repo / "pkg" / "staged.py").write_text("STAGED = 2\n")  # staged, then changed again
    (repo / "notes.txt").write_text("untracked but named\n")
    (repo / "empty.txt").write_text("")
    (repo / "data").mkdir()
    (repo / "data" / "a.csv").write_text("x,y\n1,2\n")
    (repo / "data" / "debug.log").write_text("ignored\n")
    (repo / "scratch.txt").write_text("untracked, not named\n")
    return repo, sha


def test_diff_reproduces_the_working_tree(tmp_path: Path) -> None:
    repo, sha = _messy_repo(tmp_path / "src")
    status_before = git(repo, "status", "--porcelain")  # (this refreshes the index)
    index_before = (repo / ".git" / "index").read_bytes()
    state = capture(repo, [repo / "notes.txt", repo / "empty.txt", repo / "data"])
    assert state.commit == sha and state.branch == "main"
    assert set(state.untracked) == {"notes.txt", "empty.txt", "data/a.csv"}
    assert (repo / ".git" / "index").read_bytes() == index_before  # the user's index untouched
    assert git(repo, "status", "--porcelain") == status_before
    assert not list((repo / ".git").glob("*.lock"))
    copy = reproduce(repo, sha, state.diff, tmp_path / "copy")
    expected = tree_files(repo)
    for left_out in ("scratch.txt", "data/debug.log"):
        expected.pop(left_out)
    assert tree_files(copy) == expected


def test_clean_diff_and_no_untracked(tmp_path: Path) -> None:
    repo, _ = make_repo(tmp_path, {"a.py": "print(1)\n"})
    state = capture(repo)
    assert state.diff == "" and state.untracked == ()
    assert state.repository == str(repo.resolve())
    assert any("no remote" in w for w in state.warnings)


@pytest.mark.parametrize(("url", "clean"), [
    ("https://user:s3cret@github.com/org/repo.git", "https://github.com/org/repo.git"),
    ("https://ghp_token@github.com/org/repo.git", "https://github.com/org/repo.git"),
    ("http://u:p@host:8080/r.git", "http://host:8080/r.git"),
    ("https://github.com/org/repo.git", "https://github.com/org/repo.git"),
    ("ssh://git:pw@host:2222/org/repo.git", "ssh://git@host:2222/org/repo.git"),
    ("ssh://git@host/org/repo.git", "ssh://git@host/org/repo.git"),
    ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
])
def test_remote_urls_lose_their_credentials(url: str, clean: str) -> None:
    assert clean_remote_url(url, Path("/r")) == clean


def test_relative_local_remote_becomes_absolute(tmp_path: Path) -> None:
    assert clean_remote_url("../up.git", tmp_path / "repo") == str(tmp_path / "up.git")


def test_origin_pushed_commit_has_no_warning(tmp_path: Path) -> None:
    upstream, sha = make_repo(tmp_path / "up", {"a.py": "print(1)\n"})
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(upstream), str(clone)], check=True)
    state = capture(clone)
    assert state.repository == str(upstream) and state.commit == sha and not state.warnings
    (clone / "a.py").write_text("print(2)\n")
    git(clone, "commit", "-q", "-am", "local only")
    assert any("push it" in w for w in capture(clone).warnings)


def test_upstream_remote_when_there_is_no_origin(tmp_path: Path) -> None:
    repo, _ = make_repo(tmp_path, {"a.py": ""})
    git(repo, "remote", "add", "upstream", "https://tok@example.com/x.git")
    git(repo, "remote", "add", "other", "https://example.com/other.git")
    git(repo, "config", "branch.main.remote", "upstream")
    assert capture(repo).repository == "https://example.com/x.git"


def test_detached_head_has_no_branch(tmp_path: Path) -> None:
    repo, sha = make_repo(tmp_path, {"a.py": ""})
    git(repo, "checkout", "-q", "--detach", sha)
    state = capture(repo)
    assert state.branch == "" and state.commit == sha


def test_errors_are_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    with pytest.raises(GitError, match="no commit yet"):
        capture(empty)
    repo, _ = make_repo(tmp_path / "r", {"a.py": ""})
    with pytest.raises(GitError, match="does not exist"):
        capture(repo, [repo / "missing.txt"])
    with pytest.raises(GitError, match="outside the repository"):
        capture(repo, [tmp_path / "empty"])
    assert repo_root(tmp_path / "empty") == empty.resolve()
    outside = tmp_path / "plain"
    outside.mkdir()
    assert repo_root(outside) != repo.resolve()


# --- the script section -----------------------------------------------------------------------


def test_script_in_a_subfolder(tmp_path: Path) -> None:
    repo, sha = make_repo(tmp_path, {"src/train.py": "print(1)\n", "requirements.txt":
                                     "-r base.txt\nnumpy\n", "base.txt": "rich==13.0\n"})
    (repo / "src" / "new.py").write_text("print('not committed')\n")
    built = build_script(ScriptSpec(script=Path("new.py"), args="--lr 0.1 --batch-size=8 data",
                                    python="3.12"), repo / "src")
    script = built.script
    assert script["working_dir"] == "src"
    assert script["entry_point"] == "new.py --lr 0.1 --batch-size=8 data"
    assert script["version_num"] == sha and script["binary"] == "python3.12"
    assert script["requirements"] == {"pip": "rich==13.0\nnumpy\n"}
    assert "src/new.py" in script["diff"]  # the uncommitted script travels in the diff
    assert any("not committed" in w for w in built.warnings)
    assert built.hyperparams["Args"]["lr"]["value"] == "0.1"
    assert built.hyperparams["Args"]["batch_size"]["value"] == "8"
    from_root = build_script(ScriptSpec(script=Path("src/train.py")), repo)
    assert from_root.script["working_dir"] == "."
    assert from_root.script["entry_point"] == "src/train.py"
    module = build_script(ScriptSpec(module="pkg.main", cwd=Path("src")), repo)
    assert module.script["entry_point"] == "-m pkg.main"
    assert module.script["working_dir"] == "src"


def test_project_repos_store_no_requirements(tmp_path: Path) -> None:
    repo, _ = make_repo(tmp_path, {"train.py": "", "requirements.txt": "numpy\n",
                                   "uv.lock": "version = 1\n"})
    built = build_script(ScriptSpec(script=Path("train.py")), repo)
    assert built.script["requirements"] == {} and "uv.lock" in built.requirements.source
    given = build_script(ScriptSpec(script=Path("train.py"), packages=["torch==2.5", "rich"]),
                         repo)
    assert given.script["requirements"] == {"pip": "torch==2.5\nrich\n"}
    pyproject = tmp_path / "p"
    pyproject.mkdir()
    (pyproject / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert capture_requirements(None, None, [pyproject]).pip == ""
    (pyproject / "pyproject.toml").write_text("[tool.ruff]\nline-length = 100\n")
    (pyproject / "requirements.txt").write_text("numpy\n")
    assert capture_requirements(None, None, [pyproject]).pip == "numpy\n"


def test_outside_a_repository_the_script_text_is_stored(tmp_path: Path) -> None:
    folder = tmp_path / "loose"
    folder.mkdir()
    (folder / "job.py").write_text("import sys\nprint(sys.argv)\n")
    if repo_root(folder) is not None:
        pytest.skip("the temporary folder is inside a git repository")
    built = build_script(ScriptSpec(script=folder / "job.py", args="--x 1"), tmp_path)
    assert built.script["diff"] == "import sys\nprint(sys.argv)\n"
    assert built.script["entry_point"] == "job.py --x 1" and built.script["repository"] == ""
    with pytest.raises(CaptureError, match="needs a git repository"):
        build_script(ScriptSpec(module="a.b"), folder)
    with pytest.raises(CaptureError, match="not found"):
        build_script(ScriptSpec(script=Path("nope.py")), folder)


def test_args_and_python_parsing() -> None:
    params = args_hyperparams(["pos", "--lr", "0.1", "--fast", "--shift", "-1", "-k=v", "--",
                               "--after"])
    assert {k: v["value"] for k, v in params.items()} == {"lr": "0.1", "fast": "True",
                                                          "shift": "-1", "k": "v"}
    assert python_binary(None) == "python3" and python_binary("python3.11") == "python3.11"
    assert python_binary("/opt/py/bin/python") == "/opt/py/bin/python"
    with pytest.raises(CaptureError):
        python_binary("latest")
