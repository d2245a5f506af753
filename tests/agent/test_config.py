"""The agent's configuration: clearml.conf parsing, environment overrides, types, notices."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bosun.agent.config import (
    ApiConfig,
    Config,
    ConfigError,
    default_config_path,
    load_config,
    masked,
)
from bosun.cli.errors import UserError

# The sample agent section of ClearML Agent's docs ("Adding ClearML Agent to a Configuration
# File"), comments included: valid HOCON that users paste into their clearml.conf. (Two long
# lines are continued with a backslash: the string holds them unbroken.)
SEED_AGENT_SECTION = """\
agent {
# Set GIT user/pass credentials (if user/pass are set, GIT protocol will be set to https)
# leave blank for GIT SSH credentials (set force_git_ssh_protocol=true to force SSH protocol)
git_user: ""
git_pass: ""
# Limit credentials to a single domain, for example: github.com,
# all other domains will use public access (no user/pass). Default: always send user/pass \
for any VCS domain
git_host=""
# Force GIT protocol to use SSH regardless of the git url (Assumes GIT user/pass are blank)
force_git_ssh_protocol: false
# Force a specific SSH port when converting http to ssh links (the domain is kept the same)
# force_git_ssh_port: 0
# Force a specific SSH username when converting http to ssh links (the default username is 'git')
# force_git_ssh_user: git
# unique name of this worker, if None, created based on hostname:process_id
# Override with os environment: CLEARML_WORKER_ID
# worker_id: "clearml-agent-machine1:gpu0"
worker_id: ""
# worker name, replaces the hostname when creating a unique name for this worker
# Override with os environment: CLEARML_WORKER_ID
# worker_name: "clearml-agent-machine1"
worker_name: ""
# Set the python version to use when creating the virtual environment and launching the experiment
# Example values: "/usr/bin/python3" or "/usr/local/bin/python3.6"
# The default is the python executing the clearml_agent
python_binary: ""
# select python package manager:
# currently supported pip and conda
# poetry is used if pip selected and repository contains poetry.lock file
package_manager: {
# supported options: pip, conda, poetry
type: pip,
# specify pip version to use (examples "<20", "==19.3.1", "", empty string will install \
the latest version)
pip_version: "<20.2",
# virtual environment inheres packages from system
system_site_packages: false,
# install with --upgrade
force_upgrade: false,
# additional artifact repositories to use when installing python packages
# extra_index_url: ["https://allegroai.jfrog.io/clearmlai/api/pypi/public/simple"]
extra_index_url: []
# additional conda channels to use when installing with conda package manager
conda_channels: ["defaults", "conda-forge", "pytorch", ]
# conda_full_env_update: false
# conda_env_as_base_docker: false
# set the priority packages to be installed before the rest of the required packages
# priority_packages: ["cython", "numpy", "setuptools", ]
# set the optional priority packages to be installed before the rest of the required packages,
# In case a package installation fails, the package will be ignored,
# and the virtual environment process will continue
# priority_optional_packages: ["pygobject", ]
# set the post packages to be installed after all the rest of the required packages
# post_packages: ["horovod", ]
# set the optional post packages to be installed after all the rest of the required packages,
# In case a package installation fails, the package will be ignored,
# and the virtual environment process will continue
# post_optional_packages: []
# set to True to support torch nightly build installation,
# notice: torch nightly builds are ephemeral and are deleted from time to time
torch_nightly: false,
},
# target folder for virtual environments builds, created when executing experiment
venvs_dir = ~/.clearml/venvs-builds
# cached virtual environment folder
venvs_cache: {
# maximum number of cached venvs
max_entries: 10
# minimum required free space to allow for cache entry, disable by passing 0 or negative value
free_space_threshold_gb: 2.0
# unmark to enable virtual environment caching
# path: ~/.clearml/venvs-cache
},
# cached git clone folder
vcs_cache: {
enabled: true,
path: ~/.clearml/vcs-cache
},
# use venv-update in order to accelerate python virtual environment building
# Still in beta, turned off by default
venv_update: {
enabled: false,
},
# cached folder for specific python package download (mostly pytorch versions)
pip_download_cache {
enabled: true,
path: ~/.clearml/pip-download-cache
},
translate_ssh: true,
# reload configuration file every daemon execution
reload_config: false,
# pip cache folder mapped into docker, used for python package caching
docker_pip_cache = ~/.clearml/pip-cache
# apt cache folder mapped into docker, used for ubuntu package caching
docker_apt_cache = ~/.clearml/apt-cache
# optional arguments to pass to docker image
# these are local for this agent and will not be updated in the experiment's docker_cmd section
# extra_docker_arguments: ["--ipc=host", "-v", "/mnt/host/data:/mnt/data"]
# optional shell script to run in docker when started before the experiment is started
# extra_docker_shell_script: ["apt-get install -y bindfs", ]
# Install the required packages for opencv libraries (libsm6 libxext6 libxrender-dev libglib2.0-0),
# for backwards compatibility reasons, true as default,
# change to false to skip installation and decrease docker spin up time
# docker_install_opencv_libs: true
# set to true in order to force "docker pull" before running an experiment using a docker image.
# This makes sure the docker image is updated.
docker_force_pull: false
default_docker: {
# default docker image to use when running in docker mode
image: "nvidia/cuda:10.1-runtime-ubuntu18.04"
# optional arguments to pass to docker image
# arguments: ["--ipc=host", ]
}
# set the OS environments based on the Task's Environment section before launching the Task process.
enable_task_env: false
# CUDA versions used for Conda setup & solving PyTorch wheel packages
# it Should be detected automatically. Override with os environment CUDA_VERSION / CUDNN_VERSION
# cuda_version: 10.1
# cudnn_version: 7.6
}
"""

API_SECTION = """\
api {
    web_server: https://app.example.org
    api_server: https://api.example.org/
    files_server: https://files.example.org
    credentials {"access_key": "AKEY1234567890", "secret_key": "s3cr3t-$ecret"}
}
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def _load(home: Path, text: str | None, **env: str) -> Config:
    """Loads `text` as ~/clearml.conf (None: no file) with only HOME and `env` set."""
    if text is not None:
        (home / "clearml.conf").write_text(text)
    return load_config(environ={"HOME": str(home), **env})


