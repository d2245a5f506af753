"""The wire protocol: URL forms, methods, the envelope, and errors that never leak a traceback."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from bosun.api.errors import ApiError
from bosun.client import Session
from tests.support.server_process import ServerProcess


def _post(
    server: ServerProcess, path: str, body: object = None, **kwargs: object
) -> httpx.Response:
    content = body if isinstance(body, str | bytes) else json.dumps(body or {})
    return httpx.post(f"{server.url}{path}", content=content, timeout=10, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["/v2.23/debug.ping", "/v2.5/debug.ping", "/debug.ping"])
def test_any_version_prefix_and_none(server: ServerProcess, path: str) -> None:
    response = _post(server, path)
    assert response.status_code == 200
    meta = response.json()["meta"]
    assert meta["result_code"] == 200
    assert meta["endpoint"]["name"] == "debug.ping"
    assert set(meta) >= {"id", "trx", "endpoint", "result_code", "result_subcode", "result_msg",
                         "error_stack"}
    assert response.json()["data"] == {"msg": "bosun server"}


def test_version_is_echoed(server: ServerProcess) -> None:
    meta = _post(server, "/v2.13/server.info").json()["meta"]
    assert meta["endpoint"]["requested_version"] == "2.13"
    assert meta["endpoint"]["actual_version"] == "2.23"


def test_get_with_json_body_and_stray_method_key(server: ServerProcess) -> None:
    response = httpx.request("GET", f"{server.url}/v2.23/tasks.create", timeout=10,
                             content=json.dumps({"name": "via-get", "method": "get"}))
    assert response.status_code == 200
    task_id = response.json()["data"]["id"]
    got = httpx.request("GET", f"{server.url}/v2.23/tasks.get_by_id", timeout=10,
                        content=json.dumps({"task": task_id})).json()["data"]["task"]
    assert got["name"] == "via-get"
    assert "method" not in got


def test_ids_are_32_hex(api: Session) -> None:
    task_id = api.call("tasks.create", {"name": "hex"})["id"]
    assert len(task_id) == 32
    assert all(c in "0123456789abcdef" for c in task_id)


@pytest.mark.parametrize(
    ("path", "body", "code", "subcode", "words"),
    [
        ("/v2.23/tasks.nope", {}, 400, 1, "not supported"),
        ("/v2.23/tasks.get_by_id", "{not json", 400, 12, "malformed JSON"),
        ("/v2.23/tasks.get_by_id", "[1, 2]", 400, 12, "JSON object"),
        ("/v2.23/tasks.get_by_id", {}, 400, 11, "'task'"),
        ("/v2.23/tasks.get_by_id", {"task": "0" * 32}, 400, 101, "invalid task id"),
        ("/v2.23/queues.get_by_id", {"queue": "default"}, 400, 701, "invalid queue id"),
        ("/v2.23/projects.get_by_id", {"project": "x"}, 400, 401, "invalid project id"),
        ("/v2.23/tasks.get_all", {"name": "(unclosed"}, 400, 21, "regular expression"),
        ("/v2.23/tasks.create", {"name": 5}, 400, 12, "must be a string"),
        ("/some/deep/path", {}, 400, 1, "no such endpoint"),
    ],
)
def test_errors_are_clear_envelopes(server: ServerProcess, path: str, body: object, code: int,
                                    subcode: int, words: str) -> None:
    response = _post(server, path, body)
    assert response.status_code == code
    meta = response.json()["meta"]
    assert (meta["result_code"], meta["result_subcode"]) == (code, subcode)
    assert words in meta["result_msg"]
    assert "Traceback" not in response.text


def test_login_without_auth_accepts_any_pair_and_token_is_a_jwt(server: ServerProcess) -> None:
    token = _post(server, "/auth.login", auth=("anything", "goes")).json()["data"]["token"]
    _header, claims, signature = token.split(".")
    padded = claims + "=" * (-len(claims) % 4)
    decoded = json.loads(base64.urlsafe_b64decode(padded))
    assert decoded["api_version"] >= "2.13"
    assert decoded["feature_set"] == "basic"
    assert decoded["identity"]["user"] and decoded["identity"]["company"]
    assert decoded["exp"] > decoded["iat"]
    assert signature


def test_auth_required_refuses_calls_without_valid_token(new_db: object) -> None:
    db = new_db()  # type: ignore[operator]
    import subprocess
    import sys

    created = subprocess.run(
        [sys.executable, "-m", "bosun", "server", "credentials", "create", "--db", db, "--json"],
        capture_output=True, text=True, check=True)
    creds = json.loads(created.stdout)
    with ServerProcess(db, auth=True) as server:
        assert _post(server, "/v2.23/tasks.get_all").status_code == 401
        bad = _post(server, "/v2.23/tasks.get_all", headers={"Authorization": "Bearer x.y.z"})
        assert bad.status_code == 401
        assert bad.json()["meta"]["result_code"] == 401
        wrong = _post(server, "/auth.login", auth=(creds["access_key"], "wrong"))
        assert wrong.status_code == 401
        with pytest.raises(ApiError) as err:
            Session(server.url, creds["access_key"], "wrong").call("tasks.get_all")
        assert err.value.code == 401
        with Session(server.url, creds["access_key"], creds["secret_key"]) as session:
            assert "tasks" in session.call("tasks.get_all")
            made = session.call("auth.create_credentials")["credentials"]
        with Session(server.url, made["access_key"], made["secret_key"]) as session:
            assert session.call("queues.get_default")["id"]
