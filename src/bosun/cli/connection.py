"""Opening a session to the API server from the user's configuration, with errors a user can act
on (the address tried, the credentials problem)."""

from __future__ import annotations

from bosun.agent.config import Config
from bosun.api.errors import ApiError
from bosun.cli.errors import UserError
from bosun.client import ConnectionFailed, Session


def open_session(config: Config, worker: str | None = None) -> Session:
    api = config.api
    session = Session(api.api_server, api.access_key, api.secret_key, worker=worker)
    try:
        session.login()
    except ConnectionFailed as exc:
        session.close()
        raise UserError(f"cannot reach the API server at {api.api_server} (set api.api_server in "
                        "clearml.conf or CLEARML_API_HOST)") from exc
    except ApiError as exc:
        session.close()
        if exc.code == 401:
            raise UserError(f"the API server at {api.api_server} refused the credentials: "
                            f"{exc.msg}") from exc
        raise UserError(f"login to {api.api_server} failed: {exc.msg}") from exc
    return session
