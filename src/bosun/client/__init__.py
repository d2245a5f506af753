"""A small HTTP client for the ClearML-style API, shared by the agent, the CLI and the tests."""

from bosun.client.session import ConnectionFailed, Session

__all__ = ["ConnectionFailed", "Session"]
