"""Errors raised by the registry. Each carries a one-line message meant for the user."""

from __future__ import annotations

import errno
import os

#: what a read-only mount or a folder without write permission answers
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class RegistryError(Exception):
    """Base class; `exit_code` follows styler's convention (1 runtime, 2 usage)."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidName(RegistryError):
    exit_code = 2


class NotFound(RegistryError):
    exit_code = 1


class RegistryCorrupt(RegistryError):
    exit_code = 1


class Conflict(RegistryError):
    exit_code = 1


def cannot_write(folder: str | os.PathLike, exc: OSError) -> RegistryError:
    """One line for a write that the file system refused, naming the folder."""
    why = "it is read-only" if exc.errno in READ_ONLY_ERRNOS else (exc.strerror or str(exc))
    return RegistryError(f"cannot write to {folder} ({why}); make it writable, or set STYLER_HOME to a writable folder")
