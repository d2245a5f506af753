"""`bosun agent init`: the setup wizard, driven by scripted answers."""

from __future__ import annotations

import stat
from collections.abc import Iterable
from pathlib import Path

import pytest

from bosun.agent.config import ApiConfig, Config, load_config
from bosun.agent.init_wizard import (
    PASTE_PROMPT,
    derive_hosts,
    parse_pasted,
    render_agent_section,
    run_init,
)

ACCESS = "EGRTCO8JMSIGI6S39GTP43NFWXDQOW"
SECRET = 'x!XTov_G-#vspE*Y(h$Anm&DIc5Ou-F)jsl$PdOyj5wG1&E!Z8{}"\\'
# What the web UI's "Copy to clipboard" gives, one line per ask() as a terminal delivers it.
WEB_UI_BLOCK = [
    "api {",
    "    web_server: https://app.example.org",
    "    api_server: https://api.example.org",
    "    files_server: https://files.example.org",
    "    credentials {",
    f'        "access_key" = "{ACCESS}"',
    '        "secret_key" = "' + SECRET.replace("\\", "\\\\").replace('"', '\\"') + '"',
    "    }",
    "}",
]


class Script:
    """An `ask` that gives scripted answers and then EOF, recording the prompts."""

    def __init__(self, answers: Iterable[str]) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.answers:
            raise EOFError
        return self.answers.pop(0)


class Verifier:
    """A `verify` that fails with the given messages first, then succeeds."""

    def __init__(self, *failures: str) -> None:
        self.failures = list(failures)
        self.calls: list[ApiConfig] = []

    def __call__(self, api: ApiConfig) -> str | None:
        self.calls.append(api)
        return self.failures.pop(0) if self.failures else None


class Wizard:
    def __init__(self, tmp_path: Path, answers: Iterable[str], *failures: str) -> None:
        self.path = tmp_path / "home" / "clearml.conf"
        self.ask = Script(answers)
        self.verify = Verifier(*failures)
        self.said: list[str] = []
        self.code = run_init(self.ask, self.said.append, self.path, self.verify)

    @property
    def output(self) -> str:
        return "\n".join(self.said)

    def config(self) -> Config:
        return load_config(self.path, environ={"HOME": str(self.path.parent)})


# After the paste: web, API and files hosts, git user, git password, extra index URL.
ACCEPT_DEFAULTS = ["", "", "", "", ""]


def test_web_ui_block_writes_a_config_that_loads_back(tmp_path: Path) -> None:
    run = Wizard(tmp_path, [*WEB_UI_BLOCK, "", "", "", "gituser", "gitpass",
                            "https://pypi.example.org/simple"])
    assert run.code == 0
    assert run.ask.prompts[0] == PASTE_PROMPT
    assert f"New configuration stored in {run.path}" in run.said
    assert 'Detected credentials key="EGRT****" secret="****"' in run.said
    assert "Credentials verified!" in run.said
    assert stat.S_IMODE(run.path.stat().st_mode) == 0o600
    api = ApiConfig(api_server="https://api.example.org", web_server="https://app.example.org",
                    files_server="https://files.example.org", access_key=ACCESS,
                    secret_key=SECRET)
    assert run.verify.calls == [api]
    config = run.config()
    assert config.api == api
    assert config.agent.git_user == "gituser"
    assert config.agent.git_pass == "gitpass"
    assert config.agent.package_manager.type == "uv"
    assert config.agent.package_manager.extra_index_url == ["https://pypi.example.org/simple"]
    assert config.notices == []
    assert SECRET not in run.output and "gitpass" not in run.output


