"""server.info and debug.ping: who is answering."""

from __future__ import annotations

from typing import Any

from bosun import __version__
from bosun.api.envelope import API_VERSION, SERVER_VERSION
from bosun.server.call import Call


def info(call: Call) -> dict[str, Any]:
    return {"version": SERVER_VERSION, "api_version": API_VERSION, "server": "bosun",
            "bosun_version": __version__, "build": "", "commit": "",
            "database": call.store.engine.dialect.name}


def ping(call: Call) -> dict[str, Any]:
    return {"msg": "bosun server"}


SERVER_ACTIONS = {"info": info}
DEBUG_ACTIONS = {"ping": ping}
