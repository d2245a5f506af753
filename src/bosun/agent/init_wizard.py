"""`bosun agent init`: the `clearml-agent init` setup wizard, writing a new clearml.conf.

The wizard talks through two callables so that the CLI (input/print/getpass) and tests (a
scripted list of answers) drive it the same way. An `EOFError` from `ask` aborts cleanly: the file
is written only at the very end.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyparsing
from pyhocon import ConfigFactory, ConfigTree
from pyhocon.exceptions import ConfigException

from bosun.agent.config import (
    DEFAULT_API_SERVER,
    ApiConfig,
    mask_access_key,
    mask_secret,
)
from bosun.agent.config_file import hocon_error

ATTEMPTS = 3
MAX_PASTE_LINES = 200
PASTE_PROMPT = "Paste copied configuration here:"


@dataclass(frozen=True)
class Pasted:
    """What a pasted credentials block held (hosts are blank when it had none)."""

    access_key: str
    secret_key: str
    web_server: str = ""
    api_server: str = ""
    files_server: str = ""


class PasteError(ValueError):
    pass


def brace_depth(text: str) -> int:
    """Open `{` minus `}` outside double-quoted strings: > 0 means more lines are coming."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
    return depth


def _looks_like_pair(line: str) -> bool:
    tokens = line.split()
    return (len(tokens) == 2 and "{" not in tokens and "access_key" not in line
            and not line.rstrip().endswith("{"))


def parse_pasted(text: str) -> Pasted:
    """Reads the block the web UI copies (`api { ... credentials { ... } }`, or any part of it
    holding access_key and secret_key), or a bare `ACCESS_KEY SECRET_KEY` pair (any text
    without "access_key")."""
    text = text.strip()
    if not text:
        raise PasteError("nothing was pasted")
    if "access_key" not in text:
        tokens = [t.strip("\"'") for t in re.split(r"[\s,]+", text) if t.strip("\"'")]
        if len(tokens) != 2:
            raise PasteError("expected the copied configuration block, or an access key and a "
                             "secret key separated by a space")
        return Pasted(access_key=tokens[0], secret_key=tokens[1])
    try:
        tree = ConfigFactory.parse_string(text)
    except (pyparsing.ParseBaseException, ConfigException) as exc:
        raise PasteError("cannot read the pasted block: "
                         f"{hocon_error(exc, show_text=False)}") from None
    if not isinstance(tree, ConfigTree):
        raise PasteError("the pasted block holds no credentials")
    api = tree.get("api", tree)
    api = api if isinstance(api, ConfigTree) else tree
    creds = api.get("credentials", api)
    creds = creds if isinstance(creds, ConfigTree) else api
    access, secret = creds.get("access_key", None), creds.get("secret_key", None)
    if not isinstance(access, str) or not isinstance(secret, str) or not access or not secret:
        raise PasteError("the pasted block has no access_key and secret_key")

    def host(key: str) -> str:
        value = api.get(key, "")
        return value.strip().rstrip("/") if isinstance(value, str) else ""

    return Pasted(access_key=access.strip(), secret_key=secret.strip(),
                  web_server=host("web_server"), api_server=host("api_server"),
                  files_server=host("files_server"))


def derive_hosts(web_server: str) -> tuple[str, str]:
    """API and file server URLs from a web app URL the way ClearML lays them out: `app.` ->
    `api.` / `files.` (also `demoapp.` -> `demoapi.`), or port 8080 -> 8008 / 8081. Blank when
    the web URL follows neither pattern."""
    try:
        parts = urlsplit(web_server)
        port = parts.port
    except ValueError:
        return "", ""
    host = parts.hostname or ""
    first, dot, rest = host.partition(".")

    def url(netloc: str) -> str:
        return urlunsplit((parts.scheme, netloc, "", "", ""))

    if dot and first.endswith("app"):
        stem = first[: -len("app")]
        port_part = f":{port}" if port else ""
        return url(f"{stem}api.{rest}{port_part}"), url(f"{stem}files.{rest}{port_part}")
    if port == 8080:
        base = parts.netloc.rsplit(":", 1)[0]
        return url(f"{base}:8008"), url(f"{base}:8081")
    return "", ""


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a quoted HOCON string


