"""Container mode end to end, with a real podman: a daemon started with `--podman IMAGE` runs
each task in a container (its log on the server, the caches mounted), the task's own image,
arguments and setup script win, failures and aborts behave as in venv mode, and
`bosun agent build` makes a runnable folder and a runnable image.

The base image is built locally once (see tests/support/podman_image.py) and kept in podman's
storage; the timings printed here (-s) are the ones quoted in docs/containers.md.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bosun.client import Session
from tests.support.agent_env import (
    DaemonProcess,
    agent_env,
    git,
    make_repo,
    task_log,
    wait_for,
    wait_for_status,
)
from tests.support.podman_image import (
    BASE_IMAGE,
    derived_image,
    docker_problem,
    ensure_base_image,
    podman,
    require_podman,
    use_engine_env,
)
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.slow

ALT_IMAGE = "bosun-test-alt:1"

TRAIN = """\
import os, sys
import six

def read(path):
    return open(path).read().strip() if os.path.exists(path) else None

print("six", six.__version__)
print("in container:", os.path.exists("/run/.containerenv"))
print("api host:", os.environ.get("CLEARML_API_HOST"))
print("task id:", os.environ.get("CLEARML_TASK_ID"))
print("task env:", os.environ.get("MY_TASK_VAR"))
print("extra argument:", os.environ.get("BOSUN_EXTRA_ARG"))
print("task argument:", os.environ.get("TASK_ARG"))
print("extra setup:", read("/tmp/bosun-extra-setup"))
print("task setup:", read("/tmp/bosun-task-setup"))
print("image marker:", read("/etc/bosun-alt"))
print("message:", read("message.txt"))
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""

SLOW = """\
import time
for i in range(600):
    print("tick", i, flush=True)
    time.sleep(0.1)
"""


def timing(what: str, seconds: float) -> None:
    print(f"\n[timing] {what}: {seconds:.1f} s", file=sys.stderr)


@pytest.fixture(scope="module")
def engine() -> str:
    require_podman()
    use_engine_env()
    started = time.monotonic()
    built = ensure_base_image()
    timing(f"base image {BASE_IMAGE} " + ("built" if built else "found in podman's storage"),
           built or time.monotonic() - started)
    return "podman"


@pytest.fixture(scope="module")
def config(config: Path) -> Path:
    """The shared clearml.conf plus the container settings under test."""
    path = config
    path.write_text(path.read_text() + """
agent {
  enable_task_env: true
  extra_docker_arguments: ["-e", "BOSUN_EXTRA_ARG=from-extra-arguments"]
  extra_docker_shell_script: ["echo extra-setup > /tmp/bosun-extra-setup"]
}
""")
    return path


@pytest.fixture(scope="module")
def repo(work: Path) -> tuple[Path, str, str]:
    """(repo, commit, diff): the diff changes message.txt."""
    path, sha = make_repo(work, {"train.py": TRAIN, "slow.py": SLOW,
                                 "message.txt": "committed\n"})
    (path / "message.txt").write_text("from the uncommitted diff\n")
    diff = git(path, "diff") + "\n"
    git(path, "checkout", "--", "message.txt")
    return path, sha, diff


@pytest.fixture(scope="module")
def daemon(engine: str, work: Path, config: Path) -> Iterator[tuple[DaemonProcess, str]]:
    queue = f"containers-{uuid.uuid4().hex[:8]}"
    proc = DaemonProcess(config, work, "--queue", queue, "--create-queue",
                         "--podman", BASE_IMAGE).start()
    yield proc, queue
    assert proc.stop() == 0, proc.log()


@pytest.fixture
def api(agent_server: ServerProcess) -> Iterator[Session]:
    with Session(agent_server.url, "k", "s") as session:
        yield session


def _create(api: Session, name: str, script: dict[str, Any], **fields: Any) -> str:
    task_id: str = api.call("tasks.create", {"name": name, "script": script, **fields})["id"]
    return task_id


def _enqueue(api: Session, queue: str, name: str, script: dict[str, Any], **fields: Any) -> str:
    task_id = _create(api, name, script, **fields)
    api.call("tasks.enqueue", {"task": task_id, "queue_name": queue})
    return task_id


def _script(repo: tuple[Path, str, str], **overrides: Any) -> dict[str, Any]:
    path, sha, diff = repo
    script = {"repository": str(path), "version_num": sha, "diff": diff,
              "entry_point": "train.py", "working_dir": ".",
              "requirements": {"pip": "six==1.16.0\n"}}
    script.update(overrides)
    return script


