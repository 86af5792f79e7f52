"""Errors raised by the registry. Each carries a one-line message meant for the user."""

from __future__ import annotations


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
