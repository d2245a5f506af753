"""Container mode without an engine: which image and arguments a task gets, the GPU flags, the
command-line flags, and the configuration the agent inside the container reads."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from bosun.agent.config import AgentConfig, Config, DefaultDockerConfig, load_config
from bosun.agent.container_engine import (
    ContainerError,
    Engine,
    has_network_option,
    last_error_line,
    split_arguments,
)
from bosun.agent.container_run import (
    ContainerMode,
    choose_spec,
    container_venvs_cache,
    gpu_request,
    inner_config,
    prepared_dirs,
    task_container,
)
from bosun.agent.container_runtime import pinned_requirements, runtime_key
from bosun.agent.task_run import TaskSetupError
from bosun.cli.agent_build_cmd import add_container_flags, container_mode
from bosun.cli.errors import UserError

PODMAN = Engine("podman")
DOCKER = Engine("docker")


def _agent(**overrides: Any) -> AgentConfig:
    return AgentConfig(**overrides)


def _task(image: str = "", arguments: str = "", setup: str = "") -> dict[str, Any]:
    return {"container": {"image": image, "arguments": arguments, "setup_shell_script": setup}}


def test_the_tasks_container_wins_over_the_agents_defaults() -> None:
    agent = _agent(default_docker=DefaultDockerConfig("conf-image", ["--conf-arg"]),
                   extra_docker_arguments=["--extra"], extra_docker_shell_script=["echo a"])
    mode = ContainerMode(PODMAN, "cli-image", ["--cli-arg"])
    spec = choose_spec(_task("task-image", "--ipc=host -e A='b c'", "echo b"), mode, agent)
    assert (spec.image, spec.arguments, spec.source) == (
        "task-image", ["--ipc=host", "-e", "A=b c"], "the task")
    assert spec.extra_arguments == ["--extra"]
    assert spec.setup_script == "echo a\necho b"


def test_without_a_task_image_the_command_line_then_the_configuration() -> None:
    agent = _agent(default_docker=DefaultDockerConfig("conf-image", ["--conf-arg"]))
    spec = choose_spec(_task(setup="echo b"), ContainerMode(PODMAN, "cli-image", ["--cli"]),
                       agent)
    assert (spec.image, spec.arguments, spec.source) == ("cli-image", ["--cli"], "--podman")
    assert spec.setup_script == "echo b"  # the task's setup script still runs
    spec = choose_spec({}, ContainerMode(DOCKER), agent)
    assert (spec.image, spec.arguments, spec.source) == (
        "conf-image", ["--conf-arg"], "agent.default_docker.image")


def test_force_docker_ignores_the_tasks_container() -> None:
    spec = choose_spec(_task("task-image", "--x", "echo b"),
                       ContainerMode(DOCKER, "cli-image", [], force=True), _agent())
    assert (spec.image, spec.arguments, spec.setup_script) == ("cli-image", [], "")


def test_no_image_anywhere_is_a_clear_error() -> None:
    with pytest.raises(ContainerError, match="no container image"):
        choose_spec({}, ContainerMode(DOCKER), _agent())


def test_legacy_docker_cmd() -> None:
    task = {"execution": {"docker_cmd": "nvidia/cuda:12 --ipc=host"}}
    assert task_container(task) == ("nvidia/cuda:12", ["--ipc=host"], "")


def test_gpu_flags() -> None:
    assert PODMAN.gpu_args(["0", "2"]) == ["--device", "nvidia.com/gpu=0",
                                           "--device", "nvidia.com/gpu=2"]
    assert PODMAN.gpu_args(["all"]) == ["--device", "nvidia.com/gpu=all"]
    assert DOCKER.gpu_args(["0", "2"]) == ["--gpus", '"device=0,2"']
    assert DOCKER.gpu_args(["all"]) == ["--gpus", "all"]
    assert DOCKER.gpu_args([]) == []
    assert Engine("/usr/local/bin/podman").kind == "podman"


def test_gpu_variables_become_engine_devices() -> None:
    gpus, env = gpu_request({"CUDA_VISIBLE_DEVICES": "1,3", "NVIDIA_VISIBLE_DEVICES": "1,3",
                             "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "OTHER": "x"})
    # inside, the container's GPUs are numbered from 0: the host's indices are not passed
    assert gpus == ["1", "3"]
    assert env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "OTHER": "x"}
    gpus, env = gpu_request({"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "none"})
    assert gpus == [] and env == {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "none"}
    assert gpu_request({}) == ([], {})


def test_argument_helpers() -> None:
    assert split_arguments("-v /a:/b --ipc=host") == ["-v", "/a:/b", "--ipc=host"]
    assert split_arguments(["-e", "A=b c"]) == ["-e", "A=b c"]
    assert split_arguments(None) == []
    assert has_network_option(["--network=bridge"])
    assert has_network_option(["--net", "x"])
    assert not has_network_option(["--ipc=host"])
    assert last_error_line("Trying...\nError: image not known\n") == "image not known"


def _flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_container_flags(parser)
    parser.add_argument("--queue", nargs="*")
    return parser.parse_args(list(argv))


def test_command_line_flags() -> None:
    assert container_mode(_flags("--queue", "q")) is None
    mode = container_mode(_flags("--docker", "--queue", "q"))
    assert (mode.engine.binary, mode.image, mode.arguments) == ("docker", "", [])
    mode = container_mode(_flags("--podman", "img:1", "--queue", "q"))
    assert (mode.engine.binary, mode.image) == ("podman", "img:1")
    mode = container_mode(_flags("--docker", "img:1 --ipc=host -v /a:/b", "--force-docker"))
    assert (mode.image, mode.arguments, mode.force) == ("img:1", ["--ipc=host", "-v", "/a:/b"],
                                                        True)
    with pytest.raises(UserError, match="--force-docker needs"):
        container_mode(_flags("--force-docker"))
    with pytest.raises(SystemExit):
        _flags("--docker", "a", "--podman", "b")


def test_inner_configuration(tmp_path: Path) -> None:
    conf = tmp_path / "clearml.conf"
    conf.write_text("""
