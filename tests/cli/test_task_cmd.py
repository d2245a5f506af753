"""`bosun task ...` as a user runs it (a subprocess) against a real server, with real git repos:
capture and byte-for-byte reproduction of local changes, a script outside a repo, `logs -f`,
`wait` exit codes, the queue/status commands and one-line errors."""

from __future__ import annotations

import json
import os
import queue as queue_module
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bosun.client import Session
from bosun.task_capture.git_state import repo_root
from tests.support.agent_env import git, make_repo
from tests.support.server_process import ServerProcess
from tests.task_capture.test_git_state import reproduce, tree_files

UNREACHABLE = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("task-cli")


@pytest.fixture(scope="module")
def server(work: Path) -> Iterator[ServerProcess]:
    with ServerProcess(str(work / "server.db")) as proc:
        yield proc


@pytest.fixture(scope="module")
def env(work: Path, server: ServerProcess) -> dict[str, str]:
    """The user's environment: the server in CLEARML_API_HOST, no clearml.conf at all."""
    home = work / "home"
    home.mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("BOSUN_", "CLEARML_"))}
    return {**base, "HOME": str(home), "CLEARML_API_HOST": server.url,
            "CLEARML_API_ACCESS_KEY": "key", "CLEARML_API_SECRET_KEY": "secret"}


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[Session]:
    with Session(server.url, "key", "secret") as session:
        yield session


def _argv(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "bosun", *args]


def bosun(env: dict[str, str], *args: str, cwd: Path | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_argv(args), capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd)


def bosun_all(env: dict[str, str], *commands: Sequence[str], cwd: Path | None = None
              ) -> list[subprocess.CompletedProcess[str]]:
    """Several independent commands at once (each CLI start costs ~0.5 s)."""
    procs = [subprocess.Popen(_argv(c), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=cwd) for c in commands]
    results = []
    for command, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return results


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message, message
    assert message.startswith("bosun: error: "), message
    for needle in needles:
        assert needle in message, message


def _task(api: Session, task_id: str) -> dict[str, Any]:
    return dict(api.call("tasks.get_by_id", {"task": task_id})["task"])


def _new_task(api: Session, status: str = "created", **fields: Any) -> str:
    task_id = str(api.call("tasks.create", {"name": f"t-{uuid.uuid4().hex[:6]}", **fields})["id"])
    if status != "created":
        api.call("tasks.started", {"task": task_id, "force": True})
    if status in ("completed", "failed", "stopped"):
        api.call(f"tasks.{status}", {"task": task_id, "force": True})
    return task_id


# --- create ---------------------------------------------------------------------------------------


def test_create_from_a_repo_with_local_changes_reproduces_it(
    work: Path, env: dict[str, str], api: Session
) -> None:
    repo, sha = make_repo(work / "r1", {
        "src/train.py": "import sys\nprint('v1', sys.argv)\n", "lib/util.py": "X = 1\n",
        "README.md": "# demo\n", "assets/logo.bin": ""})
    (repo / "assets" / "logo.bin").write_bytes(bytes(range(256)))
    git(repo, "commit", "-q", "-am", "logo")
    sha = git(repo, "rev-parse", "HEAD")
    git(repo, "remote", "add", "origin", "https://alice:hunter2@example.com/org/proj.git")
    (repo / "src" / "train.py").write_text("import sys\nprint('v2', sys.argv)\n")  # unstaged
    (repo / "assets" / "logo.bin").write_bytes(bytes(reversed(range(256))) * 3)
    (repo / "lib" / "new.py").write_text("NEW = True\n")
    git(repo, "add", "lib/new.py")  # staged new file
    (repo / "src" / "extra.cfg").write_text("[untracked]\nnamed = yes\n")
    (repo / "scratch.txt").write_text("untracked and not named\n")

    result = bosun(env, "task", "create", "--script", "train.py", "--args", "--lr 0.1",
                   "--include-untracked", "extra.cfg", "--project", "cli proj (v1)",
                   "--name", "repro", "--json", cwd=repo / "src")
    assert result.returncode == 0, result.stderr
    task_id = json.loads(result.stdout)["id"]
    assert "is on no branch of remote 'origin'" in result.stderr  # never pushed
    task = _task(api, task_id)
    script = task["script"]
    assert script["repository"] == "https://example.com/org/proj.git"
    assert "hunter2" not in json.dumps(task) and "alice" not in json.dumps(task)
    assert (script["branch"], script["version_num"]) == ("main", sha)
    assert (script["working_dir"], script["entry_point"]) == ("src", "train.py --lr 0.1")
    assert task["hyperparams"]["Args"]["lr"]["value"] == "0.1"
    assert task["name"] == "repro" and task["status"] == "created"

    copy = reproduce(repo, script["version_num"], script["diff"], work / "r1-copy")
    expected = tree_files(repo)
    del expected["scratch.txt"]
    assert tree_files(copy) == expected