def _env_section(**values: str) -> dict[str, Any]:
    return {"Environment": {k: {"section": "Environment", "name": k, "value": v}
                            for k, v in values.items()}}


def _containers(task_id: str) -> list[str]:
    out = podman("ps", "-a", "--filter", f"label=bosun.task={task_id}", "--format",
                 "{{.Names}}").stdout
    return out.split()


def _printed(api: Session, task_id: str) -> bool:
    return any(line.startswith("tick") for line in task_log(api, task_id))


def _gone(task_id: str) -> bool:
    return not _containers(task_id)


def test_task_runs_in_a_container_and_the_second_run_reuses_the_caches(
    api: Session, daemon: tuple[DaemonProcess, str], repo: tuple[Path, str, str],
    agent_server: ServerProcess,
) -> None:
    proc, queue = daemon
    started = time.monotonic()
    cold = _enqueue(api, queue, "cold", _script(repo),
                    hyperparams=_env_section(MY_TASK_VAR="from-the-task"))
    task = wait_for_status(api, cold, {"completed", "failed"}, 240, proc.log)
    cold_seconds = time.monotonic() - started
    lines = task_log(api, cold)
    assert task["status"] == "completed", "\n".join(lines)
    for expected in ("six 1.16.0", "in container: True", f"api host: {agent_server.url}",
                     f"task id: {cold}", "task env: from-the-task",
                     "extra argument: from-extra-arguments", "extra setup: extra-setup",
                     "message: from the uncommitted diff"):
        assert expected in lines, (expected, lines)
    assert any("container mode (podman)" in line for line in lines), lines
    assert not any("test-secret" in line for line in lines)  # the secret is masked
    assert not any("HTTP Request" in line for line in lines), lines  # no agent chatter

    started = time.monotonic()
    warm = _enqueue(api, queue, "warm", _script(repo))
    task = wait_for_status(api, warm, {"completed", "failed"}, 120, proc.log)
    warm_seconds = time.monotonic() - started
    warm_lines = task_log(api, warm)
    assert task["status"] == "completed", "\n".join(warm_lines)
    assert any("cache hit" in line for line in warm_lines), warm_lines
    assert not any("installing" in line.lower() or "bosun runtime" in line
                   for line in warm_lines), warm_lines
    assert "six 1.16.0" in warm_lines
    timing("first task in the image (runtime + venv built)", cold_seconds)
    timing("second task in the image (all cached)", warm_seconds)
    assert warm_seconds < cold_seconds
    assert not _containers(cold) and not _containers(warm)


def test_the_tasks_image_arguments_and_setup_script_win(
    api: Session, daemon: tuple[DaemonProcess, str], repo: tuple[Path, str, str],
) -> None:
    proc, queue = daemon
    derived_image(ALT_IMAGE, "echo alt-image > /etc/bosun-alt")
    started = time.monotonic()
    task_id = _enqueue(api, queue, "own-image", _script(repo), container={
        "image": ALT_IMAGE, "arguments": "-e TASK_ARG=from-task-arguments",
        "setup_shell_script": "echo task-setup > /tmp/bosun-task-setup\necho setup ran"})
    task = wait_for_status(api, task_id, {"completed", "failed"}, 180, proc.log)
    lines = task_log(api, task_id)
    assert task["status"] == "completed", "\n".join(lines)
    for expected in ("image marker: alt-image", "task setup: task-setup",
                     "extra setup: extra-setup", "task argument: from-task-arguments",
                     "extra argument: from-extra-arguments", "setup ran"):
        assert expected in lines, (expected, lines)
    assert any(f"image {ALT_IMAGE} (from the task)" in line for line in lines), lines
    timing("task in its own image (new runtime, venv from the cache)",
           time.monotonic() - started)


