"""The agent's configuration: ClearML's `clearml.conf` (HOCON) plus environment overrides.

Which file: an explicit path, else `$BOSUN_CONFIG_FILE`, else `$CLEARML_CONFIG_FILE`, else
`~/clearml.conf` (a missing default file means all defaults). bosun reads the `api {}` section and
the `agent {}` keys it supports; every other `agent.*` key it finds becomes one line in
`Config.notices` (never an error, never silently dropped). Environment variables override the
file, `CLEARML_*` ones first and `BOSUN_*` ones over them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bosun.agent.config_file import ConfigFileError, read_config_file
from bosun.cli.errors import UserError

PACKAGE_MANAGERS = ("uv", "pip")
DEFAULT_API_SERVER = "http://127.0.0.1:8008"
DEFAULT_CONFIG_NAME = "clearml.conf"
CONFIG_FILE_VARS = ("BOSUN_CONFIG_FILE", "CLEARML_CONFIG_FILE")


class ConfigError(UserError):
    """A configuration bosun cannot use; the message names the file or the full key."""


def _home_path(relative: str) -> Path:
    return Path.home() / relative


@dataclass(frozen=True)
class ApiConfig:
    api_server: str = DEFAULT_API_SERVER
    web_server: str = ""
    files_server: str = ""
    access_key: str = ""
    secret_key: str = ""


@dataclass(frozen=True)
class PackageManagerConfig:
    type: str = "uv"
    pip_version: str = ""
    system_site_packages: bool = False
    force_upgrade: bool = False
    extra_index_url: list[str] = field(default_factory=list)
    priority_packages: list[str] = field(default_factory=list)
    priority_optional_packages: list[str] = field(default_factory=list)
    post_packages: list[str] = field(default_factory=list)
    post_optional_packages: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VenvsCacheConfig:
    max_entries: int = 10
    free_space_threshold_gb: float = 2.0
    path: Path = field(default_factory=lambda: _home_path(".clearml/venvs-cache"))
    enabled: bool = True


@dataclass(frozen=True)
class VcsCacheConfig:
    enabled: bool = True
    path: Path = field(default_factory=lambda: _home_path(".clearml/vcs-cache"))


@dataclass(frozen=True)
class PipDownloadCacheConfig:
    enabled: bool = True
    path: Path = field(default_factory=lambda: _home_path(".clearml/pip-download-cache"))


@dataclass(frozen=True)
class DefaultDockerConfig:
    image: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AgentConfig:
    git_user: str = ""
    git_pass: str = ""
    git_host: str = ""
    force_git_ssh_protocol: bool = False
    force_git_ssh_port: int = 0
    force_git_ssh_user: str = ""
    worker_id: str = ""
    worker_name: str = ""
    python_binary: str = ""
    package_manager: PackageManagerConfig = field(default_factory=PackageManagerConfig)
    venvs_dir: Path = field(default_factory=lambda: _home_path(".clearml/venvs-builds"))
    venvs_cache: VenvsCacheConfig = field(default_factory=VenvsCacheConfig)
    vcs_cache: VcsCacheConfig = field(default_factory=VcsCacheConfig)
    pip_download_cache: PipDownloadCacheConfig = field(default_factory=PipDownloadCacheConfig)
    translate_ssh: bool = True
    reload_config: bool = False
    enable_task_env: bool = False
    uptime: list[str] = field(default_factory=list)
    downtime: list[str] = field(default_factory=list)
    # container mode (see container_run)
    default_docker: DefaultDockerConfig = field(default_factory=DefaultDockerConfig)
    extra_docker_arguments: list[str] = field(default_factory=list)
    extra_docker_shell_script: list[str] = field(default_factory=list)
    docker_force_pull: bool = False


@dataclass(frozen=True)
class Config:
    api: ApiConfig = field(default_factory=ApiConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    source: Path | None = None  # the file read; None when none was (all defaults)
    notices: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Environment variables. Each fixed name exists as CLEARML_<suffix> (the name clearml-agent
# reads) and BOSUN_<suffix>; BOSUN_ wins. Empty values count as unset, as in clearml-agent.

ENV_OVERRIDES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("API_HOST", ("api", "api_server")),
    ("WEB_HOST", ("api", "web_server")),
    ("FILES_HOST", ("api", "files_server")),
    ("API_ACCESS_KEY", ("api", "credentials", "access_key")),
    ("API_SECRET_KEY", ("api", "credentials", "secret_key")),
    ("WORKER_ID", ("agent", "worker_id")),
    ("WORKER_NAME", ("agent", "worker_name")),
    ("AGENT_GIT_USER", ("agent", "git_user")),
    ("AGENT_GIT_PASS", ("agent", "git_pass")),
    ("AGENT_GIT_HOST", ("agent", "git_host")),
    ("AGENT_VENV_CACHE_PATH", ("agent", "venvs_cache", "path")),
)
# clearml-agent has no such variables (it uses CLEARML_AGENT__AGENT__<PATH> for these), so
# only the BOSUN_ spelling exists.
BOSUN_ONLY_ENV_OVERRIDES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("AGENT_PACKAGE_MANAGER", ("agent", "package_manager", "type")),
    ("AGENT_ENABLE_TASK_ENV", ("agent", "enable_task_env")),
)
# clearml-agent's "dynamic" variables: CLEARML_AGENT__AGENT__PACKAGE_MANAGER__TYPE=uv sets
# agent.package_manager.type. The value is JSON when it parses as JSON, else the plain string.
DYNAMIC_ENV_INFIX = "_AGENT__AGENT__"
ENV_PREFIXES = ("CLEARML", "BOSUN")  # later wins


# ---------------------------------------------------------------------------------------------
# What bosun reads from the agent section (None: a value; a dict: a nested section), and what it
# says about the keys it does not read.

_PACKAGE_MANAGER_KEYS: dict[str, Any] = dict.fromkeys(
    ("type", "pip_version", "system_site_packages", "force_upgrade", "extra_index_url",
     "priority_packages", "priority_optional_packages", "post_packages",
     "post_optional_packages"))
_AGENT_KEYS: dict[str, Any] = {
    **dict.fromkeys(("git_user", "git_pass", "git_host", "force_git_ssh_protocol",
                     "force_git_ssh_port", "force_git_ssh_user", "worker_id", "worker_name",
                     "python_binary", "venvs_dir", "translate_ssh", "reload_config",
                     "enable_task_env", "uptime", "downtime", "extra_docker_arguments",
                     "extra_docker_shell_script", "docker_force_pull")),
    "default_docker": dict.fromkeys(("image", "arguments")),
    "package_manager": _PACKAGE_MANAGER_KEYS,
    "venvs_cache": dict.fromkeys(("max_entries", "free_space_threshold_gb", "path", "enabled")),
    "vcs_cache": dict.fromkeys(("enabled", "path")),
    "pip_download_cache": dict.fromkeys(("enabled", "path")),
}

NOT_SUPPORTED = "not supported by bosun (ignored)"
CONTAINER_ONLY = "not supported by bosun's container mode (ignored)"
CONDA_ONLY = "used only with conda, which bosun does not support yet (ignored)"
UNKNOWN = "unknown to bosun (ignored)"
_NOT_SUPPORTED_AGENT_KEYS = frozenset({"venv_update", "cuda_version", "cudnn_version"})


def _reason(path: tuple[str, ...]) -> str:
    *section, key = path
    if section == ["agent"]:
        if "docker" in key:  # docker_*, extra_docker_*, default_docker, ...
            return CONTAINER_ONLY
        if key in _NOT_SUPPORTED_AGENT_KEYS:
            return NOT_SUPPORTED
    if section == ["agent", "package_manager"]:
        if key.startswith("conda"):
            return CONDA_ONLY
        if key == "torch_nightly":
            return NOT_SUPPORTED
    return UNKNOWN


# ---------------------------------------------------------------------------------------------
# Loading.


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Reads the configuration file and the environment; raises ConfigError on a bad value."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    home = _home(env)
    source = _find_file(path, env, home)
    tree = _read_file(source) if source is not None else {}
    origins: dict[tuple[str, ...], str] = {}
    notices = _apply_env(tree, origins, env)
    reader = _Reader(tree, origins, env, home)
    api = _read_api(reader)
    agent = _read_agent(reader)
    notices = _notices(tree, origins) + notices
    return Config(api=api, agent=agent, source=source, notices=notices)


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The file `load_config()` would read (or `bosun agent init` would write) without a path."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    home = _home(env)
    for var in CONFIG_FILE_VARS:
        if env.get(var, "").strip():
            return _expand_path(env[var].strip(), env, home)
    return home / DEFAULT_CONFIG_NAME


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME", "").strip()
    return Path(home) if home else Path.home()


def _find_file(path: Path | None, env: Mapping[str, str], home: Path) -> Path | None:
    if path is not None:
        chosen, how = _expand_path(str(path), env, home), ""
    else:
        var = next((v for v in CONFIG_FILE_VARS if env.get(v, "").strip()), None)
        if var is None:
            default = home / DEFAULT_CONFIG_NAME
            return default if default.exists() else None
        chosen, how = _expand_path(env[var].strip(), env, home), f" (from ${var})"
    if not chosen.exists():
        raise ConfigError(f"{chosen}: no such configuration file{how}")
    return chosen


def _read_file(path: Path) -> dict[str, Any]:
    try:
        return read_config_file(path)
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from None


def _apply_env(tree: dict[str, Any], origins: dict[tuple[str, ...], str],
               env: Mapping[str, str]) -> list[str]:
    notices: list[str] = []
    for prefix in ENV_PREFIXES:
        dynamic = prefix + DYNAMIC_ENV_INFIX
        for name in sorted(n for n in env if n.startswith(dynamic)):
            raw = env[name].strip()
            parts = tuple(p.lower() for p in name[len(dynamic):].split("__"))
            if not raw:
                continue
            if not all(parts):
                notices.append(f"${name}: not a configuration key path (ignored)")
                continue
            _put(tree, origins, ("agent", *parts), _decode_dynamic(raw), name)
        fixed = ENV_OVERRIDES + (BOSUN_ONLY_ENV_OVERRIDES if prefix == "BOSUN" else ())
        for suffix, path in fixed:
            name = f"{prefix}_{suffix}"
            raw = env.get(name, "").strip()
            if raw:
                _put(tree, origins, path, raw, name)
    return notices


def _decode_dynamic(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _put(tree: dict[str, Any], origins: dict[tuple[str, ...], str], path: tuple[str, ...],
         value: Any, name: str) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value
    for key in [k for k in origins if k[:len(path)] == path]:
        del origins[key]
    origins[path] = name


def _notices(tree: dict[str, Any], origins: dict[tuple[str, ...], str]) -> list[str]:
    notices: list[str] = []
    agent = tree.get("agent")
    if isinstance(agent, dict):
        _walk(agent, ("agent",), _AGENT_KEYS, origins, notices)
    return notices


def _walk(node: dict[str, Any], path: tuple[str, ...], known: dict[str, Any],
          origins: dict[tuple[str, ...], str], notices: list[str]) -> None:
    for key, value in node.items():
        here = (*path, key)
        if key in known:
            if known[key] is not None and isinstance(value, dict):
                _walk(value, here, known[key], origins, notices)
            continue
        notices.append(f"{_describe(here, origins, below=True)}: {_reason(here)}")


def _describe(path: tuple[str, ...], origins: dict[tuple[str, ...], str],
              below: bool = False) -> str:
    """The dotted key, with the environment variable(s) it came from; `below`: also those that
    set keys inside it."""
    dotted = ".".join(path)
    for end in range(len(path), 0, -1):
        name = origins.get(path[:end])
        if name is not None:
            return f"{dotted} (from ${name})"
    if below:
        names = sorted({n for k, n in origins.items() if k[:len(path)] == path})
        if names:
            return f"{dotted} (from {', '.join('$' + n for n in names)})"
    return dotted


# ---------------------------------------------------------------------------------------------
# Typed reading.

T = TypeVar("T")


class _Bad(Exception):
    """A value of the wrong type; the message says what was expected."""


def _as_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # an unquoted number in HOCON, e.g. git_pass: 1234
    raise _Bad("expected a string")


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _Bad("expected true or false")


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise _Bad("expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise _Bad("expected an integer")


def _as_float(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise _Bad("expected a number")


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        try:
            return [_as_str(item) for item in value]
        except _Bad:
            raise _Bad("expected a list of strings") from None
    raise _Bad("expected a list of strings")


def _as_arguments(value: Any) -> list[str]:
    """Container arguments: a list (one argument per item) or one string (split as a shell
    would, so `"--ipc=host -v /a:/b"` works too)."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError:
            raise _Bad("expected container arguments (unbalanced quotes)") from None
    return _as_list(value)