# --- the seed's sample ----------------------------------------------------------------------


def test_seed_sample_agent_section_parses(home: Path) -> None:
    config = _load(home, API_SECTION + SEED_AGENT_SECTION)
    agent = config.agent
    assert config.source == home / "clearml.conf"
    assert agent.package_manager.type == "pip"
    assert agent.package_manager.pip_version == "<20.2"
    assert agent.package_manager.extra_index_url == []
    assert agent.venvs_dir == home / ".clearml/venvs-builds"
    assert agent.venvs_cache.max_entries == 10
    assert agent.venvs_cache.free_space_threshold_gb == 2.0
    assert agent.venvs_cache.path == home / ".clearml/venvs-cache"
    assert agent.vcs_cache.path == home / ".clearml/vcs-cache"
    assert agent.pip_download_cache.path == home / ".clearml/pip-download-cache"
    assert agent.translate_ssh is True
    assert agent.enable_task_env is False
    assert config.api == ApiConfig(api_server="https://api.example.org",
                                   web_server="https://app.example.org",
                                   files_server="https://files.example.org",
                                   access_key="AKEY1234567890", secret_key="s3cr3t-$ecret")


def test_seed_sample_reports_unsupported_keys(home: Path) -> None:
    config = _load(home, SEED_AGENT_SECTION)
    assert config.notices == [
        "agent.package_manager.conda_channels: used only with conda, which bosun does not "
        "support yet (ignored)",
        "agent.package_manager.torch_nightly: not supported by bosun (ignored)",
        "agent.venv_update: not supported by bosun (ignored)",
        "agent.docker_pip_cache: not supported by bosun's container mode (ignored)",
        "agent.docker_apt_cache: not supported by bosun's container mode (ignored)",
    ]


