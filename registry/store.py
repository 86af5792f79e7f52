"""The registry: TinyDB tables behind one file lock.

Rules (see shared/DESIGN.md): every operation, reads included, takes the lock, opens a fresh
TinyDB over an atomic storage, and closes it. Records carry their own ULID ids.

A table is one active file `registry/<table>.json`; once it grows past SEGMENT_BYTES it is
sealed as `registry/<table>.<NNNN>.json` and a new active file starts. TinyDB rewrites a whole
file on every write, so this keeps an insert's cost bounded however many outputs exist
(benchmarks/registry_scale.py measures it against a single file per table). Sealing is a rename and
the next write creates the new active file, so sealed segments without an active file is a valid
state (a writer killed in between): the table's records are all in its segments.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from filelock import FileLock, Timeout
from tinydb import Query, TinyDB

from .errors import READ_ONLY_ERRNOS, Conflict, NotFound, RegistryCorrupt, RegistryError, cannot_write
from .home import styler_home
from .ids import now_iso
from .migrations import MIGRATIONS
from .names import parse_name
from .records import RECORD_TYPES, Record
from .storage import AtomicJSONStorage, corrupt_message

R = TypeVar("R", bound=Record)

SEGMENT_BYTES = 256 * 1024  # ~600 output records; an insert rewrites at most this much
# How long an operation waits for the lock before giving up with a one-line error. Critical sections
# only read and commit records (heavy I/O happens outside the lock), so waits are short; and it
# must stay well under a worker's stale-after time (registry/jobs.py: DEFAULT_STALE_AFTER_S), or a
# heartbeat stuck behind a busy lock could let another worker requeue a live job.
LOCK_TIMEOUT_S = 20.0
_SEALED = re.compile(r"^(?P<table>[a-z_]+)\.(?P<n>\d{4,})\.json$")


class Registry:
    """The local registry under a home directory."""

    def __init__(self, home: str | os.PathLike | None = None):
        self.home = Path(home) if home is not None else styler_home()
        self.dir = self.home / "registry"
        self._lock = FileLock(str(self.home / ".locks" / "registry.lock"), timeout=LOCK_TIMEOUT_S)
        self._migrated = False
        self._local = threading.local()

    # -- locking and files -------------------------------------------------------------------
    @contextmanager
    def locked(self, *, write: bool = True) -> Iterator["Registry"]:
        """Hold the registry lock (re-entrant in this thread); migrations run on first use.

        `write=False` (reads): when the lock file cannot be created because the home is read-only
        (a read-only mount, a folder without write permission), read without it: every file is
        replaced atomically, so each one read is whole (a listing of segments may miss a write
        that happens meanwhile, which on a read-only home nobody can make). A write in a
        read-only home fails with one line naming the folder."""
        if getattr(self._local, "unlocked", False):  # inside a lock-free read
            if write:
                raise cannot_write(self.home, OSError(errno.EROFS, "read-only"))
            yield self
            return
        refused = None
        try:
            (self.home / ".locks").mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except Timeout:
            raise RegistryError(
                f"the registry is locked by another styler process for over {LOCK_TIMEOUT_S:.0f}s "
                f"({self._lock.lock_file}); wait for it to finish and try again"
            ) from None
        except OSError as exc:
            if exc.errno not in READ_ONLY_ERRNOS:
                raise RegistryError(f"cannot use the registry lock {self._lock.lock_file} ({exc.strerror or exc}); "
                                    f"set STYLER_HOME to a writable folder") from None
            if write:
                raise cannot_write(self.home, exc) from None
            refused = exc
        if refused is not None:
            self._local.unlocked = True
            try:
                yield self
            finally:
                self._local.unlocked = False
            return
        try:
            if not self._migrated:
                self._migrate()
            yield self
        finally:
            self._lock.release()

    def table_path(self, table: str) -> Path:
        return self.dir / f"{table}.json"

    def segments(self, table: str) -> list[Path]:
        """Sealed segments oldest first, then the active file (if present)."""
        sealed = []
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                m = _SEALED.match(p.name)
                if m and m["table"] == table:
                    sealed.append((int(m["n"]), p))
        paths = [p for _, p in sorted(sealed)]
        active = self.table_path(table)
        if active.exists():
            paths.append(active)
        return paths

    @staticmethod
    def _db(path: Path) -> TinyDB:
        return TinyDB(path, storage=AtomicJSONStorage)

    def _docs(self, path: Path, table: str) -> list[dict]:
        try:
            with self._db(path) as db:
                docs = db.table(table).all()
        except (AttributeError, TypeError, ValueError, KeyError):  # JSON, but not TinyDB's shape
            raise RegistryCorrupt(corrupt_message(path, f"the {table} table is not a JSON object of records")) from None
        for doc in docs:
            if not isinstance(doc, dict) or "id" not in doc:
                raise RegistryCorrupt(corrupt_message(path, "a record without an id"))
        return [dict(d) for d in docs]

    # -- migrations ----------------------------------------------------------------------------
    def _migrate(self) -> None:
        self._migrated = True  # set first: migrations use the registry themselves
        path = self.dir / "_migrations.json"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise cannot_write(self.home, exc) from None
        with self._db(path) as db:
            applied = {d["name"] for d in db.table("migrations").all()}
        for name, fn in MIGRATIONS:
            if name in applied:
                continue
            fn(self)
            with self._db(path) as db:
                db.table("migrations").insert({"name": name, "applied_at": now_iso()})

    def applied_migrations(self) -> list[str]:
        with self.locked(write=False):
            with self._db(self.dir / "_migrations.json") as db:
                return [d["name"] for d in db.table("migrations").all()]

    # -- records -------------------------------------------------------------------------------
    def insert(self, record: R) -> R:
        """Add a record; versioned records must have a (name, version) not yet taken."""
        table = record.TABLE
        with self.locked():
            if record.VERSIONED:
                taken = [r for r in self.all(type(record)) if r.name == record.name and r.version == record.version]
                if taken:
                    raise Conflict(f"{record.name}@{record.version} already exists in {table}")
            active = self.table_path(table)
            if active.exists() and active.stat().st_size >= SEGMENT_BYTES:
                self._seal(table)
            with self._db(active) as db:
                db.table(table).insert(record.to_dict())
        return record

    def insert_next_version(self, cls: type[R], name: str, build: Callable[[int], R], *, attempts: int = 5) -> R:
        """Register the next version of `name` without holding the lock for heavy I/O: `build(version)`
        runs outside the lock (write the file, store and hash the blob) and returns the record,
        which is inserted under the lock if that version is still free; if another process took it
        meanwhile, `build` runs again with the next one (an unused blob is left for prune)."""
        version = self.next_version(cls, name)
        for _ in range(attempts):
            record = build(version)
            if (record.name, record.version) != (name, version):
                raise ValueError(f"build({version}) made {record.label}, not {name}@{version}")
            with self.locked():
                latest = self.next_version(cls, name)
                if latest == version:
                    return self.insert(record)
            version = latest
        raise Conflict(f"{name}: another process registered a new version {attempts} times while this one was "
                       f"writing; try again")

    def next_segment_number(self, table: str) -> int:
        sealed = [_SEALED.match(p.name) for p in self.segments(table)]
        return max((int(m["n"]) for m in sealed if m), default=0) + 1

    def _seal(self, table: str) -> None:
        nxt = self.next_segment_number(table)
        os.replace(self.table_path(table), self.dir / f"{table}.{nxt:04d}.json")

    def all(self, cls: type[R]) -> list[R]:
        """Every record of a type, oldest first."""
        with self.locked(write=False):
            docs = [d for p in self.segments(cls.TABLE) for d in self._docs(p, cls.TABLE)]
        docs.sort(key=lambda d: d["id"])
        return [cls.from_dict(d) for d in docs]

    def find(self, cls: type[R], **equals: Any) -> list[R]:
        return [r for r in self.all(cls) if all(getattr(r, k) == v for k, v in equals.items())]

    def get(self, cls: type[R], record_id: str) -> R:
        with self.locked(write=False):
            for path in reversed(self.segments(cls.TABLE)):
                with self._db(path) as db:
                    doc = db.table(cls.TABLE).get(Query().id == record_id)
                if doc is not None:
                    return cls.from_dict(dict(doc))
        raise NotFound(f"no {cls.TABLE[:-1]} with id {record_id}; list them with `styler registry ls {cls.TABLE}`")

    def update(self, cls: type[R], record_id: str, **changes: Any) -> R:
        """Change fields of one record and return the new record."""
        unknown = set(changes) - set(cls.__dataclass_fields__) or {"id", "created_at"} & set(changes)
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)} on {cls.__name__}")
        with self.locked():
            for path in reversed(self.segments(cls.TABLE)):
                with self._db(path) as db:
                    t = db.table(cls.TABLE)
                    if t.update(changes, Query().id == record_id):
                        return cls.from_dict(dict(t.get(Query().id == record_id)))
        raise NotFound(f"no {cls.TABLE[:-1]} with id {record_id}")

    def remove(self, cls: type[R], record_id: str) -> None:
        with self.locked():
            for path in reversed(self.segments(cls.TABLE)):
                with self._db(path) as db:
                    if db.table(cls.TABLE).remove(Query().id == record_id):
                        return
        raise NotFound(f"no {cls.TABLE[:-1]} with id {record_id}")

    def count(self, cls: type[R]) -> int:
        with self.locked(write=False):
            total = 0
            for path in self.segments(cls.TABLE):
                with self._db(path) as db:
                    total += len(db.table(cls.TABLE))
            return total

    # -- names and versions --------------------------------------------------------------------
    def versions(self, cls: type[R], name: str) -> list[R]:
        return sorted(self.find(cls, name=name), key=lambda r: r.version)

    def next_version(self, cls: type[R], name: str) -> int:
        return max((r.version for r in self.versions(cls, name)), default=0) + 1

    def resolve(self, cls: type[R], text: str) -> R:
        """Resolve `ns/name[@N|@latest]` (or a record id) to one record."""
        if not cls.VERSIONED:
            return self.get(cls, text)
        parsed = parse_name(text)
        found = self.versions(cls, parsed.full)
        kind = cls.TABLE[:-1]
        if not found:
            raise NotFound(f"no {kind} named {parsed.full!r}; see `styler {cls.TABLE if cls.TABLE != 'datasets' else 'data'} ls`")
        if parsed.version in (None, "latest"):
            return found[-1]
        for r in found:
            if r.version == parsed.version:
                return r
        have = ", ".join(f"@{r.version}" for r in found)
        raise NotFound(f"{parsed.full} has no version @{parsed.version}; it has {have}")

    def record_types(self) -> dict[str, type[Record]]:
        return dict(RECORD_TYPES)
