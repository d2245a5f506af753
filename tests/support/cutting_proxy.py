"""A TCP proxy in front of a real server that cuts the connection after the server has answered
a chosen call, before the answer reaches the client: the fault where the server committed a
request but the client never learnt it (and so sends it again)."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class CuttingProxy:
    def __init__(self, upstream_port: int, marker: bytes, cuts: int = 1) -> None:
        self._upstream = upstream_port
        self._marker = marker  # bytes of the request whose answer is cut (e.g. the endpoint)
        self.cuts_left = cuts
        self.cut = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> CuttingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._upstream))
            cut_next = threading.Event()
            threading.Thread(target=self._requests, args=(client, server, cut_next),
                             daemon=True).start()
            threading.Thread(target=self._answers, args=(server, client, cut_next),
                             daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket,
                  cut_next: threading.Event) -> None:
        while data := _recv(client):
            if self._marker in data:
                with self._lock:
                    if self.cuts_left > 0:
                        self.cuts_left -= 1
                        cut_next.set()
            server.sendall(data)
        _close(client, server)

    def _answers(self, server: socket.socket, client: socket.socket,
                 cut_next: threading.Event) -> None:
        while data := _recv(server):
            if cut_next.is_set():  # the server has answered (so it committed): drop it
                self.cut += 1
                break
            client.sendall(data)
        _close(client, server)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
