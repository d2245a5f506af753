"""A real git smart-HTTP server for tests: `git http-backend` behind a small WSGI app that asks
for HTTP Basic credentials (401 with WWW-Authenticate, as GitHub and GitLab do), and can hold
each answer for a while so a test can look at the client's processes mid-fetch."""

from __future__ import annotations

import base64
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(WSGIServer):
    daemon_threads = True

    def process_request(self, request: Any, client_address: Any) -> None:
        threading.Thread(target=self._handle, args=(request, client_address),
                         daemon=True).start()

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        finally:
            self.shutdown_request(request)


class GitHttpServer:
    """Serves the bare repositories under `root` at http://127.0.0.1:PORT/<name>."""

    def __init__(self, root: Path, user: str, password: str, delay: float = 0.0) -> None:
        self.root = root
        self._expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.delay = delay
        self.refused = 0
        self.served = 0
        self._server = make_server("127.0.0.1", 0, self._app, server_class=_ThreadingServer,
                                   handler_class=_Quiet)
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> GitHttpServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any],
             start: Callable[[str, list[tuple[str, str]]], Any]) -> Iterable[bytes]:
        if environ.get("HTTP_AUTHORIZATION") != self._expected:
            self.refused += 1
            start("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"'),
                                       ("Content-Type", "text/plain")])
            return [b"authentication required\n"]
        time.sleep(self.delay)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        cgi_env = {
            "GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": environ.get("PATH_INFO", ""),
            "QUERY_STRING": environ.get("QUERY_STRING", ""),
            "REQUEST_METHOD": environ["REQUEST_METHOD"],
            "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
            "CONTENT_LENGTH": str(len(body)), "REMOTE_USER": "tester",
            "REMOTE_ADDR": "127.0.0.1", "PATH": "/usr/bin:/bin",
            "HTTP_GIT_PROTOCOL": environ.get("HTTP_GIT_PROTOCOL", ""),
        }
        out = subprocess.run(["git", "http-backend"], input=body, env=cgi_env,
                             capture_output=True, check=False).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = "200 OK"
        headers: list[tuple[str, str]] = []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = value.strip()
            elif name:
                headers.append((name.strip(), value.strip()))
        self.served += 1
        start(status, headers)
        return [payload]