def _show(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


class _Reader:
    def __init__(self, tree: dict[str, Any], origins: dict[tuple[str, ...], str],
                 env: Mapping[str, str], home: Path) -> None:
        self.tree = tree
        self.origins = origins
        self.env = env
        self.home = home

    def error(self, path: tuple[str, ...], message: str) -> ConfigError:
        return ConfigError(f"{_describe(path, self.origins)}: {message}")

    def raw(self, path: tuple[str, ...]) -> Any:
        """The value at path, None when absent; a non-section on the way is an error."""
        node: Any = self.tree
        for depth, part in enumerate(path):
            if node is None:
                return None
            if not isinstance(node, dict):
                raise self.error(path[:depth], f"expected a section {{ ... }}, got {_show(node)}")
            node = node.get(part)
        return node

    def get(self, path: tuple[str, ...], convert: Callable[[Any], T], default: T) -> T:
        value = self.raw(path)
        if value is None:  # absent or null: the default
            return default
        try:
            return convert(value)
        except _Bad as exc:
            raise self.error(path, f"{exc}, got {_show(value)}") from None

    def text(self, path: tuple[str, ...], default: str = "") -> str:
        return self.get(path, _as_str, default)

    def flag(self, path: tuple[str, ...], default: bool) -> bool:
        return self.get(path, _as_bool, default)

    def strings(self, path: tuple[str, ...]) -> list[str]:
        return self.get(path, _as_list, [])

    def path(self, path: tuple[str, ...], default: str) -> Path:
        text = self.text(path).strip()
        return _expand_path(text or default, self.env, self.home)


def _expand_path(text: str, env: Mapping[str, str], home: Path) -> Path:
    def var(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return env.get(name, match.group(0))

    text = re.sub(r"\$(?:\{(\w+)\}|(\w+))", var, text)
    if text == "~" or text.startswith("~/"):
        text = str(home) + text[1:]
    elif text.startswith("~"):
        text = os.path.expanduser(text)  # ~user/...
    return Path(text)


def _url(value: str) -> str:
    return value.strip().rstrip("/")


def _read_api(r: _Reader) -> ApiConfig:
    return ApiConfig(
        api_server=_url(r.text(("api", "api_server"))) or DEFAULT_API_SERVER,
        web_server=_url(r.text(("api", "web_server"))),
        files_server=_url(r.text(("api", "files_server"))),
        access_key=r.text(("api", "credentials", "access_key")).strip(),
        secret_key=r.text(("api", "credentials", "secret_key")).strip(),
    )


def _read_package_manager(r: _Reader) -> PackageManagerConfig:
    pm = ("agent", "package_manager")
    kind = r.text((*pm, "type")).strip().lower() or "uv"
    if kind == "conda":
        raise r.error((*pm, "type"), "'conda' is not supported yet (use uv or pip); "
                      "conda support is planned")
    if kind == "poetry":
        raise r.error((*pm, "type"), "'poetry' is not supported yet (use uv or pip)")
    if kind not in PACKAGE_MANAGERS:
        raise r.error((*pm, "type"), f"{kind!r} is not a package manager bosun supports "
                      f"(allowed: {', '.join(PACKAGE_MANAGERS)})")
    return PackageManagerConfig(
        type=kind,
        pip_version=r.text((*pm, "pip_version")).strip(),
        system_site_packages=r.flag((*pm, "system_site_packages"), False),
        force_upgrade=r.flag((*pm, "force_upgrade"), False),
        extra_index_url=r.strings((*pm, "extra_index_url")),
        priority_packages=r.strings((*pm, "priority_packages")),
        priority_optional_packages=r.strings((*pm, "priority_optional_packages")),
        post_packages=r.strings((*pm, "post_packages")),
        post_optional_packages=r.strings((*pm, "post_optional_packages")),
    )


def _read_agent(r: _Reader) -> AgentConfig:
    a = ("agent",)
    port = r.get((*a, "force_git_ssh_port"), _as_int, 0)
    if not 0 <= port <= 65535:
        raise r.error((*a, "force_git_ssh_port"), f"expected a port number (0-65535), got {port}")
    vc = ("agent", "venvs_cache")
    max_entries = r.get((*vc, "max_entries"), _as_int, 10)
    uptime, downtime = _read_schedule(r)
    if max_entries < 0:
        raise r.error((*vc, "max_entries"), f"expected 0 or more, got {max_entries}")
    return AgentConfig(
        git_user=r.text((*a, "git_user")).strip(),
        git_pass=r.text((*a, "git_pass")),
        git_host=r.text((*a, "git_host")).strip(),
        force_git_ssh_protocol=r.flag((*a, "force_git_ssh_protocol"), False),
        force_git_ssh_port=port,
        force_git_ssh_user=r.text((*a, "force_git_ssh_user")).strip(),
        worker_id=r.text((*a, "worker_id")).strip(),
        worker_name=r.text((*a, "worker_name")).strip(),
        python_binary=r.text((*a, "python_binary")).strip(),
        package_manager=_read_package_manager(r),
        venvs_dir=r.path((*a, "venvs_dir"), "~/.clearml/venvs-builds"),
        venvs_cache=VenvsCacheConfig(
            max_entries=max_entries,
            free_space_threshold_gb=r.get((*vc, "free_space_threshold_gb"), _as_float, 2.0),
            path=r.path((*vc, "path"), "~/.clearml/venvs-cache"),
            enabled=r.flag((*vc, "enabled"), True),
        ),
        vcs_cache=VcsCacheConfig(
            enabled=r.flag(("agent", "vcs_cache", "enabled"), True),
            path=r.path(("agent", "vcs_cache", "path"), "~/.clearml/vcs-cache"),
        ),
        pip_download_cache=PipDownloadCacheConfig(
            enabled=r.flag(("agent", "pip_download_cache", "enabled"), True),
            path=r.path(("agent", "pip_download_cache", "path"), "~/.clearml/pip-download-cache"),
        ),
        translate_ssh=r.flag((*a, "translate_ssh"), True),
        reload_config=r.flag((*a, "reload_config"), False),
        enable_task_env=r.flag((*a, "enable_task_env"), False),
        uptime=uptime,
        downtime=downtime,
        default_docker=DefaultDockerConfig(
            image=r.text((*a, "default_docker", "image")).strip(),
            arguments=r.get((*a, "default_docker", "arguments"), _as_arguments, []),
        ),
        extra_docker_arguments=r.get((*a, "extra_docker_arguments"), _as_arguments, []),
        extra_docker_shell_script=r.strings((*a, "extra_docker_shell_script")),
        docker_force_pull=r.flag((*a, "docker_force_pull"), False),
    )


def _read_schedule(r: _Reader) -> tuple[list[str], list[str]]:
    """`agent.uptime` / `agent.downtime`: lists of "<hours> <days>" specs, only one of them."""
    from bosun.agent.schedule import ScheduleError, parse_spec

    specs: dict[str, list[str]] = {}
    for kind in ("uptime", "downtime"):
        path = ("agent", kind)
        specs[kind] = [s.strip() for s in r.strings(path) if s.strip()]
        for spec in specs[kind]:
            try:
                parse_spec(spec)
            except ScheduleError as exc:
                raise r.error(path, str(exc)) from None
    if specs["uptime"] and specs["downtime"]:
        raise r.error(("agent", "uptime"), "set only one of agent.uptime and agent.downtime")
    return specs["uptime"], specs["downtime"]


# ---------------------------------------------------------------------------------------------
# Printing.

MASK = "****"


def mask_secret(value: str) -> str:
    """A secret as printed: nothing of it shows."""
    return MASK if value else ""


def mask_access_key(value: str) -> str:
    """An access key as printed: its first 4 characters, enough to tell keys apart."""
    if not value:
        return ""
    return value[:4] + MASK if len(value) > 8 else MASK


def masked(config: Config) -> dict[str, Any]:
    """The effective configuration as a nested dict in the file's layout, secrets masked."""
    api = config.api
    agent = _jsonable(dataclasses.asdict(config.agent))
    agent["git_pass"] = mask_secret(config.agent.git_pass)
    return {
        "api": {
            "api_server": api.api_server,
            "web_server": api.web_server,
            "files_server": api.files_server,
            "credentials": {
                "access_key": mask_access_key(api.access_key),
                "secret_key": mask_secret(api.secret_key),
            },
        },
        "agent": agent,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
