"""Errors that are the user's to fix: printed as one line, never as a traceback."""


class UserError(Exception):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