api { api_server: "http://h:8008", credentials { access_key: "K", secret_key: "S" } }
agent {
  python_binary: /usr/local/bin/python3.12
  package_manager { type: pip, extra_index_url: ["https://x/simple"] }
  venvs_cache { path: /data/venvs, max_entries: 3 }
  enable_task_env: true
}
""")
    config = load_config(conf, environ={"HOME": str(tmp_path)})
    inner = inner_config(config, venvs_cache="/c/venvs", venvs_dir="/c/builds")
    inside = tmp_path / "inner.conf"
    inside.write_text(json.dumps(inner))
    read = load_config(inside, environ={"HOME": "/root"})
    assert read.api == config.api
    assert read.agent.package_manager == config.agent.package_manager
    assert read.agent.python_binary == ""  # a host path means nothing inside
    assert read.agent.venvs_cache.path == Path("/c/venvs")
    assert read.agent.venvs_cache.max_entries == 3
    assert read.agent.enable_task_env is True
    assert read.agent.vcs_cache.enabled is False
    assert read.notices == []
    assert container_venvs_cache(config) == Path("/data/venvs-containers")


def test_prepared_code_layout(tmp_path: Path) -> None:
    (tmp_path / "code" / "sub").mkdir(parents=True)
    script = {"repository": "https://x/r.git", "working_dir": "sub"}
    assert prepared_dirs(script, tmp_path) == (tmp_path / "code", (tmp_path / "code/sub"))
    assert prepared_dirs({"diff": "print(1)"}, tmp_path) == (None, tmp_path)
    with pytest.raises(TaskSetupError, match="working dir"):
        prepared_dirs({**script, "working_dir": "../.."}, tmp_path)


def test_runtime_pins_follow_the_installed_versions() -> None:
    pins = pinned_requirements()
    assert any(p.startswith("httpx==") for p in pins)
    assert any(p.startswith("uvicorn[standard]==") for p in pins)
    assert not any(p.startswith(("pytest", "ruff")) for p in pins)  # bosun's own extras
    assert runtime_key("sha256:a", pins) != runtime_key("sha256:b", pins)


def test_config_default() -> None:
    assert Config().agent.default_docker == DefaultDockerConfig()
