"""Writing a file so that it is either whole or absent: a temp file beside it, then one rename.

The temp file is created the way a plain `open(path, "w")` creates a file, with mode
0o666 & ~umask (0644 under the usual umask 022), so what styler exports can be read by other users'
A1111/ComfyUI (`tempfile.mkstemp` would make it 0600)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable

from .errors import WriteError

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, error: str | None = None) -> Path:
    """Call `write(temp_path)`, then rename the temp file to `path`. The temp file exists (empty,
    mode 0o666 & ~umask) when `write` is called; `write` opens it for writing (which keeps the mode).
    An OSError becomes a one-line WriteError (`error`, else "cannot write PATH", then the reason); the
    temp file never survives."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, _FLAGS, 0o666))  # O_EXCL: the name is ours; the kernel applies the umask
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
        with open(tmp, "r+b") as fh:
            fh.write(data)
            fh.truncate()
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write(path, write, error=error)
