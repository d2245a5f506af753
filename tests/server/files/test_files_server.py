"""bosun's files server (`/files` on the API's port) on a real server process: ClearML's
fileserver protocol (multipart upload named by path, download with Range, delete, delete_many),
paths kept inside its folder, the API's auth, a size limit, and no half file ever visible: not
to a reader during an overwrite, not after a client hangs up, not after the server is killed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server_process import ServerProcess


@pytest.fixture(scope="module")
def files_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("files-server")
    with ServerProcess(str(root / "bosun.db"), extra_args=["--max-file-mb", "4"]) as server:
        yield server


def _root(server: ServerProcess) -> Path:
    return Path(server.db).parent / "files"


def _upload(server: ServerProcess, parts: dict[str, bytes], **kwargs: object) -> httpx.Response:
    files = {name: (name.rsplit("/", 1)[-1], data) for name, data in parts.items()}
    return httpx.post(f"{server.url}/files", files=files, timeout=60, **kwargs)  # type: ignore


def _visible(server: ServerProcess) -> list[str]:
    root = _root(server)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and ".incoming" not in p.parts)


def _incoming(server: ServerProcess) -> list[Path]:
    return list((_root(server) / ".incoming").glob("*.part"))


def test_upload_download_range_and_delete(files_server: ServerProcess) -> None:
    url = f"{files_server.url}/files"
    data = bytes(range(256)) * 100
    saved = _upload(files_server, {"p/t.1/artifacts/a/a.bin": data, "p/t.1/x.csv.gz": b"gz"})
    assert saved.status_code == 200 and saved.json() == ["p/t.1/artifacts/a/a.bin",
                                                          "p/t.1/x.csv.gz"]
    whole = httpx.get(f"{url}/p/t.1/artifacts/a/a.bin")
    assert whole.status_code == 200 and whole.content == data
    part = httpx.get(f"{url}/p/t.1/artifacts/a/a.bin", headers={"Range": "bytes=256-511"})
    assert part.status_code == 206 and part.content == bytes(range(256))
    assert part.headers["content-range"] == f"bytes 256-511/{len(data)}"
    head = httpx.head(f"{url}/p/t.1/artifacts/a/a.bin")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
    attachment = httpx.get(f"{url}/p/t.1/artifacts/a/a.bin?download")
    assert "attachment" in attachment.headers["content-disposition"]
    gz = httpx.get(f"{url}/p/t.1/x.csv.gz")  # bytes as stored, not unpacked on the way
    assert gz.headers["content-type"] == "application/octet-stream" and gz.content == b"gz"
    assert "content-encoding" not in gz.headers

    assert httpx.delete(f"{url}/p/t.1/artifacts/a/a.bin").status_code == 200
    missing = httpx.get(f"{url}/p/t.1/artifacts/a/a.bin")
    assert missing.status_code == 404 and "no such file" in missing.json()["meta"]["result_msg"]
    assert httpx.delete(f"{url}/p/t.1/artifacts/a/a.bin").status_code == 404
    assert not (_root(files_server) / "p/t.1/artifacts").exists()  # emptied folders go too


def test_delete_many_takes_files_and_folders_and_names_what_it_could_not(
        files_server: ServerProcess) -> None:
    _upload(files_server, {"dm/t.2/a/1.bin": b"1", "dm/t.2/a/2.bin": b"2", "dm/t.2/b.bin": b"b"})
    answer = httpx.post(f"{files_server.url}/files/delete_many",
                        json={"files": ["dm/t.2/a", "dm/t.2/b.bin", "dm/none", "../etc"]})
    assert answer.status_code == 200
    body = answer.json()
    assert body["deleted"] == {"dm/t.2/a": "dm/t.2/a", "dm/t.2/b.bin": "dm/t.2/b.bin"}
    assert body["errors"]["Not found"] == ["dm/none"]
    assert any("../etc" in paths for paths in body["errors"].values())
    assert not [p for p in _visible(files_server) if p.startswith("dm/")]
    bad = httpx.post(f"{files_server.url}/files/delete_many", json={"files": "x"})
    assert bad.status_code == 400 and "files" in bad.json()["meta"]["result_msg"]


@pytest.mark.parametrize("path", ["../outside.bin", "a/../../outside.bin", ".incoming/x.part",
                                  "a//b", "a/./b", "..\\outside.bin"])
def test_a_path_outside_the_folder_is_refused_and_nothing_written(
        files_server: ServerProcess, path: str) -> None:
    before = _visible(files_server)
    answer = _upload(files_server, {path: b"evil"})
    assert answer.status_code == 400, answer.text
    assert "path" in answer.json()["meta"]["result_msg"]
    assert _visible(files_server) == before
    assert not (_root(files_server).parent / "outside.bin").exists()
    assert httpx.get(f"{files_server.url}/files/{path}").status_code in (400, 404)


def test_a_file_over_the_limit_gets_413_and_leaves_nothing(files_server: ServerProcess) -> None:
    answer = _upload(files_server, {"big/too-big.bin": b"x" * (5 << 20)})
    assert answer.status_code == 413 and "--max-file-mb" in answer.json()["meta"]["result_msg"]
    assert not [p for p in _visible(files_server) if p.startswith("big/")]
    assert _incoming(files_server) == []


def test_not_multipart_is_a_400(files_server: ServerProcess) -> None:
    answer = httpx.post(f"{files_server.url}/files", content=b"raw bytes")
    assert answer.status_code == 400 and "multipart" in answer.json()["meta"]["result_msg"]


def test_readers_during_overwrites_see_a_whole_old_or_a_whole_new_file(
        files_server: ServerProcess) -> None:
    size = 2 << 20
    versions = {b"a" * size, b"b" * size}
    _upload(files_server, {"race/f.bin": b"a" * size})
    seen: list[str] = []
    stop = threading.Event()

    def read() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                got = client.get(f"{files_server.url}/files/race/f.bin").content
                seen.append("ok" if got in versions else f"torn: {len(got)} bytes")

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    for n in range(12):
        assert _upload(files_server, {"race/f.bin": (b"a", b"b")[n % 2] * size}).status_code == 200
    stop.set()
    for reader in readers:
        reader.join()
    assert seen and set(seen) == {"ok"}, [s for s in seen if s != "ok"][:3]


def _half_upload(url: str, path: str, total: int) -> socket.socket:
    """Sends the headers and half of a multipart upload of `total` bytes, then stops."""
    boundary = "bosun-test-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{path}\"; "
            f"filename=\"f.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall((f"POST /files HTTP/1.1\r\nHost: {host}\r\n"
                  f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                  f"Content-Length: {len(head) + total + len(tail)}\r\n\r\n").encode() + head)
    sock.sendall(b"z" * (total // 2))
    return sock


def _wait_for(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_a_client_that_hangs_up_mid_upload_leaves_no_file(files_server: ServerProcess) -> None:
    sock = _half_upload(files_server.url, "hangup/f.bin", 3 << 20)
    _wait_for(lambda: _incoming(files_server))  # the server is writing it
    sock.close()
    _wait_for(lambda: not _incoming(files_server))
    assert httpx.get(f"{files_server.url}/files/hangup/f.bin").status_code == 404
    assert not [p for p in _visible(files_server) if p.startswith("hangup/")]


def test_a_server_killed_mid_upload_leaves_no_file_and_its_leftovers_are_swept(
        tmp_path: Path) -> None:
    db = str(tmp_path / "bosun.db")
    with ServerProcess(db) as server:
        sock = _half_upload(server.url, "killed/f.bin", 3 << 20)
        _wait_for(lambda: _incoming(server))
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        sock.close()
        left = _incoming(server)
        assert left and not [p for p in _visible(server) if p.startswith("killed/")]
        old = time.time() - 7 * 3600  # left by a server that died hours ago
        for part in left:
            os.utime(part, (old, old))
    with ServerProcess(db) as again:
        assert _incoming(again) == []
        assert "removed 1 unfinished upload" in again.log()
        assert httpx.get(f"{again.url}/files/killed/f.bin").status_code == 404


def test_with_auth_on_every_file_call_needs_a_token(tmp_path: Path) -> None:
    db = str(tmp_path / "bosun.db")
    made = subprocess.run([sys.executable, "-m", "bosun", "server", "credentials", "create",
                           "--db", db, "--json"], capture_output=True, text=True, check=True)
    key = json.loads(made.stdout)
    with ServerProcess(db, auth=True) as server:
        url = f"{server.url}/files"
        for answer in (_upload(server, {"a/f.bin": b"x"}), httpx.get(f"{url}/a/f.bin"),
                       httpx.delete(f"{url}/a/f.bin"),
                       httpx.post(f"{url}/delete_many", json={"files": ["a"]})):
            assert answer.status_code == 401, answer.text
        assert _visible(server) == []
        token = httpx.post(f"{server.url}/auth.login",
                           auth=(key["access_key"], key["secret_key"])).json()["data"]["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert _upload(server, {"a/f.bin": b"x"}, headers=bearer).status_code == 200
        assert httpx.get(f"{url}/a/f.bin", headers=bearer).content == b"x"
        assert httpx.delete(f"{url}/a/f.bin", headers=bearer).status_code == 200
