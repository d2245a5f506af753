"""Object ids: 32 lowercase hex characters, as ClearML clients expect."""

import re
import uuid

_ID_PATTERN = re.compile(r"^[-a-f0-9]{30,}$")


def new_id() -> str:
    return uuid.uuid4().hex


def looks_like_id(value: str) -> bool:
    """The rule clearml-agent uses to tell an id from a name."""
    return bool(_ID_PATTERN.match(value))
