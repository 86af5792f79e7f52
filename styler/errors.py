"""The StylerError family: a one-line message for the user and an exit code (1 runtime, 2 usage)."""

from __future__ import annotations


class StylerError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(StylerError):
    """Bad arguments, options or configuration."""

    exit_code = 2


class InputError(StylerError):
    """A user file or folder that cannot be used as given."""

    exit_code = 2


class ModelNotFound(StylerError):
    exit_code = 2


class WriteError(StylerError):
    """Writing failed (disk full, permissions); nothing was committed."""

    exit_code = 1
