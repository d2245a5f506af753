"""The client session against a real server: login, calls, and the errors a user sees."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from bosun.api.errors import ApiError
from bosun.client import ConnectionFailed, Session
from tests.support.server_process import ServerProcess


def test_call_returns_data_and_raises_api_errors(server: ServerProcess) -> None:
    with Session(server.url, "k", "s") as api:
        assert api.call("debug.ping") == {"msg": "bosun server"}
        with pytest.raises(ApiError) as err:
            api.call("tasks.get_by_id", {"task": "0" * 32})
        assert (err.value.code, err.value.subcode) == (400, 101)
        assert "invalid task id" in err.value.msg


def test_unreachable_server_names_the_address() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with Session(f"http://127.0.0.1:{port}", "k", "s", timeout=2) as api, \
            pytest.raises(ConnectionFailed, match=f"127.0.0.1:{port}"):
        api.call("debug.ping")


def test_a_server_that_is_not_clearml_is_named() -> None:
    class Plain(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, *_args: object) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Plain)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with Session(f"http://127.0.0.1:{httpd.server_port}", "k", "s") as api, \
                pytest.raises(ApiError, match="without a ClearML envelope"):
            api.call("debug.ping")
    finally:
        httpd.shutdown()