def test_create_with_requirements_container_python_and_queue(
    work: Path, env: dict[str, str], api: Session
) -> None:
    repo, _ = make_repo(work / "r2", {"job.py": "print('job')\n", "requirements.txt": "rich\n"})
    (work / "reqs.txt").write_text("numpy==2.0\n-r more.txt\n")
    (work / "more.txt").write_text("pandas\n")
    (work / "setup.sh").write_text("apt-get install -y curl\n")
    queue_name = f"q-{uuid.uuid4().hex[:6]}"
    queue_id = api.call("queues.create", {"name": queue_name})["id"]
    first, second = bosun_all(
        env,
        ["task", "create", "--script", str(repo / "job.py"), "--requirements",
         str(work / "reqs.txt"), "--docker", "python:3.12-slim", "--docker-args", "--gpus all",
         "--docker-setup", str(work / "setup.sh"), "--python", "3.12", "--queue", queue_name,
         "--project", "cli proj (v1)"],
        ["task", "create", "--script", "job.py", "--packages", "torch==2.5", "numpy",
         "--project", "cli proj (v1)", "--json"], cwd=repo)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    task = _task(api, first.stdout.strip())
    assert task["status"] == "queued" and task["execution"]["queue"] == queue_id
    assert task["container"] == {"image": "python:3.12-slim", "arguments": "--gpus all",
                                 "setup_shell_script": "apt-get install -y curl\n"}
    assert task["script"]["binary"] == "python3.12"
    assert task["script"]["requirements"] == {"pip": "numpy==2.0\npandas\n"}
    assert task["script"]["entry_point"] == "job.py" and task["script"]["working_dir"] == "."
    packaged = _task(api, json.loads(second.stdout)["id"])
    assert packaged["script"]["requirements"] == {"pip": "torch==2.5\nnumpy\n"}
    assert packaged["container"] == {} and packaged["script"]["binary"] == "python3"
    projects = api.call("projects.get_all", {"name": r"^cli proj \(v1\)$"})["projects"]
    assert len(projects) == 1  # found by exact name, not created again
    assert task["project"] == packaged["project"] == projects[0]["id"]
    # The repository's own requirements.txt when nothing is given:
    plain = bosun(env, "task", "create", "--script", "job.py", cwd=repo)
    assert _task(api, plain.stdout.strip())["script"]["requirements"] == {"pip": "rich\n"}


def test_create_outside_a_repository_stores_the_script(work: Path, env: dict[str, str],
                                                       api: Session) -> None:
    folder = work / "loose"
    folder.mkdir()
    if repo_root(folder) is not None:
        pytest.skip("the temporary folder is inside a git repository")
    body = "import sys\nprint('loose script', sys.argv[1:])\n"
    (folder / "job.py").write_text(body)
    result = bosun(env, "task", "create", "--script", "job.py", "--args", "--n 3", cwd=folder)
    assert result.returncode == 0, result.stderr
    script = _task(api, result.stdout.strip())["script"]
    assert script["diff"] == body and script["repository"] == ""
    assert script["entry_point"] == "job.py --n 3"


