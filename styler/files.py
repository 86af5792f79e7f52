"""Writing a file so that it is either whole or absent: a temp file beside it, then one rename."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable

from .errors import WriteError


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, error: str | None = None) -> Path:
    """Call `write(temp_path)`, then rename the temp file to `path`. An OSError becomes a one-line
    WriteError (`error`, else "cannot write PATH", then the reason); the temp file never survives."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(str(tmp))
        os.replace(tmp, path)
    except OSError as exc:
        raise WriteError(f"{error or f'cannot write {path}'}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, error: str | None = None) -> Path:
    """`atomic_write` for bytes, fsynced before the rename."""

    def write(tmp: str) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write(path, write, error=error)