@pytest.mark.parametrize(("paste", "hosts", "expected"), [
    # a bare key pair: the API host defaults to a local bosun server
    ([f"{ACCESS} {SECRET}"], ["", "", ""], ("", "http://127.0.0.1:8008", "")),
    ([f"{ACCESS} open{{brace"], ["", "", ""], ("", "http://127.0.0.1:8008", "")),
    # one-line block, hosts taken from it
    (['api { api_server: "http://srv:8008", credentials { access_key: "' + ACCESS
      + '", secret_key: "s" } }'], ["", "", ""], ("", "http://srv:8008", "")),
    # just the credentials part
    (["credentials {", f'"access_key" = "{ACCESS}"', '"secret_key" = "s"', "}"],
     ["https://app.example.org/", "", ""],
     ("https://app.example.org", "https://api.example.org", "https://files.example.org")),
    # API and files derived from a web host on ClearML's ports
    ([f"{ACCESS} s"], ["http://10.1.2.3:8080", "", ""],
     ("http://10.1.2.3:8080", "http://10.1.2.3:8008", "http://10.1.2.3:8081")),
    # typed answers override the defaults
    (WEB_UI_BLOCK, ["", "http://localhost:9000", "http://files:1"],
     ("https://app.example.org", "http://localhost:9000", "http://files:1")),
])
def test_hosts_default_from_the_paste(tmp_path: Path, paste: list[str], hosts: list[str],
                                      expected: tuple[str, str, str]) -> None:
    run = Wizard(tmp_path, [*paste, *hosts, "", ""])
    assert run.code == 0, run.output
    api = run.config().api
    assert (api.web_server, api.api_server, api.files_server) == expected
    assert api.access_key == ACCESS


def test_git_password_may_be_blank_and_uses_ask_secret(tmp_path: Path) -> None:
    path = tmp_path / "clearml.conf"
    ask, secret = Script([f"{ACCESS} s", "", "", "", "me", ""]), Script([""])
    said: list[str] = []
    assert run_init(ask, said.append, path, Verifier(), ask_secret=secret) == 0
    assert secret.prompts == ["Enter password for user 'me': "]
    agent = load_config(path, environ={"HOME": str(tmp_path)}).agent
    assert (agent.git_user, agent.git_pass) == ("me", "")


def test_extra_index_urls_may_be_several(tmp_path: Path) -> None:
    run = Wizard(tmp_path, [f"{ACCESS} s", "", "", "", "", "https://a/simple, https://b/simple"])
    assert run.config().agent.package_manager.extra_index_url == ["https://a/simple",
                                                                  "https://b/simple"]


def test_verify_failure_is_retried(tmp_path: Path) -> None:
    answers = [*WEB_UI_BLOCK, "", "http://wrong:1", "",          # refused
               "", "", "https://api.example.org", "",           # same keys, refused again
               *WEB_UI_BLOCK, "", "", "",                       # pasted again: verified
               *ACCEPT_DEFAULTS[:2]]
    run = Wizard(tmp_path, answers, "connection refused", "401 unauthorized")
    assert run.code == 0, run.output
    assert "Could not verify credentials: connection refused" in run.said
    assert "Could not verify credentials: 401 unauthorized" in run.said
    assert run.said.count("Try again (2 more tries).") == 1
    assert run.said.count("Try again (1 more try).") == 1
    assert [c.api_server for c in run.verify.calls] == [
        "http://wrong:1", "https://api.example.org", "https://api.example.org"]
    assert len({(c.access_key, c.secret_key) for c in run.verify.calls}) == 1
    # on a retry the hosts default to the previous answers
    assert "API Host configured to: [http://wrong:1] " in run.ask.prompts
    assert run.config().api.api_server == "https://api.example.org"


def test_three_verify_failures_write_nothing(tmp_path: Path) -> None:
    answers = [f"{ACCESS} s", "", "", "", "", "", "", "", "", "", "", "", ""]
    run = Wizard(tmp_path, answers, "no", "no", "no")
    assert run.code == 1
    assert len(run.verify.calls) == 3
    assert not run.path.exists()
    assert "No configuration written." in run.said


@pytest.mark.parametrize("bad_paste", ["just-one-token", "a b c", "api { credentials { } }",
                                       "{ nope", ""])
def test_unreadable_paste_is_asked_again(tmp_path: Path, bad_paste: str) -> None:
    lines = [bad_paste, "}"] if bad_paste.startswith("{") else [bad_paste]
    run = Wizard(tmp_path, [*lines, f"{ACCESS} s", *ACCEPT_DEFAULTS])
    assert run.code == 0, run.output
    assert any(line.startswith("Could not read credentials: ") for line in run.said)
    assert run.config().api.access_key == ACCESS


