"""`bosun server` as a user runs it: help, clear errors for mistakes, credentials."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import httpx

from bosun.api.errors import ApiError
from bosun.client import Session
from bosun.server.config import ServerConfig, is_loopback
from tests.support.server_process import ServerProcess, free_port

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


def test_no_auth_on_a_public_address_needs_insecure_public(tmp_path: object) -> None:
    refused = _bosun("server", "--host", "0.0.0.0", "--no-auth", "--db", f"{tmp_path}/p.db")
    assert refused.returncode == 1
    assert "--insecure-public" in refused.stderr and "Traceback" not in refused.stderr
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bosun", "server", "--host", "0.0.0.0", "--port", str(port),
         "--no-auth", "--insecure-public", "--db", f"{tmp_path}/p.db"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                assert httpx.post(f"http://127.0.0.1:{port}/debug.ping").status_code == 200
                break
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
    assert "INSECURE: auth is off on 0.0.0.0" in out


def test_127_1_is_loopback_and_0_0_0_0_is_not() -> None:
    assert is_loopback("127.1") and is_loopback("127.0.0.1") and is_loopback("::1")
    assert is_loopback("localhost") and is_loopback("127.3.2.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    assert not is_loopback("example.com")
    assert not ServerConfig(host="127.1").auth_required
    assert ServerConfig(host="0.0.0.0").auth_required


def test_credentials_list_and_revoke(new_db: DbFactory) -> None:
    db = new_db()
    made = json.loads(_bosun("server", "credentials", "create", "--db", db, "--json",
                             "--user", "alice").stdout)
    listed = _bosun("server", "credentials", "list", "--db", db, "--json")
    assert listed.returncode == 0
    entries = json.loads(listed.stdout)
    assert [e["access_key"] for e in entries] == [made["access_key"]]
    assert entries[0]["user"] == "alice" and made["secret_key"] not in listed.stdout
    with ServerProcess(db, auth=True) as server, \
            Session(server.url, made["access_key"], made["secret_key"]) as session:
        assert session.call("queues.get_default")["id"]
        revoked = _bosun("server", "credentials", "revoke", made["access_key"], "--db", db)
        assert revoked.returncode == 0 and "revoked" in revoked.stdout

        def refused() -> bool:  # every process learns of it within a few seconds
            try:
                session._send("queues.get_default", {})
                return False
            except ApiError as exc:
                return exc.code == 401

        deadline = time.monotonic() + 30
        while not refused() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert refused()
    again = _bosun("server", "credentials", "revoke", made["access_key"], "--db", db)
    assert again.returncode == 1 and "no credentials with access_key" in again.stderr
    assert _bosun("server", "credentials", "list", "--db", db).stdout.strip() == "no credentials"