@pytest.mark.parametrize(
    ("fields", "reason_words"),
    [
        ({"container": {"image": "bosun-no-such-image:1"}},
         ["container image 'bosun-no-such-image:1' not found"]),
        ({"container": {"image": BASE_IMAGE,
                        "setup_shell_script": "echo about to fail\nexit 7\n"}},
         ["setup script failed (exit code 7)", "about to fail"]),
        ({"hyperparams": _env_section(EXIT_CODE="3")}, ["worker execution exit code 3"]),
        ({"container": {"image": "bosun-test-nopython:1"}},
         ["'bosun-test-nopython:1' has no python3", "Python 3.11 or newer"]),
    ],
    ids=["missing-image", "failing-setup-script", "exit-code", "image-without-python"],
)
def test_failures_fail_the_task_with_a_clear_reason(
    api: Session, daemon: tuple[DaemonProcess, str], repo: tuple[Path, str, str],
    fields: dict[str, Any], reason_words: list[str],
) -> None:
    proc, queue = daemon
    if "bosun-test-nopython" in str(fields):
        derived_image("bosun-test-nopython:1", "rm -f /usr/bin/python3*")
    task_id = _enqueue(api, queue, "bad", _script(repo), **fields)
    task = wait_for_status(api, task_id, {"completed", "failed"}, 120, proc.log)
    assert task["status"] == "failed"
    for words in reason_words:
        assert words in task["status_message"], task["status_message"]
    assert "\n" not in task["status_message"]
    assert not _containers(task_id)


def test_abort_stops_and_removes_the_container(
    api: Session, daemon: tuple[DaemonProcess, str], repo: tuple[Path, str, str],
) -> None:
    proc, queue = daemon
    task_id = _enqueue(api, queue, "slow", _script(repo, entry_point="slow.py"))
    wait_for(functools.partial(_printed, api, task_id), 120, "the task to print", proc.log)
    assert len(_containers(task_id)) == 1
    started = time.monotonic()
    api.call("tasks.stop", {"task": task_id})
    task = wait_for_status(api, task_id, {"stopped", "failed", "completed"}, 30, proc.log)
    assert task["status"] == "stopped", task["status_message"]
    wait_for(functools.partial(_gone, task_id), 10, "the container to be removed")
    timing("abort to container removed", time.monotonic() - started)


def test_services_mode_runs_each_service_in_its_own_container(
    engine: str, api: Session, config: Path, work: Path, repo: tuple[Path, str, str],
) -> None:
    queue = f"services-{uuid.uuid4().hex[:8]}"
    proc = DaemonProcess(config, work, "--queue", queue, "--create-queue", "--services-mode",
                         "--podman", BASE_IMAGE).start()
    try:
        tasks = [_enqueue(api, queue, f"service-{i}", _script(repo, entry_point="slow.py"))
                 for i in range(2)]
        for task_id in tasks:
            wait_for(functools.partial(_printed, api, task_id), 120,
                     f"service {task_id} to print", proc.log)
        names = [_containers(task_id) for task_id in tasks]
        assert all(len(n) == 1 for n in names) and names[0] != names[1], names
        for task_id in tasks:
            api.call("tasks.stop", {"task": task_id})
        for task_id in tasks:
            assert wait_for_status(api, task_id, {"stopped", "failed"}, 30,
                                   proc.log)["status"] == "stopped"
            wait_for(functools.partial(_gone, task_id), 10, "the container to be removed")
    finally:
        assert proc.stop() == 0, proc.log()