def test_paste_syntax_error_does_not_echo_the_paste(tmp_path: Path) -> None:
    run = Wizard(tmp_path, ["credentials {", '"access_key" = "k" "secret_key" = TOPSECRET!',
                            "}", f"{ACCESS} s", *ACCEPT_DEFAULTS])
    assert run.code == 0
    errors = [line for line in run.said if line.startswith("Could not read credentials")]
    assert len(errors) == 1
    assert "TOPSECRET" not in errors[0]
    assert "(line 2, column" in errors[0]


def test_bad_url_is_asked_again(tmp_path: Path) -> None:
    run = Wizard(tmp_path, [f"{ACCESS} s", "", "api.example.org", "https://api.example.org",
                            "", "", ""])
    assert run.code == 0
    assert "'api.example.org' is not a URL: it must start with http:// or https://" in run.said
    assert run.config().api.api_server == "https://api.example.org"


@pytest.mark.parametrize("answers_before_eof", [0, 1, 3, len(WEB_UI_BLOCK), len(WEB_UI_BLOCK) + 3,
                                                len(WEB_UI_BLOCK) + 4, len(WEB_UI_BLOCK) + 5])
def test_eof_aborts_without_writing(tmp_path: Path, answers_before_eof: int) -> None:
    answers = [*WEB_UI_BLOCK, "", "", "", "user", "pass", ""][:answers_before_eof]
    run = Wizard(tmp_path, answers)
    assert run.code == 1
    assert not run.path.exists()
    assert run.said[-1] == "Aborted: no configuration written."


def test_existing_file_is_left_alone_and_the_agent_section_shown(tmp_path: Path) -> None:
    path = tmp_path / "home" / "clearml.conf"
    path.parent.mkdir()
    original = ("api {\n  api_server: http://srv:8008\n"
                "  credentials {access_key: k, secret_key: s}\n}\n")
    path.write_text(original)
    path.chmod(0o644)
    ask, said = Script([]), []
    assert run_init(ask, said.append, path, Verifier()) == 1
    assert ask.prompts == []
    assert path.read_text() == original
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert said[0] == f"Configuration file already exists: {path}"
    shown = "\n".join(said)
    assert "add this agent section after its api section" in shown
    # what it shows, appended as told, is a valid configuration bosun reads without notices
    path.write_text(original + shown[shown.index("agent {"):])
    config = load_config(path, environ={"HOME": str(path.parent)})
    assert config.notices == []
    assert config.api.api_server == "http://srv:8008"
    assert config.agent.package_manager.type == "uv"


def test_existing_file_with_an_agent_section(tmp_path: Path) -> None:
    path = tmp_path / "clearml.conf"
    path.write_text("agent { git_user: x }\n")
    said: list[str] = []
    assert run_init(Script([]), said.append, path, Verifier()) == 1
    assert any("already has an agent section" in line for line in said)
    assert not any("agent {" in line for line in said)


def test_parent_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "bosun.conf"
    assert run_init(Script([f"{ACCESS} s", *ACCEPT_DEFAULTS]), print, path, Verifier()) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_default_agent_section_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "c.conf"
    path.write_text(render_agent_section("u", 'p"$x', ["https://i/simple"]))
    config = load_config(path, environ={"HOME": "/home/someone"})
    assert config.notices == []
    assert (config.agent.git_user, config.agent.git_pass) == ("u", 'p"$x')
    assert config.agent.venvs_dir == Path("/home/someone/.clearml/venvs-builds")
    assert config.agent.package_manager.extra_index_url == ["https://i/simple"]


@pytest.mark.parametrize(("web", "api", "files"), [
    ("https://app.clear.ml", "https://api.clear.ml", "https://files.clear.ml"),
    ("https://demoapp.demo.clear.ml", "https://demoapi.demo.clear.ml",
     "https://demofiles.demo.clear.ml"),
    ("http://localhost:8080", "http://localhost:8008", "http://localhost:8081"),
    ("https://ml.example.org", "", ""),
])
def test_derive_hosts(web: str, api: str, files: str) -> None:
    assert derive_hosts(web) == (api, files)


def test_parse_pasted_reads_the_web_ui_block() -> None:
    pasted = parse_pasted("\n".join(WEB_UI_BLOCK))
    assert (pasted.access_key, pasted.secret_key) == (ACCESS, SECRET)
    assert pasted.web_server == "https://app.example.org"