def render_agent_section(git_user: str = "", git_pass: str = "",
                         extra_index_url: Sequence[str] = ()) -> str:
    """bosun's `agent {}` section: the keys it reads, with their defaults commented."""
    index_urls = ", ".join(_q(u) for u in extra_index_url)
    return f"""agent {{
    # Git credentials for cloning over https (a personal access token works as the password);
    # leave both blank to clone with your SSH keys, or for public repositories only.
    git_user: {_q(git_user)}
    git_pass: {_q(git_pass)}
    # Send the credentials only to this host (e.g. github.com); blank: to any host.
    git_host: ""
    # Clone over SSH whatever URL the task has (needs blank git_user/git_pass).
    force_git_ssh_protocol: false
    # force_git_ssh_port: 0
    # force_git_ssh_user: git

    # Worker id; blank: <hostname>:<pid>. Env: CLEARML_WORKER_ID / BOSUN_WORKER_ID
    worker_id: ""
    # Replaces the hostname in the worker id. Env: CLEARML_WORKER_NAME / BOSUN_WORKER_NAME
    worker_name: ""
    # Python to build task environments with, e.g. "/usr/bin/python3"; blank: the default.
    python_binary: ""

    package_manager {{
        # uv (default) or pip
        type: uv
        # pip version for type: pip (e.g. "<25"); blank: the latest
        pip_version: ""
        system_site_packages: false
        force_upgrade: false
        # extra package indexes, e.g. ["https://my.index/simple"]
        extra_index_url: [{index_urls}]
        # priority_packages: ["numpy", ]
        # priority_optional_packages: []
        # post_packages: []
        # post_optional_packages: []
    }}

    # Where task environments are built.
    venvs_dir: "~/.clearml/venvs-builds"
    venvs_cache {{
        enabled: true
        max_entries: 10
        # no new cache entry below this much free disk space; 0 or less: no limit
        free_space_threshold_gb: 2.0
        path: "~/.clearml/venvs-cache"
    }}
    vcs_cache {{
        enabled: true
        path: "~/.clearml/vcs-cache"
    }}
    pip_download_cache {{
        enabled: true
        path: "~/.clearml/pip-download-cache"
    }}
    translate_ssh: true
    reload_config: false
    # Set the task's "Environment" hyperparameters as environment variables of its process.
    enable_task_env: false
}}
"""


def render_config(api: ApiConfig, git_user: str = "", git_pass: str = "",
                  extra_index_url: Sequence[str] = ()) -> str:
    """A whole new configuration file: ClearML's `api {}` section and bosun's `agent {}`."""
    return f"""# bosun agent configuration, written by `bosun agent init`.
# ClearML's clearml.conf format (HOCON): the clearml SDK reads the api section too.
api {{
    web_server: {_q(api.web_server)}
    api_server: {_q(api.api_server)}
    files_server: {_q(api.files_server)}
    credentials {{
        "access_key" = {_q(api.access_key)}
        "secret_key" = {_q(api.secret_key)}
    }}
}}

{render_agent_section(git_user, git_pass, extra_index_url)}"""


class _Aborted(Exception):
    """Given up after too many bad answers (the reason was already said)."""


