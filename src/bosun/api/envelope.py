"""The `{"meta": ..., "data": ...}` envelope every answer travels in."""

from __future__ import annotations

from typing import Any

from bosun.api.errors import ApiError

API_VERSION = "2.23"
SERVER_VERSION = "1.16.0"


def envelope(
    endpoint: str,
    requested_version: str | None,
    trx: str,
    data: dict[str, Any] | None,
    error: ApiError | None = None,
) -> dict[str, Any]:
    code, subcode, msg = (200, 0, "OK") if error is None else (error.code, error.subcode, error.msg)
    return {
        "meta": {
            "id": trx,
            "trx": trx,
            "endpoint": {
                "name": endpoint,
                "requested_version": requested_version or API_VERSION,
                "actual_version": API_VERSION,
            },
            "result_code": code,
            "result_subcode": subcode,
            "result_msg": msg,
            "error_stack": None,
            "error_data": error.info if error is not None else {},
        },
        "data": data if data is not None else {},
    }
