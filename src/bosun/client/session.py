"""`Session`: log in with a key pair, call `service.action` endpoints, unwrap the envelope."""

from __future__ import annotations

import json
import sys
from typing import Any

# httpx loads its command-line tool (click, rich, pygments: ~80 modules, ~3 MiB, ~40 ms) whenever
# those happen to be installed; a client never uses it, and every agent and CLI start would pay.
# A None entry in sys.modules makes that optional import fail, which httpx handles.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx  # noqa: E402

from bosun.api.errors import ApiError  # noqa: E402

API_PREFIX = "/v2.23"


class ConnectionFailed(Exception):
    """The server could not be reached; the message names the address tried."""


class Session:
    def __init__(
        self,
        host: str,
        access_key: str = "",
        secret_key: str = "",
        *,
        token: str | None = None,
        worker: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.host = host.rstrip("/")
        self.worker = worker
        self._credentials = (access_key, secret_key)
        self._token = token
        headers = {"X-ClearML-Worker": worker} if worker else {}
        self._http = httpx.Client(base_url=self.host, timeout=timeout, headers=headers)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def token(self) -> str:
        if self._token is None:
            self.login()
        assert self._token is not None
        return self._token

    def login(self) -> str:
        data = self._send("auth.login", {}, auth=httpx.BasicAuth(*self._credentials))
        self._token = data["token"]
        return self._token

    def for_worker(self, worker: str) -> Session:
        """A session with the same server, credentials and token that speaks as `worker`."""
        return Session(self.host, *self._credentials, token=self._token, worker=worker)

    def is_bosun(self) -> bool:
        """The server is a bosun server (its extensions may be used); False if unsure."""
        try:
            return self.call("server.info").get("server") == "bosun"
        except (ApiError, ConnectionFailed):
            return False

    def call(self, endpoint: str, data: dict[str, Any] | None = None, *,
             timeout: float | None = None) -> dict[str, Any]:
        """Call `service.action` with a JSON body; return `data` or raise ApiError."""
        try:
            return self._send(endpoint, data or {}, timeout=timeout)
        except ApiError as exc:
            if exc.code != 401 or endpoint == "auth.login":
                raise
            self.login()
            return self._send(endpoint, data or {}, timeout=timeout)

    def add_events(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """events.add_batch, sent as JSON lines the way the ClearML clients send it."""
        body = "\n".join(json.dumps(e) for e in events)
        return self._send("events.add_batch", body, content_type="application/json-lines")

    def _send(self, endpoint: str, body: dict[str, Any] | str, *,
              auth: httpx.Auth | None = None, timeout: float | None = None,
              content_type: str = "application/json") -> dict[str, Any]:
        headers = {"Content-Type": content_type}
        if auth is None:
            headers["Authorization"] = f"Bearer {self.token}"
        content = body if isinstance(body, str) else json.dumps(body)
        try:
            response = self._http.post(
                f"{API_PREFIX}/{endpoint}", content=content, headers=headers, auth=auth,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach the bosun server at {self.host}: {exc}") from exc
        try:
            payload = response.json()
            meta = payload["meta"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ApiError(response.status_code, 0,
                           f"{self.host} answered {response.status_code} without a ClearML "
                           "envelope (is this a bosun or ClearML API server?)") from exc
        if meta.get("result_code") != 200:
            raise ApiError(meta.get("result_code") or response.status_code,
                           meta.get("result_subcode") or 0, meta.get("result_msg") or "error",
                           **(meta.get("error_data") or {}))
        return payload.get("data") or {}
