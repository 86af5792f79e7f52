"""A TinyDB storage that never leaves a half-written file: temp file, fsync, os.replace."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from tinydb.storages import Storage

from .errors import READ_ONLY_ERRNOS, RegistryCorrupt, cannot_write


#: tables whose records `styler registry rebuild` restores from the files on disk
REBUILDABLE = ("datasets", "adapters")


def table_of(path: Path) -> str:
    """The table a registry file belongs to: `datasets.json`, `datasets.0003.json` -> datasets."""
    return Path(path).name.split(".", 1)[0]


def table_fix(table: str) -> str:
    """What to do about a damaged or missing table file, in words for the user."""
    if table in REBUILDABLE:
        return ("run `styler registry rebuild` to restore its records from the files on disk, "
                "or restore it from a backup")
    if table == "_migrations":
        return "move it aside (e.g. to _migrations.json.bad): styler re-applies its migrations, which are idempotent"
    return (f"restore it from a backup (styler cannot rebuild {table} from the files on disk), "
            f"or start the table empty with `styler registry rebuild --empty {table}`")


def corrupt_message(path: Path, detail: str) -> str:
    return f"registry file {path} is corrupt ({detail}); {table_fix(table_of(path))}"


def read_json(path: Path):
    """Read a registry JSON file; None when it does not exist; RegistryCorrupt when unreadable.
    An empty file is damage too: styler's writes are atomic and always write a whole table."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if not raw.strip():
        raise RegistryCorrupt(corrupt_message(path, "it is empty"))
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RegistryCorrupt(corrupt_message(path, f"not UTF-8 at byte {exc.start}")) from None
    except json.JSONDecodeError as exc:
        raise RegistryCorrupt(corrupt_message(path, f"{exc.msg} at line {exc.lineno} column {exc.colno}")) from None
    if not isinstance(data, dict):
        raise RegistryCorrupt(corrupt_message(path, "top level is not a JSON object"))
    return data


def write_json_atomic(path: Path, data) -> None:
    """Write JSON to a temp file beside `path`, fsync it, and rename it into place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno in READ_ONLY_ERRNOS:
            raise cannot_write(path.parent, exc) from None
        raise
    try:
        # json.dumps (one shot) uses the C encoder; json.dump to a file would use the Python one
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class AtomicJSONStorage(Storage):
    """TinyDB storage over one JSON file, written atomically. Not thread/process safe by itself:
    callers hold the registry lock around every open/read/write/close."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self):
        return read_json(self.path)

    def write(self, data) -> None:
        write_json_atomic(self.path, data)

    def close(self) -> None:
        pass
