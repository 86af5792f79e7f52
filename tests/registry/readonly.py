"""Simulate a read-only STYLER_HOME inside the test process. Tests run as root, and root ignores
file modes, so a chmod'ed folder would stay writable: instead every call that would create, change
or remove something under the home fails with EROFS, as on a read-only mount."""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def make_read_only(monkeypatch, home: Path) -> None:
    root = os.path.realpath(home)

    def under(path) -> bool:
        try:
            p = os.path.realpath(os.fspath(path))
        except TypeError:  # a file descriptor
            return False
        return p == root or p.startswith(root + os.sep)

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    real_open, real_mkdir = os.open, os.mkdir
    real = {name: getattr(os, name) for name in ("replace", "rename", "unlink", "rmdir", "chmod", "utime")}

    def fake_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & _WRITE_FLAGS and under(path):
            refuse(path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def fake_mkdir(path, mode=0o777, *, dir_fd=None):
        if under(path):
            if os.path.isdir(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(path))
            refuse(path)
        return real_mkdir(path, mode, dir_fd=dir_fd)

    def guarded(name):
        def call(path, *args, **kw):
            if under(path) or (args and isinstance(args[0], (str, os.PathLike)) and under(args[0])):
                refuse(path)
            return real[name](path, *args, **kw)
        return call

    real_builtin_open = builtins.open

    def fake_builtin_open(file, mode="r", *args, **kw):
        if any(c in mode for c in "wax+") and not isinstance(file, int) and under(file):
            refuse(file)
        return real_builtin_open(file, mode, *args, **kw)

    monkeypatch.setattr(builtins, "open", fake_builtin_open)
    monkeypatch.setattr(io, "open", fake_builtin_open)
    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    for name in real:
        monkeypatch.setattr(os, name, guarded(name))