def test_execute_with_podman(
    engine: str, api: Session, config: Path, work: Path, repo: tuple[Path, str, str],
) -> None:
    task_id = _create(api, "execute", _script(repo))
    proc = subprocess.run(
        [sys.executable, "-m", "bosun", "agent", "--config-file", str(config), "execute",
         "--id", task_id, "--podman", BASE_IMAGE], env=agent_env(work), capture_output=True,
        text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert api.call("tasks.get_by_id", {"task": task_id})["task"]["status"] == "completed"
    assert "in container: True" in task_log(api, task_id)


def test_built_environment_image(
    engine: str, api: Session, config: Path, work: Path, repo: tuple[Path, str, str],
) -> None:
    """Without --entry-point: an image with the task's code and environment, for other uses."""
    task_id = _create(api, "built-env", _script(repo))
    image = f"bosun-test-env-{task_id[:12]}:1"
    build = subprocess.run(
        [sys.executable, "-m", "bosun", "agent", "--config-file", str(config), "build",
         "--id", task_id, "--podman", BASE_IMAGE, "--target", image],
        env=agent_env(work), capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-3000:]
    try:
        run = podman("run", "--rm", "--workdir", "/opt/bosun/task/code", image,
                     "/opt/bosun/venv/bin/python", "-c",
                     "import six; print(six.__version__, open('message.txt').read().strip())",
                     check=False)
        assert run.stdout.strip() == "1.16.0 from the uncommitted diff", run.stderr
    finally:
        podman("rmi", "-f", image, check=False)


@pytest.mark.parametrize("entry_point", ["reuse_task", "clone_task"])
def test_built_image_runs_the_task(
    engine: str, api: Session, config: Path, work: Path, repo: tuple[Path, str, str],
    entry_point: str,
) -> None:
    task_id = _create(api, f"built-{entry_point}", _script(repo),
                      container={"image": BASE_IMAGE,
                                 "setup_shell_script": "echo task-setup > /tmp/bosun-task-setup"})
    image = f"bosun-test-built-{task_id[:12]}:1"
    started = time.monotonic()
    build = subprocess.run(
        [sys.executable, "-m", "bosun", "agent", "--config-file", str(config), "build",
         "--id", task_id, "--podman", "--target", image, "--entry-point", entry_point],
        env=agent_env(work), capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-3000:]
    timing(f"agent build --podman --entry-point {entry_point}", time.monotonic() - started)
    try:
        # The setup script ran at build time: its result is in the image.
        started = time.monotonic()
        run = podman("run", "--rm", "--network", "host", image, check=False, timeout=240)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-3000:]
        timing(f"podman run of the built image ({entry_point})", time.monotonic() - started)
        if entry_point == "reuse_task":
            ran = task_id
        else:
            clones = [t for t in api.call("tasks.get_all", {})["tasks"]
                      if t.get("parent") == task_id]
            assert len(clones) == 1, clones
            ran = clones[0]["id"]
            assert api.call("tasks.get_by_id", {"task": task_id})["task"]["status"] == "created"
        task = api.call("tasks.get_by_id", {"task": ran})["task"]
        lines = task_log(api, ran)
        assert task["status"] == "completed", "\n".join(lines)
        for expected in ("six 1.16.0", "in container: True", "task setup: task-setup",
                         "message: from the uncommitted diff"):
            assert expected in lines, (expected, lines)
        assert any("cache hit" in line for line in lines), lines  # the venv is in the image
    finally:
        podman("rmi", "-f", image, check=False)


def test_build_target_dir_is_runnable(
    api: Session, config: Path, work: Path, repo: tuple[Path, str, str], tmp_path: Path,
) -> None:
    task_id = _create(api, "build-dir", _script(repo))
    target = tmp_path / "built"
    build = subprocess.run(
        [sys.executable, "-m", "bosun", "agent", "--config-file", str(config), "build",
         "--id", task_id, "--target", str(target)], env=agent_env(work), capture_output=True,
        text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert (target / "code" / "train.py").is_file()
    assert (target / "venv" / "bin" / "python").exists()
    run = subprocess.run([str(target / "run.sh")], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "MY_TASK_VAR": "given"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "six 1.16.0" in run.stdout
    assert "message: from the uncommitted diff" in run.stdout
    assert "task env: given" in run.stdout
    # The task itself is untouched.
    assert api.call("tasks.get_by_id", {"task": task_id})["task"]["status"] == "created"


def test_docker_binary(api: Session, config: Path, work: Path,
                       repo: tuple[Path, str, str]) -> None:
    """The same code path with the `docker` binary, where a docker engine runs."""
    problem = docker_problem()
    if problem is not None:
        pytest.skip(f"{problem}; --docker is the --podman code path with another binary")
    require_podman()
    use_engine_env()
    ensure_base_image()
    save = subprocess.Popen(["podman", "save", BASE_IMAGE], stdout=subprocess.PIPE)
    subprocess.run(["docker", "load"], stdin=save.stdout, check=True, capture_output=True)
    save.wait()
    task_id = _create(api, "docker", _script(repo))
    proc = subprocess.run(
        [sys.executable, "-m", "bosun", "agent", "--config-file", str(config), "execute",
         "--id", task_id, "--docker", f"localhost/{BASE_IMAGE}"], env=agent_env(work),
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "six 1.16.0" in task_log(api, task_id)


def test_docker_without_an_engine_stops_with_one_line_and_leaves_the_task(
    api: Session, config: Path, work: Path, repo: tuple[Path, str, str],
) -> None:
    problem = docker_problem()
    if problem is None:
        pytest.skip("a docker engine works here")
    task_id = _create(api, "no-engine", _script(repo))
    env = agent_env(work)
    env.pop("BOSUN_DOCKER_BINARY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "bosun", "agent", "--config-file", str(config), "execute",
         "--id", task_id, "--docker", "some-image"], env=env, capture_output=True, text=True,
        timeout=60)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("bosun: error:")]
    # e.g. "container engine 'docker' does not work: Cannot connect to the Docker daemon ..."
    assert len(errors) == 1 and "container engine 'docker'" in errors[0], proc.stderr
    assert api.call("tasks.get_by_id", {"task": task_id})["task"]["status"] == "created"