class _Wizard:
    def __init__(self, ask: Callable[[str], str], say: Callable[[str], None],
                 ask_secret: Callable[[str], str],
                 verify: Callable[[ApiConfig], str | None]) -> None:
        self.ask = ask
        self.say = say
        self.ask_secret = ask_secret
        self.verify = verify

    def read_paste(self, prompt: str) -> str:
        lines = [self.ask(prompt)]
        if _looks_like_pair(lines[0]):  # a secret may hold a "{": no more lines are coming
            return lines[0]
        while brace_depth("\n".join(lines)) > 0:
            if len(lines) >= MAX_PASTE_LINES:
                break
            lines.append(self.ask(""))
        return "\n".join(lines)

    def ask_url(self, label: str, default: str, required: bool) -> str:
        for _ in range(ATTEMPTS):
            answer = self.ask(f"{label} configured to: [{default}] ").strip() or default
            answer = answer.rstrip("/")
            if not answer and not required:
                return ""
            if re.fullmatch(r"https?://[^\s/]+(/\S*)?", answer):
                host = urlsplit(answer).hostname or ""
                if answer.startswith("http://") and host not in ("127.0.0.1", "localhost",
                                                                  "::1"):
                    self.say(f"Note: {answer} is plain http; use https for a server reached "
                             "over a network.")
                return answer
            self.say(f"{answer!r} is not a URL: it must start with http:// or https://"
                     if answer else f"{label} is required.")
        self.say(f"No valid {label} after {ATTEMPTS} tries.")
        raise _Aborted

    def credentials(self) -> ApiConfig:
        previous: ApiConfig | None = None
        for attempt in range(1, ATTEMPTS + 1):
            if previous is None:
                text = self.read_paste(PASTE_PROMPT)
            else:
                text = self.read_paste("Paste copied configuration again (or press Enter to "
                                       "keep the same credentials):")
            try:
                if previous is not None and not text.strip():
                    pasted = Pasted(previous.access_key, previous.secret_key,
                                    previous.web_server, previous.api_server,
                                    previous.files_server)
                else:
                    pasted = parse_pasted(text)
            except PasteError as exc:
                self.say(f"Could not read credentials: {exc}")
                continue
            self.say(f'Detected credentials key="{mask_access_key(pasted.access_key)}" '
                     f'secret="{mask_secret(pasted.secret_key)}"')
            web = self.ask_url("WEB Host", pasted.web_server, required=False)
            derived_api, derived_files = derive_hosts(web) if web else ("", "")
            api_host = self.ask_url("API Host", pasted.api_server or derived_api
                                    or DEFAULT_API_SERVER, required=True)
            files = self.ask_url("File Store Host", pasted.files_server or derived_files,
                                 required=False)
            api = ApiConfig(api_server=api_host, web_server=web, files_server=files,
                            access_key=pasted.access_key, secret_key=pasted.secret_key)
            self.say("Hosts configuration:")
            self.say(f"Web App: {web or '(none)'}")
            self.say(f"API: {api_host}")
            self.say(f"File Store: {files or '(none)'}")
            self.say("Verifying credentials ...")
            error = self.verify(api)
            if error is None:
                self.say("Credentials verified!")
                return api
            self.say(f"Could not verify credentials: {error}")
            if attempt < ATTEMPTS:
                self.say(f"Try again ({ATTEMPTS - attempt} more "
                         f"{'try' if attempt == ATTEMPTS - 1 else 'tries'}).")
            previous = api
        self.say(f"Giving up after {ATTEMPTS} attempts.")
        raise _Aborted

    def git(self) -> tuple[str, str]:
        user = self.ask("Enter git username for repository cloning (leave blank for SSH key "
                        "authentication): [] ").strip()
        if not user:
            self.say("Git repository cloning will use SSH keys (or public access only).")
            return "", ""
        password = self.ask_secret(f"Enter password for user '{user}': ")
        self.say(f"Git repository cloning will be using user={user} "
                 f"password={mask_secret(password) or '(blank)'}")
        return user, password

    def extra_index(self) -> list[str]:
        answer = self.ask("Enter additional artifact repository (extra-index-url) to use when "
                          "installing python packages (leave blank if not required): ")
        urls = [u for u in re.split(r"[\s,]+", answer.strip()) if u]
        if urls:
            self.say(f"Additional package index: {', '.join(urls)}")
        return urls


def run_init(ask: Callable[[str], str], say: Callable[[str], None], config_path: Path,
             verify: Callable[[ApiConfig], str | None],
             ask_secret: Callable[[str], str] | None = None) -> int:
    """Runs the setup wizard; returns the exit code (0: a new file written, 1: nothing written).

    `verify(api)` returns None when the server accepts the credentials, else an error message
    (it should not raise). `ask_secret` reads the git password (e.g. getpass); default `ask`.
    """
    if config_path.exists() or config_path.is_symlink():
        _explain_existing(say, config_path)
        return 1
    wizard = _Wizard(ask, say, ask_secret or ask, verify)
    say("bosun agent setup (as `clearml-agent init`)")
    say("Create new credentials in your ClearML web app's profile page (\"Create new "
        "credentials\", then \"Copy to clipboard\"), or on a bosun server with "
        "`bosun server credentials create`.")
    try:
        api = wizard.credentials()
        git_user, git_pass = wizard.git()
        extra_index_url = wizard.extra_index()
    except EOFError:
        say("")
        say("Aborted: no configuration written.")
        return 1
    except _Aborted:
        say("No configuration written.")
        return 1
    text = render_config(api, git_user, git_pass, extra_index_url)
    try:
        _write_private(config_path, text)
    except FileExistsError:
        _explain_existing(say, config_path)
        return 1
    except OSError as exc:
        say(f"Cannot write {config_path}: {exc.strerror or exc}")
        return 1
    say(f"New configuration stored in {config_path}")
    say("bosun agent setup completed successfully.")
    return 0


def _write_private(path: Path, text: str) -> None:
    """Creates `path` (never replacing a file) readable by its owner only: mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text)


def _explain_existing(say: Callable[[str], None], config_path: Path) -> None:
    say(f"Configuration file already exists: {config_path}")
    say("bosun does not edit or overwrite an existing configuration file.")
    if _has_agent_section(config_path):
        say("It already has an agent section; `bosun agent config` shows the settings in "
            "effect.")
        return
    say("To configure the agent, add this agent section after its api section:")
    say("")
    say(render_agent_section().rstrip("\n"))


def _has_agent_section(path: Path) -> bool:
    try:
        tree = ConfigFactory.parse_file(str(path))
    except (pyparsing.ParseBaseException, ConfigException, OSError, UnicodeDecodeError):
        return False
    return isinstance(tree, ConfigTree) and "agent" in tree
