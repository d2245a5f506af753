"""API errors as ClearML Server reports them: an HTTP code, a numeric subcode and a message.

The codes follow ClearML's table so that clients which branch on them behave the same.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answer: `code` is both the HTTP status and `meta.result_code`."""

    def __init__(self, code: int, subcode: int, msg: str, **info: Any) -> None:
        super().__init__(msg)
        self.code = code
        self.subcode = subcode
        self.msg = msg
        self.info = info

    def __str__(self) -> str:
        return f"{self.msg} ({self.code}/{self.subcode})"


def _factory(code: int, subcode: int, default: str) -> type[ApiError]:
    class _Error(ApiError):
        def __init__(self, msg: str = default, **info: Any) -> None:
            super().__init__(code, subcode, msg, **info)

    return _Error


# 400: bad request
EndpointNotSupported = _factory(400, 1, "endpoint is not supported")
InvalidId = _factory(400, 10, "invalid object id")
MissingRequiredFields = _factory(400, 11, "missing required fields")
ValidationError = _factory(400, 12, "validation error")
InvalidRegex = _factory(400, 21, "malformed regular expression")
InvalidTaskId = _factory(400, 101, "invalid task id")
InvalidModelId = _factory(400, 201, "invalid model id")
InvalidTaskStatus = _factory(400, 110, "invalid task status")
TaskCannotBeDeleted = _factory(400, 123, "task cannot be deleted")
InvalidProjectId = _factory(400, 401, "invalid project id")
InvalidQueueId = _factory(400, 701, "invalid queue id")
QueueNotEmpty = _factory(400, 702, "queue is not empty")
TaskNotQueued = _factory(400, 703, "invalid queue id or task not in queue")
NoDefaultQueue = _factory(400, 707, "no queue is tagged as the default queue")
ExpectedUniqueData = _factory(400, 801, "value combination already exists")
InvalidWorkerId = _factory(400, 1001, "invalid worker id")
InvalidScrollId = _factory(400, 1104, "invalid scroll id")

# 401: unauthorized
NoCredentials = _factory(401, 20, "unauthorized (missing credentials)")
BadCredentials = _factory(401, 21, "unauthorized (malformed credentials)")
InvalidCredentials = _factory(401, 22, "unauthorized (invalid credentials)")
InvalidToken = _factory(401, 30, "invalid token")

# 404: the files server's answer for a path it does not hold
FileNotFound = _factory(404, 0, "file not found")

# 413 / 429: too much
RequestTooLarge = _factory(413, 0, "request body too large")
TooManyFailedLogins = _factory(429, 0, "too many failed logins")

# 500: server error (never 503: the SDK retries that forever)
InternalError = _factory(500, 1, "internal server error")