@pytest.mark.parametrize(("text", "notice"), [
    ("agent.cuda_version: 10.1", "agent.cuda_version: not supported by bosun (ignored)"),
    ("agent.cudnn_version: 7.6", "agent.cudnn_version: not supported by bosun (ignored)"),
    ("agent.docker_install_opencv_libs: true",
     "agent.docker_install_opencv_libs: not supported by bosun's container mode (ignored)"),
    ("agent.default_docker.frobnicate: 1",
     "agent.default_docker.frobnicate: unknown to bosun (ignored)"),
    ("agent.package_manager.conda_full_env_update: false",
     "agent.package_manager.conda_full_env_update: used only with conda, which bosun does not "
     "support yet (ignored)"),
    ("agent.package_manager.conda_env_as_base_docker: false",
     "agent.package_manager.conda_env_as_base_docker: used only with conda, which bosun does "
     "not support yet (ignored)"),
    ("agent.frobnicate: 3", "agent.frobnicate: unknown to bosun (ignored)"),
    ("agent.vcs_cache.depth: 1", "agent.vcs_cache.depth: unknown to bosun (ignored)"),
    ("agent.package_manager.uv_version: x",
     "agent.package_manager.uv_version: unknown to bosun (ignored)"),
])
def test_unsupported_and_unknown_keys_are_notices(home: Path, text: str, notice: str) -> None:
    assert _load(home, text).notices == [notice]


def test_keys_outside_agent_make_no_notices(home: Path) -> None:
    text = API_SECTION + "api.verify_certificate: true\nsdk { storage.cache.size: 5 }\n"
    assert _load(home, text).notices == []


# --- which file -----------------------------------------------------------------------------


def test_no_file_gives_defaults(home: Path) -> None:
    config = _load(home, None)
    assert config.source is None
    assert config.api == ApiConfig()
    assert config.agent.package_manager.type == "uv"
    assert config.agent.venvs_dir == home / ".clearml/venvs-builds"
    assert config.notices == []


@pytest.mark.parametrize(("explicit", "env_vars", "expected"), [
    (True, ("BOSUN_CONFIG_FILE", "CLEARML_CONFIG_FILE"), "explicit"),
    (False, ("BOSUN_CONFIG_FILE", "CLEARML_CONFIG_FILE"), "BOSUN_CONFIG_FILE"),
    (False, ("CLEARML_CONFIG_FILE",), "CLEARML_CONFIG_FILE"),
    (False, (), "default"),
])
def test_file_choice_order(home: Path, explicit: bool, env_vars: tuple[str, ...],
                           expected: str) -> None:
    files = {}
    for name in ("explicit", "BOSUN_CONFIG_FILE", "CLEARML_CONFIG_FILE", "default"):
        path = home / ("clearml.conf" if name == "default" else f"{name}.conf")
        path.write_text(f'agent.worker_name: "{name}"\n')
        files[name] = path
    environ = {"HOME": str(home), **{var: str(files[var]) for var in env_vars}}
    config = load_config(files["explicit"] if explicit else None, environ=environ)
    assert config.agent.worker_name == expected
    assert config.source == files[expected]
    assert default_config_path(environ) == files[env_vars[0] if env_vars else "default"]


@pytest.mark.parametrize(("explicit", "env", "message"), [
    (True, {}, "nope.conf: no such configuration file"),
    (False, {"BOSUN_CONFIG_FILE": "{home}/nope.conf"},
     "nope.conf: no such configuration file (from $BOSUN_CONFIG_FILE)"),
    (False, {"CLEARML_CONFIG_FILE": "~/nope.conf"},
     "nope.conf: no such configuration file (from $CLEARML_CONFIG_FILE)"),
])
def test_missing_chosen_file_is_an_error(home: Path, explicit: bool, env: dict[str, str],
                                         message: str) -> None:
    environ = {"HOME": str(home), **{k: v.format(home=home) for k, v in env.items()}}
    with pytest.raises(ConfigError) as info:
        load_config(home / "nope.conf" if explicit else None, environ=environ)
    assert str(info.value) == f"{home}/{message}"


