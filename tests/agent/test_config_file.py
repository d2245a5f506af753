"""clearml.conf is parsed in a child process and cached by content: the caller never loads the
HOCON parser, the result is the parser's, and errors read as before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bosun.agent.config_file import (
    CACHE_ENTRIES,
    ConfigFileError,
    _cache_path,
    parse_here,
    read_config_file,
)

CONF = """
api { api_server: "http://example.com:8008", credentials { access_key: "AK", secret_key: "SK" } }
agent {
  package_manager { type: uv, extra_index_url: ["https://a.example/simple"] }
  venvs_cache.max_entries: 7
  default_docker.arguments: "--ipc=host --gpus all"
}
"""


def _fresh_cache_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}


def test_the_caller_gets_the_parsers_result_without_loading_the_parser(tmp_path: Path) -> None:
    conf = tmp_path / "clearml.conf"
    conf.write_text(CONF)
    probe = ("import json, sys; from pathlib import Path\n"
             "from bosun.agent.config_file import read_config_file\n"
             f"tree = read_config_file(Path({str(conf)!r}))\n"
             "print(json.dumps({'tree': tree, 'loaded': 'pyhocon' in sys.modules}))")
    env = _fresh_cache_env(tmp_path)
    for _ in range(2):  # a miss (child parses, cache written), then a hit
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             env=env, check=True).stdout
        result = json.loads(out)
        assert result == {"tree": parse_here(conf), "loaded": False}
    cached = list((tmp_path / "cache" / "bosun" / "config").glob("*.json"))
    assert len(cached) == 1
    assert result["tree"]["agent"]["venvs_cache"]["max_entries"] == 7


def test_a_changed_file_is_parsed_again(tmp_path: Path) -> None:
    conf = tmp_path / "clearml.conf"
    conf.write_text("agent { worker_name: one }")
    assert read_config_file(conf)["agent"]["worker_name"] == "one"
    conf.write_text("agent { worker_name: two }")
    assert read_config_file(conf)["agent"]["worker_name"] == "two"


def test_a_corrupt_cache_entry_is_ignored(tmp_path: Path) -> None:
    conf = tmp_path / "clearml.conf"
    conf.write_text("agent { worker_name: cached }")
    cache = _cache_path(conf.read_bytes())
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("{not json")
    assert read_config_file(conf) == {"agent": {"worker_name": "cached"}}


@pytest.mark.parametrize(("text", "expected"), [
    ("agent { worker_name: ", "line 1"),
    ("[1, 2]", "expected sections"),
])
def test_bad_files_raise_one_readable_line_naming_the_file(tmp_path: Path, text: str,
                                                          expected: str) -> None:
    conf = tmp_path / "clearml.conf"
    conf.write_text(text)
    with pytest.raises(ConfigFileError) as caught:
        read_config_file(conf)
    message = str(caught.value)
    assert message.startswith(str(conf)) and expected in message and "\n" not in message


def test_the_cache_keeps_a_bounded_number_of_entries(tmp_path: Path) -> None:
    probe = ("from pathlib import Path\nfrom bosun.agent.config_file import read_config_file\n"
             "import sys\nfor i in range(int(sys.argv[1])):\n"
             f"    conf = Path({str(tmp_path)!r}) / f'c{{i}}.conf'\n"
             "    conf.write_text(f'agent {{ worker_name: w{i} }}')\n"
             "    assert read_config_file(conf)['agent']['worker_name'] == f'w{i}'\n")
    subprocess.run([sys.executable, "-c", probe, str(CACHE_ENTRIES + 3)], check=True,
                   env=_fresh_cache_env(tmp_path))
    cached = list((tmp_path / "cache" / "bosun" / "config").glob("*.json"))
    assert len(cached) == CACHE_ENTRIES