# --- logs / wait ----------------------------------------------------------------------------------


def _log(api: Session, task_id: str, *lines: str) -> None:
    now = int(time.time() * 1000)
    api.add_events([{"type": "log", "task": task_id, "level": "info", "worker": "w",
                     "msg": line, "timestamp": now} for line in lines])


def test_logs_follow_shows_lines_as_they_arrive(env: dict[str, str], api: Session) -> None:
    task_id = _new_task(api, "in_progress")
    _log(api, task_id, "line 1", "line 2")
    proc = subprocess.Popen(_argv(["task", "logs", task_id, "-f"]), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    lines: queue_module.Queue[str] = queue_module.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        seen = [lines.get(timeout=15), lines.get(timeout=15)]
        assert seen == ["line 1", "line 2"]
        _log(api, task_id, "line 3")
        seen.append(lines.get(timeout=10))  # shown while the task still runs
        assert proc.poll() is None and seen[-1] == "line 3"
        _log(api, task_id, "line 4", "line 5")
        api.call("tasks.completed", {"task": task_id})
        assert proc.wait(timeout=15) == 0, proc.stderr.read() if proc.stderr else ""
        reader.join(5)
        while not lines.empty():
            seen.append(lines.get())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen == [f"line {n}" for n in range(1, 6)]
    whole = bosun(env, "task", "logs", task_id)
    assert whole.returncode == 0 and whole.stdout.splitlines() == seen


def test_wait_exit_codes(env: dict[str, str], api: Session) -> None:
    done, failed, stopped = (_new_task(api, s) for s in ("completed", "failed", "stopped"))
    running, ends_later = _new_task(api, "in_progress"), _new_task(api, "in_progress")
    later = subprocess.Popen(_argv(["task", "wait", ends_later]), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    results = bosun_all(env, ["task", "wait", done], ["task", "wait", failed],
                        ["task", "wait", stopped, "--json"],
                        ["task", "wait", running, "--timeout", "0.5"])
    assert [r.returncode for r in results] == [0, 1, 2, 3], [r.stderr for r in results]
    assert f"task {done} completed" in results[0].stdout
    assert json.loads(results[2].stdout)["status"] == "stopped"
    assert "timed out after 0.5s" in results[3].stderr
    assert later.poll() is None
    api.call("tasks.failed", {"task": ends_later, "status_message": "boom"})
    out, _ = later.communicate(timeout=15)
    assert later.returncode == 1 and "failed: boom" in out


# --- queueing and status changes ------------------------------------------------------------------


def _project_and_queue(api: Session) -> tuple[str, str, str]:
    """(project id, its name, a new queue's name)."""
    name = f"life-{uuid.uuid4().hex[:6]}"
    project = str(api.call("projects.create", {"name": name})["id"])
    queue_name = f"q-{uuid.uuid4().hex[:6]}"
    api.call("queues.create", {"name": queue_name})
    return project, name, queue_name


SCRIPT = {"repository": "https://example.com/a.git", "branch": "main", "version_num": "c0ffee",
          "entry_point": "train.py", "working_dir": ".", "requirements": {"pip": "numpy\n"}}


def test_enqueue_show_list_dequeue(env: dict[str, str], api: Session) -> None:
    project, project_name, queue_name = _project_and_queue(api)
    task_id = _new_task(api, project=project, script=SCRIPT)
    enqueued = bosun(env, "task", "enqueue", task_id, "--queue", queue_name)
    assert enqueued.returncode == 0, enqueued.stderr
    assert _task(api, task_id)["status"] == "queued"
    listed, shown, table = bosun_all(env, ["task", "list", "--queue", queue_name, "--json"],
                                     ["task", "show", task_id],
                                     ["task", "list", "--project", project_name])
    assert [t["id"] for t in json.loads(listed.stdout)] == [task_id]
    for text in ("queued", queue_name, "https://example.com/a.git", "c0ffee", "train.py",
                 "numpy", project_name):
        assert text in shown.stdout, shown.stdout
    row = next(line for line in table.stdout.splitlines() if line.startswith(task_id))
    assert project_name in row and "queued" in row and "STATUS" in table.stdout
    dequeued = bosun(env, "task", "dequeue", task_id)
    assert dequeued.returncode == 0 and "now created" in dequeued.stdout, dequeued.stderr
    assert _task(api, task_id)["status"] == "created"
    [queue] = api.call("queues.get_all", {"name": f"^{queue_name}$"})["queues"]
    assert queue["entries"] == []


def test_clone_abort_reset(env: dict[str, str], api: Session) -> None:
    project, project_name, queue_name = _project_and_queue(api)
    task_id = _new_task(api, project=project, script=SCRIPT)
    cloned = bosun(env, "task", "clone", task_id, "--name", "copy", "--queue", queue_name)
    assert cloned.returncode == 0, cloned.stderr
    copy_id = cloned.stdout.strip()
    copy = _task(api, copy_id)
    assert copy["name"] == "copy" and copy["status"] == "queued"
    assert copy["script"]["version_num"] == "c0ffee" and copy["project"] == project
    aborted = bosun(env, "task", "abort", copy_id)
    assert aborted.returncode == 0 and "stopped" in aborted.stdout, aborted.stderr
    assert _task(api, copy_id)["status"] == "stopped"
    reset = bosun(env, "task", "reset", copy_id)
    assert reset.returncode == 0 and _task(api, copy_id)["status"] == "created"
    mine, queued = bosun_all(
        env, ["task", "list", "--project", project_name, "--status", "created", "--json"],
        ["task", "list", "--project", project_name, "--status", "queued"])
    assert {t["id"] for t in json.loads(mine.stdout)} == {task_id, copy_id}
    assert queued.stdout.strip() == "no tasks"


# --- errors and connection settings ---------------------------------------------------------------


def test_bad_inputs_are_one_line(work: Path, env: dict[str, str], api: Session) -> None:
    created = _new_task(api)
    unknown, missing, down, no_queue, not_running, no_config, abort_created = bosun_all(
        env, ["task", "show", "0" * 32], ["task", "create", "--script", "missing.py"],
        ["task", "list", "--api-host", UNREACHABLE],
        ["task", "enqueue", created, "--queue", "no-such-queue"], ["task", "wait", created],
        ["task", "list", "--config-file", str(work / "absent.conf")],
        ["task", "abort", created], cwd=work)
    one_line_error(unknown, f"no task with id {'0' * 32}")
    one_line_error(missing, "script missing.py not found")
    one_line_error(down, f"cannot reach the API server at {UNREACHABLE}")
    one_line_error(no_queue, "queue 'no-such-queue' does not exist")
    one_line_error(not_running, "neither queued nor running")
    one_line_error(no_config, "absent.conf")
    one_line_error(abort_created, "cannot abort task", "--force")
    assert _task(api, created)["status"] == "created"


def test_flags_beat_env_which_beats_the_config_file(work: Path, env: dict[str, str],
                                                    server: ServerProcess) -> None:
    config = work / "clearml.conf"
    config.write_text(f'api {{ api_server: "{server.url}"\n'
                      '  credentials { access_key: "k", secret_key: "s" } }\n')
    bad_env = {**env, "CLEARML_API_HOST": UNREACHABLE}
    no_env = {k: v for k, v in env.items() if k != "CLEARML_API_HOST"}
    flag_after, flag_before, env_wins = bosun_all(
        bad_env, ["task", "list", "--api-host", server.url],
        ["task", "--api-host", server.url, "list"], ["task", "list", "--config-file", str(config)])
    assert flag_after.returncode == 0, flag_after.stderr
    assert flag_before.returncode == 0, flag_before.stderr
    one_line_error(env_wins, UNREACHABLE)
    file_only = bosun(no_env, "queue", "--config-file", str(config), "list")
    assert file_only.returncode == 0 and "default" in file_only.stdout, file_only.stderr
