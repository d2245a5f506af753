"""`bosun server` as a user runs it: help, clear errors for mistakes, credentials."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from tests.support.server_process import ServerProcess

from ..conftest import DbFactory


def _bosun(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bosun", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_help_explains_options() -> None:
    result = _bosun("server", "--help")
    assert result.returncode == 0
    for option in ("--host", "--port", "--db", "--auth", "--no-auth", "--log-level"):
        assert option in result.stdout


def test_no_command_prints_help() -> None:
    result = _bosun()
    assert result.returncode == 2
    assert "server" in result.stdout


def test_port_in_use_is_one_clear_line(tmp_path: object) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = _bosun("server", "--port", str(port), "--db", f"{tmp_path}/x.db")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_database_is_one_clear_line() -> None:
    result = _bosun("server", "--port", "0", "--db",
                    "postgresql://nobody:pw@127.0.0.1:1/none")
    assert result.returncode == 1
    assert "cannot open database" in result.stderr
    assert "pw" not in result.stderr  # the password is masked
    assert "Traceback" not in result.stderr


def test_credentials_create_then_login(new_db: DbFactory) -> None:
    db = new_db()
    result = _bosun("server", "credentials", "create", "--db", db, "--json")
    assert result.returncode == 0, result.stderr
    creds = json.loads(result.stdout)
    assert len(creds["access_key"]) >= 16 and len(creds["secret_key"]) >= 32
    human = _bosun("server", "credentials", "create", "--db", db)
    assert "access_key" in human.stdout and "clearml.conf" in human.stdout
    with ServerProcess(db, auth=True) as server:
        import httpx

        ok = httpx.post(f"{server.url}/auth.login", auth=(creds["access_key"],
                                                          creds["secret_key"]))
        assert ok.status_code == 200 and ok.json()["data"]["token"].count(".") == 2


def test_debug_log_level_logs_request_timing(new_db: DbFactory) -> None:
    with ServerProcess(new_db(), extra_args=["--log-level", "debug"]) as server:
        import httpx

        httpx.post(f"{server.url}/v2.23/tasks.get_all", json={})
        log = server.log()
    assert "tasks.get_all 200" in log
    assert "ms" in log.split("tasks.get_all 200", 1)[1].splitlines()[0]
