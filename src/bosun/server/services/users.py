"""users.*: who is calling. bosun has no user management: a user is the name a key pair (or,
without auth, the server) gives it."""

from __future__ import annotations

from typing import Any

from bosun.server.call import Call


def get_current_user(call: Call) -> dict[str, Any]:
    identity = call.identity
    return {
        "user": {"id": identity.user, "name": identity.user, "given_name": identity.user,
                 "family_name": "", "role": "user",
                 "company": {"id": identity.company, "name": identity.company}},
        "getting_started": {}, "settings": {},
    }


def get_vaults(call: Call) -> dict[str, Any]:
    """Configuration vaults are a ClearML enterprise feature: none here."""
    return {"enabled": False, "vaults": [], "total": 0}


ACTIONS = {"get_current_user": get_current_user, "get_vaults": get_vaults}
