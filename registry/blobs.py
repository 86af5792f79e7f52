"""Content-addressed files: `blobs/sha256/ab/<hash>`, written once via temp file + rename."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import READ_ONLY_ERRNOS, NotFound, RegistryError, cannot_write

CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class BlobStore:
    def __init__(self, home: str | os.PathLike):
        self.home = Path(home)
        self.root = self.home / "blobs" / "sha256"
        self.tmp = self.home / "blobs" / "tmp"

    def path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise RegistryError(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def _commit(self, tmp_path: Path, digest: str) -> str:
        final = self.path(digest)
        if final.exists():
            os.unlink(tmp_path)  # same content already stored
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp_path, 0o444)
            os.replace(tmp_path, final)
        return digest

    def _write(self, fill) -> str:
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=self.tmp)
        except OSError as exc:
            if exc.errno in READ_ONLY_ERRNOS:
                raise cannot_write(self.tmp, exc) from None
            raise
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in fill():
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            return self._commit(Path(tmp), h.hexdigest())
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def put_bytes(self, data: bytes) -> str:
        """Store bytes; returns their sha256."""
        return self._write(lambda: [data])

    def put_file(self, src: str | os.PathLike) -> str:
        """Copy a file in; returns its sha256."""

        def chunks() -> Iterator[bytes]:
            with open(src, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    yield chunk

        return self._write(chunks)

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest[:12]}… is missing from {self.root}; run `styler registry verify`") from None

    def iter_blobs(self) -> Iterator[tuple[str, Path]]:
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if sub.is_dir():
                for f in sorted(sub.iterdir()):
                    yield f.name, f

    def verify(self, digest: str) -> bool:
        """Re-hash a blob; True when its content matches its name."""
        p = self.path(digest)
        return p.is_file() and sha256_file(p) == digest
