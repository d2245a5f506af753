"""bosun: a fast, self-hostable ML execution agent and task-queue server (ClearML-compatible)."""

__version__ = "0.1.0"