@pytest.mark.parametrize("text", [
    "agent {\n  git_user: x\n",
    "agent { package_manager: { type: pip, }\n}\n}\n",
    "agent.extra_index_url = [1,\n",
    "agent.git_user = ${NO_SUCH_VARIABLE_FOR_BOSUN_TEST}\n",
])
def test_syntax_error_names_the_file_on_one_line(home: Path, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(home, text)
    message = str(info.value)
    assert message.startswith(f"{home / 'clearml.conf'}: ")
    assert "\n" not in message
    assert len(message) > len(str(home / "clearml.conf")) + 5


def test_syntax_error_says_where(home: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load(home, "agent {\n  git_user: x\n  venvs_cache { max_entries: 3 }\n  ] \n}\n")
    assert str(info.value) == (f"{home / 'clearml.conf'}: Expected '}}', found ']' "
                               "(line 4, column 3)")


def test_config_error_is_a_user_error() -> None:
    assert issubclass(ConfigError, UserError)


# --- environment overrides ------------------------------------------------------------------

FILE_WITH_VALUES = API_SECTION + """\
agent {
    git_user: file-user
    git_pass: file-pass
    worker_id: file-id
    package_manager.type: pip
}
"""


def _api(c: Config) -> Any:
    return c.api.api_server


@pytest.mark.parametrize(("env", "read", "expected"), [
    ({}, _api, "https://api.example.org"),
    ({"CLEARML_API_HOST": "http://clearml:8008"}, _api, "http://clearml:8008"),
    ({"BOSUN_API_HOST": "http://bosun:8008/"}, _api, "http://bosun:8008"),
    ({"CLEARML_API_HOST": "http://clearml:8008", "BOSUN_API_HOST": "http://bosun:8008"}, _api,
     "http://bosun:8008"),
    ({"CLEARML_API_HOST": ""}, _api, "https://api.example.org"),  # empty: unset
    ({"CLEARML_WEB_HOST": "http://w"}, lambda c: c.api.web_server, "http://w"),
    ({"BOSUN_FILES_HOST": "http://f"}, lambda c: c.api.files_server, "http://f"),
    ({"CLEARML_API_ACCESS_KEY": "K1", "BOSUN_API_ACCESS_KEY": "K2"},
     lambda c: c.api.access_key, "K2"),
    ({"CLEARML_API_SECRET_KEY": "S1"}, lambda c: c.api.secret_key, "S1"),
    ({"CLEARML_WORKER_ID": "w:1"}, lambda c: c.agent.worker_id, "w:1"),
    ({"BOSUN_WORKER_NAME": "box"}, lambda c: c.agent.worker_name, "box"),
    ({"CLEARML_AGENT_GIT_USER": "u1", "BOSUN_AGENT_GIT_USER": "u2"},
     lambda c: c.agent.git_user, "u2"),
    ({"CLEARML_AGENT_GIT_PASS": "p1"}, lambda c: c.agent.git_pass, "p1"),
    ({"BOSUN_AGENT_GIT_HOST": "github.com"}, lambda c: c.agent.git_host, "github.com"),
    ({"BOSUN_AGENT_PACKAGE_MANAGER": "UV"}, lambda c: c.agent.package_manager.type, "uv"),
    ({"BOSUN_AGENT_ENABLE_TASK_ENV": "yes"}, lambda c: c.agent.enable_task_env, True),
    ({"BOSUN_AGENT_ENABLE_TASK_ENV": "0"}, lambda c: c.agent.enable_task_env, False),
    ({"CLEARML_AGENT_VENV_CACHE_PATH": "/cache/venvs"},
     lambda c: c.agent.venvs_cache.path, Path("/cache/venvs")),
    # clearml-agent's dynamic variables: CLEARML_AGENT__AGENT__<PATH>, JSON or plain values
    ({"CLEARML_AGENT__AGENT__PACKAGE_MANAGER__TYPE": "uv"},
     lambda c: c.agent.package_manager.type, "uv"),
    ({"CLEARML_AGENT__AGENT__ENABLE_TASK_ENV": "true"}, lambda c: c.agent.enable_task_env, True),
    ({"CLEARML_AGENT__AGENT__PYTHON_BINARY": '"/usr/bin/python3.12"'},
     lambda c: c.agent.python_binary, "/usr/bin/python3.12"),
    ({"CLEARML_AGENT__AGENT__VENVS_DIR": "/v"}, lambda c: c.agent.venvs_dir, Path("/v")),
    ({"CLEARML_AGENT__AGENT__VENVS_CACHE__MAX_ENTRIES": "3"},
     lambda c: c.agent.venvs_cache.max_entries, 3),
    ({"CLEARML_AGENT__AGENT__PACKAGE_MANAGER__EXTRA_INDEX_URL": '["https://a", "https://b"]'},
     lambda c: c.agent.package_manager.extra_index_url, ["https://a", "https://b"]),
    ({"CLEARML_AGENT__AGENT__WORKER_ID": "d", "CLEARML_WORKER_ID": "f"},
     lambda c: c.agent.worker_id, "f"),
    ({"CLEARML_WORKER_ID": "f", "BOSUN_AGENT__AGENT__WORKER_ID": "b"},
     lambda c: c.agent.worker_id, "b"),
])
def test_environment_overrides(home: Path, env: dict[str, str],
                               read: Callable[[Config], Any], expected: Any) -> None:
    assert read(_load(home, FILE_WITH_VALUES, **env)) == expected


def test_environment_overrides_without_a_file(home: Path) -> None:
    config = _load(home, None, BOSUN_API_HOST="http://h:1", CLEARML_API_ACCESS_KEY="K",
                   CLEARML_API_SECRET_KEY="S")
    assert config.api == ApiConfig(api_server="http://h:1", access_key="K", secret_key="S")
    assert config.source is None


def test_dynamic_variable_for_unsupported_key_is_a_notice(home: Path) -> None:
    config = _load(home, None, CLEARML_AGENT__AGENT__DOCKER_APT_CACHE='"/a"',
                   CLEARML_AGENT__AGENT__=" x")
    assert config.notices == [
        "agent.docker_apt_cache (from $CLEARML_AGENT__AGENT__DOCKER_APT_CACHE): not supported "
        "by bosun's container mode (ignored)",
        "$CLEARML_AGENT__AGENT__: not a configuration key path (ignored)",
    ]


# --- types ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "env", "message"), [
    ("agent.venvs_cache.max_entries: ten", {},
     'agent.venvs_cache.max_entries: expected an integer, got "ten"'),
    ("agent.venvs_cache.max_entries: 2.5", {},
     "agent.venvs_cache.max_entries: expected an integer, got 2.5"),
    ("agent.venvs_cache.max_entries: -1", {}, "agent.venvs_cache.max_entries: expected 0 or "
     "more, got -1"),
    ("agent.force_git_ssh_port: true", {},
     "agent.force_git_ssh_port: expected an integer, got true"),
    ("agent.force_git_ssh_port: 70000", {},
     "agent.force_git_ssh_port: expected a port number (0-65535), got 70000"),
    ("agent.venvs_cache.free_space_threshold_gb: lots", {},
     'agent.venvs_cache.free_space_threshold_gb: expected a number, got "lots"'),
    ("agent.reload_config: maybe", {}, 'agent.reload_config: expected true or false, got "maybe"'),
    ("agent.vcs_cache.enabled: 2", {}, "agent.vcs_cache.enabled: expected true or false, got 2"),
    ("agent.git_user: [a, b]", {}, 'agent.git_user: expected a string, got ["a", "b"]'),
    ("agent.git_pass { a: 1 }", {}, 'agent.git_pass: expected a string, got {"a": 1}'),
    ("agent.package_manager.extra_index_url: [{a: 1}]", {},
     'agent.package_manager.extra_index_url: expected a list of strings, got [{"a": 1}]'),
    ("agent.package_manager.post_packages: true", {},
     "agent.package_manager.post_packages: expected a list of strings, got true"),
    ("agent.package_manager: pip", {},
     'agent.package_manager: expected a section { ... }, got "pip"'),
    ("agent: 5", {}, "agent: expected a section { ... }, got 5"),
    ("api.credentials: abc", {}, 'api.credentials: expected a section { ... }, got "abc"'),
    ("", {"BOSUN_AGENT_ENABLE_TASK_ENV": "sometimes"},
     "agent.enable_task_env (from $BOSUN_AGENT_ENABLE_TASK_ENV): expected true or false, got "
     '"sometimes"'),
    ("", {"CLEARML_AGENT__AGENT__VENVS_CACHE__MAX_ENTRIES": "many"},
     "agent.venvs_cache.max_entries (from $CLEARML_AGENT__AGENT__VENVS_CACHE__MAX_ENTRIES): "
     'expected an integer, got "many"'),
])
def test_wrong_type_names_the_key(home: Path, text: str, env: dict[str, str],
                                  message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(home, text, **env)
    assert str(info.value) == message


@pytest.mark.parametrize(("text", "read", "expected"), [
    ('agent.venvs_cache.max_entries: "7"', lambda c: c.agent.venvs_cache.max_entries, 7),
    ("agent.venvs_cache.max_entries: 4.0", lambda c: c.agent.venvs_cache.max_entries, 4),
    ('agent.force_git_ssh_port: " 2222 "', lambda c: c.agent.force_git_ssh_port, 2222),
    ('agent.venvs_cache.free_space_threshold_gb: "0.5"',
     lambda c: c.agent.venvs_cache.free_space_threshold_gb, 0.5),
    ("agent.venvs_cache.free_space_threshold_gb: -1",
     lambda c: c.agent.venvs_cache.free_space_threshold_gb, -1.0),
    ("agent.reload_config: yes", lambda c: c.agent.reload_config, True),
    ('agent.reload_config: "TRUE"', lambda c: c.agent.reload_config, True),
    ('agent.translate_ssh: "no"', lambda c: c.agent.translate_ssh, False),
    ("agent.translate_ssh: 0", lambda c: c.agent.translate_ssh, False),
    ('agent.enable_task_env: "1"', lambda c: c.agent.enable_task_env, True),
    ("agent.package_manager.extra_index_url: https://x/simple",
     lambda c: c.agent.package_manager.extra_index_url, ["https://x/simple"]),
    ('agent.package_manager.extra_index_url: ""',
     lambda c: c.agent.package_manager.extra_index_url, []),
    ("agent.package_manager.priority_packages: [numpy, cython, ]",
     lambda c: c.agent.package_manager.priority_packages, ["numpy", "cython"]),
    ("agent.git_pass: 1234", lambda c: c.agent.git_pass, "1234"),
    ("agent.worker_id: null", lambda c: c.agent.worker_id, ""),
    ("agent.venvs_dir: null", lambda c: c.agent.venvs_dir, "{home}/.clearml/venvs-builds"),
    ('agent.venvs_dir: "$BOSUN_T_DIR/builds"', lambda c: c.agent.venvs_dir, "/data/builds"),
    ('agent.vcs_cache.path: "${BOSUN_T_DIR}/vcs"', lambda c: c.agent.vcs_cache.path,
     "/data/vcs"),
    ('agent.vcs_cache.path: "~/vcs"', lambda c: c.agent.vcs_cache.path, "{home}/vcs"),
    ('agent.vcs_cache.path: "$BOSUN_T_UNSET/x"', lambda c: c.agent.vcs_cache.path,
     "$BOSUN_T_UNSET/x"),
    ("agent.package_manager.type: PIP", lambda c: c.agent.package_manager.type, "pip"),
    ('agent.package_manager.type: ""', lambda c: c.agent.package_manager.type, "uv"),
])
def test_values_are_coerced(home: Path, text: str, read: Callable[[Config], Any],
                            expected: Any) -> None:
    value = read(_load(home, text, BOSUN_T_DIR="/data"))
    if isinstance(value, Path):
        assert value == Path(str(expected).format(home=home))
    else:
        assert value == expected


@pytest.mark.parametrize(("kind", "message"), [
    ("conda", "agent.package_manager.type: 'conda' is not supported yet (use uv or pip); "
              "conda support is planned"),
    ("poetry", "agent.package_manager.type: 'poetry' is not supported yet (use uv or pip)"),
    ("npm", "agent.package_manager.type: 'npm' is not a package manager bosun supports "
            "(allowed: uv, pip)"),
])
def test_unsupported_package_manager_is_an_error(home: Path, kind: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(home, f"agent.package_manager.type: {kind}")
    assert str(info.value) == message


def test_conda_from_environment_names_the_variable(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"^agent\.package_manager\.type \(from "
                       r"\$CLEARML_AGENT__AGENT__PACKAGE_MANAGER__TYPE\): 'conda' is not"):
        _load(home, None, CLEARML_AGENT__AGENT__PACKAGE_MANAGER__TYPE="conda")


# --- printing -------------------------------------------------------------------------------


def test_masked_hides_secrets(home: Path) -> None:
    config = _load(home, FILE_WITH_VALUES)
    shown = masked(config)
    assert shown["api"] == {
        "api_server": "https://api.example.org",
        "web_server": "https://app.example.org",
        "files_server": "https://files.example.org",
        "credentials": {"access_key": "AKEY****", "secret_key": "****"},
    }
    assert shown["agent"]["git_user"] == "file-user"
    assert shown["agent"]["git_pass"] == "****"
    assert shown["agent"]["venvs_dir"] == str(home / ".clearml/venvs-builds")
    assert shown["agent"]["package_manager"]["type"] == "pip"
    text = repr(shown)
    for secret in ("s3cr3t", "file-pass", "AKEY1234567890"):
        assert secret not in text


@pytest.mark.parametrize(("access_key", "secret", "shown_key", "shown_secret"), [
    ("", "", "", ""),
    ("SHORT", "x", "****", "****"),
    ("ABCDEFGHIJ", "y", "ABCD****", "****"),
])
def test_masking_of_short_and_empty_values(access_key: str, secret: str, shown_key: str,
                                           shown_secret: str) -> None:
    config = Config(api=ApiConfig(access_key=access_key, secret_key=secret))
    credentials = masked(config)["api"]["credentials"]
    assert credentials == {"access_key": shown_key, "secret_key": shown_secret}
    assert masked(config)["agent"]["git_pass"] == ""


def test_unreadable_file_is_an_error(home: Path) -> None:
    path = home / "clearml.conf"
    path.write_bytes(b"agent.git_user: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_config(environ={"HOME": str(home)})
    path.unlink()
    path.mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(environ={"HOME": str(home)})


# --- container mode ---------------------------------------------------------------------------


def test_container_keys(home: Path) -> None:
    config = _load(home, """
agent {
  default_docker { image: "python:3.12", arguments: ["--ipc=host", "-e", "A=b c"] }
  extra_docker_arguments: "-v /data:/data --shm-size=1g"
  extra_docker_shell_script: ["apt-get update", "echo hi"]
  docker_force_pull: yes
}
""")
    agent = config.agent
    assert agent.default_docker.image == "python:3.12"
    assert agent.default_docker.arguments == ["--ipc=host", "-e", "A=b c"]
    assert agent.extra_docker_arguments == ["-v", "/data:/data", "--shm-size=1g"]
    assert agent.extra_docker_shell_script == ["apt-get update", "echo hi"]
    assert agent.docker_force_pull is True
    assert config.notices == []


def test_container_keys_from_the_environment(home: Path) -> None:
    config = _load(home, None, CLEARML_AGENT__AGENT__DEFAULT_DOCKER__IMAGE="ubuntu:24.04",
                   BOSUN_AGENT__AGENT__EXTRA_DOCKER_ARGUMENTS='["--ipc=host"]')
    assert config.agent.default_docker.image == "ubuntu:24.04"
    assert config.agent.extra_docker_arguments == ["--ipc=host"]
    assert config.notices == []
