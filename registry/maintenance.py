"""Checks and clean-up of a registry home: `verify` collects problems, `prune` plans then acts."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .blobs import BlobStore
from .errors import RegistryCorrupt, RegistryError
from .ids import new_id
from .records import Adapter, Dataset, Output, Run
from .storage import REBUILDABLE, table_fix, table_of
from .store import Registry

STALE_TMP_S = 3600  # temp files younger than this may belong to a running import
# registry/.<table>.json.*.tmp: a table write's temp file, left when its writer was killed. Writers
# hold the registry lock, so under the lock any is a leftover; the age is a second safeguard.
STALE_REGISTRY_TMP_S = 600
TRASH = ".trash"  # prune moves folders here under the lock, then deletes them after it


@dataclass(frozen=True)
class Problem:
    kind: str
    where: str
    detail: str


def referenced_blobs(reg: Registry) -> set[str]:
    refs = {a.blob for a in reg.all(Adapter) if a.blob}
    for o in reg.all(Output):
        refs.update(b for b in (o.blob, o.content_blob) if b)
    return refs


def table_problems(reg: Registry) -> list[Problem]:
    """Table files that are damaged (unreadable, empty) or missing. Migrations create every table's
    file, and styler's writes are atomic, so either means the registry lost records."""
    problems: list[Problem] = []
    for table in reg.record_types():
        with reg.locked(write=False):
            segments = reg.segments(table)
            # sealed segments without the active file is a valid state (a writer killed between
            # sealing and its write): the next insert starts the active file
            if not segments:
                problems.append(Problem("missing-table", str(reg.table_path(table)),
                                        f"the table file is gone; {table_fix(table)}"))
            for path in segments:
                try:
                    reg._docs(path, table)
                except RegistryCorrupt as exc:
                    problems.append(Problem("corrupt-table", str(path), exc.message))
    return problems


def require_healthy_tables(reg: Registry, action: str) -> None:
    """Refuse (RegistryCorrupt, one line) to `action` while a table is damaged or missing: what the
    records say is in use would be incomplete, and files still in use would look unused."""
    problems = table_problems(reg)
    if not problems:
        return
    tables = list(dict.fromkeys(table_of(Path(p.where)) for p in problems))
    state = "missing" if all(p.kind == "missing-table" for p in problems) else "damaged or missing"
    what = f"table {tables[0]} is" if len(tables) == 1 else f"tables {', '.join(tables)} are"
    first = Path(problems[0].where)
    shown = first.relative_to(reg.home) if reg.home in first.parents else first
    fix = ("run `styler registry rebuild` or restore it from a backup first" if all(t in REBUILDABLE for t in tables)
           else "restore it from a backup first, or see `styler registry verify` for what else to do")
    raise RegistryCorrupt(f"cannot {action}: registry {what} {state} ({shown}); {fix}, "
                          f"else {action} would remove files that lost records still use")


def record_gone_runs(reg: Registry) -> list[str]:
    """Store `interrupted` on every run recorded as running whose process is gone (the rule of
    Run.from_dict, judged again under the lock, so a run a resume has just taken over is left
    alone), so every reader of the table agrees with what listings show. Returns the ids stored.
    Best effort: a home that cannot be written (read-only, a lock held too long) keeps its records,
    which still read as interrupted."""
    with reg.locked(write=False):
        gone = {d["id"] for p in reg.segments(Run.TABLE) for d in reg._docs(p, Run.TABLE) if Run.as_stored(d).gone()}
    if not gone:
        return []
    stored = []
    try:
        with reg.locked():
            for path in reg.segments(Run.TABLE):
                with reg._db(path) as db:
                    table = db.table(Run.TABLE)
                    for doc in table.all():
                        run = Run.as_stored(dict(doc))
                        if run.id in gone and run.gone():
                            table.update({"status": "interrupted", "error": run.error or run.gone_error()},
                                         doc_ids=[doc.doc_id])
                            stored.append(run.id)
    except (RegistryError, OSError):
        return []
    return stored


def verify(reg: Registry, *, rehash: bool = True) -> list[Problem]:
    """Everything wrong with the registry, as a list (empty when healthy)."""
    problems = table_problems(reg)
    if problems:  # without every record, file checks would mislead
        return problems
    blobs = BlobStore(reg.home)
    for digest, path in blobs.iter_blobs():
        if rehash and not blobs.verify(digest):
            problems.append(Problem("bad-blob", str(path), "content does not match its sha256 name"))
    for a in reg.all(Adapter):
        if a.blob and not blobs.has(a.blob):
            problems.append(Problem("missing-blob", f"adapter {a.label}", f"blob {a.blob[:12]}… is missing"))
    for o in reg.all(Output):
        for b in (o.blob, o.content_blob):
            if b and not blobs.has(b):
                problems.append(Problem("missing-blob", f"output {o.id}", f"blob {b[:12]}… is missing"))
    for d in reg.all(Dataset):
        problems.extend(verify_dataset_files(reg.home, d))
    return problems


def verify_dataset_files(home: Path, d: Dataset) -> list[Problem]:
    """Check a managed dataset folder against its manifest (file hashes, captions)."""
    from .blobs import sha256_file

    where = f"dataset {d.label}"
    root = home / d.path
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        return [Problem("missing-dataset", where, f"{manifest_path} is missing")]
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        return [Problem("bad-manifest", where, f"{manifest_path}: {exc}")]
    out = []
    for item in manifest.get("images", []):
        f = root / "images" / item["file"]
        if not f.is_file():
            out.append(Problem("missing-file", where, f"{f} is missing"))
        elif sha256_file(f) != item["sha256"]:
            out.append(Problem("changed-file", where, f"{f} was changed after import"))
    if not (root / "captions.jsonl").is_file():
        out.append(Problem("missing-file", where, f"{root / 'captions.jsonl'} is missing"))
    return out


@dataclass
class PrunePlan:
    """What prune would remove; `bytes` is the space freed."""

    blobs: list[tuple[str, int]] = field(default_factory=list)
    orphan_dirs: list[tuple[str, int]] = field(default_factory=list)
    temp_files: list[tuple[str, int]] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(n for _, n in self.blobs + self.orphan_dirs + self.temp_files)

    @property
    def empty(self) -> bool:
        return not (self.blobs or self.orphan_dirs or self.temp_files)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def orphan_dataset_dirs(droot: Path, registered: list[Path]) -> list[Path]:
    """Version folders under `droot` that no dataset record points to. Keyed off the records'
    paths, not folder names (a dataset may be named `art/2024`): a registered folder is never
    looked into, a folder on the way to one is only looked into, and of the rest a version-shaped
    folder (`<name>/<N>` or `<ns>/<name>/<N>`) is an orphan when it holds a manifest or no
    version-shaped folders of its own (else it is the name folder of an unregistered dataset)."""
    keep = {os.path.normpath(p) for p in registered}
    on_the_way = {os.path.normpath(a) for p in registered for a in Path(p).parents}
    found: list[Path] = []

    def walk(folder: Path, depth: int) -> None:
        try:
            children = sorted(c for c in folder.iterdir() if c.is_dir() and not c.is_symlink() and not c.name.startswith("."))
        except OSError:
            return
        for child in children:
            key = os.path.normpath(child)
            if key in keep:
                continue
            if key in on_the_way:
                walk(child, depth + 1)
                continue
            versionish = depth >= 2 and child.name.isdigit()
            if versionish and ((child / "manifest.json").is_file()
                               or not any(c.is_dir() and c.name.isdigit() for c in child.iterdir())):
                found.append(child)
            elif depth < 3:
                walk(child, depth + 1)

    walk(droot, 1)
    return found


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()  # only when empty
        except OSError:
            return
        folder = folder.parent


def leftover_temp_files(reg: Registry) -> list[tuple[str, int]]:
    """Temp files of table writes in registry/ (`.<file>.<random>.tmp`), with their sizes."""
    found = []
    if reg.dir.is_dir():
        for p in sorted(reg.dir.glob(".*.tmp")):
            try:
                found.append((str(p), p.stat().st_size))
            except FileNotFoundError:  # its writer just renamed it
                continue
    return found


def plan_prune(reg: Registry, *, now: float | None = None) -> PrunePlan:
    """Unreferenced blobs, folders no record points to, and stale temp files. The records are read
    under the lock; the walk over files and their sizes happens outside it (execute re-checks)."""
    now = time.time() if now is None else now
    plan = PrunePlan()
    require_healthy_tables(reg, "prune")
    with reg.locked(write=False):
        refs = referenced_blobs(reg)
        dataset_paths = [reg.home / d.path for d in reg.all(Dataset)]
        run_ids = {r.id for r in reg.all(Run)}
    for digest, path in BlobStore(reg.home).iter_blobs():
        if digest not in refs:
            plan.blobs.append((digest, path.stat().st_size))
    droot = reg.home / "datasets"
    if droot.is_dir():
        for vdir in orphan_dataset_dirs(droot, dataset_paths):
            plan.orphan_dirs.append((str(vdir), _size(vdir)))
        for tmp in sorted(droot.glob(".tmp-*")):
            if now - tmp.stat().st_mtime > STALE_TMP_S:
                plan.temp_files.append((str(tmp), _size(tmp)))
    rroot = reg.home / "runs"
    if rroot.is_dir():
        for rdir in sorted(rroot.iterdir()):
            if rdir.is_dir() and rdir.name not in run_ids and now - rdir.stat().st_mtime > STALE_TMP_S:
                plan.orphan_dirs.append((str(rdir), _size(rdir)))
    for path, size in leftover_temp_files(reg):
        if now - Path(path).stat().st_mtime > STALE_REGISTRY_TMP_S:
            plan.temp_files.append((path, size))
    for root in (reg.home / "blobs" / "tmp", reg.home / TRASH):
        if root.is_dir():  # blob writes in progress; folders a killed prune had moved aside
            for f in sorted(root.iterdir()):
                if now - f.stat().st_mtime > (STALE_TMP_S if root.name == "tmp" else STALE_REGISTRY_TMP_S):
                    plan.temp_files.append((str(f), _size(f)))
    return plan


def execute_prune(reg: Registry, plan: PrunePlan) -> int:
    """Carry out a plan. Under the lock: re-check that each blob and folder is still unused, then
    unlink the blobs and temp files and move the folders into `.trash/` (a rename); after it, delete
    what was moved (the slow part), so the lock is never held for a folder's worth of deletes."""
    freed = 0
    blobs = BlobStore(reg.home)
    droot = reg.home / "datasets"
    trash = reg.home / TRASH / new_id()
    moved: list[Path] = []
    with reg.locked():
        require_healthy_tables(reg, "prune")
        refs = referenced_blobs(reg)  # a record added since planning keeps its blob
        used = {os.path.normpath(reg.home / d.path) for d in reg.all(Dataset)}
        used |= {os.path.normpath(reg.home / "runs" / r.id) for r in reg.all(Run)}
        for path, size in plan.orphan_dirs + plan.temp_files:
            p = Path(path)
            if os.path.normpath(p) in used:  # registered since planning
                continue
            if p.is_dir():
                trash.mkdir(parents=True, exist_ok=True)
                target = trash / str(len(moved))
                try:
                    os.replace(p, target)
                    moved.append(target)
                except OSError:  # another file system (a linked folder): delete it here
                    shutil.rmtree(p, ignore_errors=True)
                if droot in p.parents:
                    _remove_empty_parents(p.parent, droot)
            elif p.exists():
                os.unlink(p)
            freed += size
        for digest, size in plan.blobs:
            if digest in refs:
                continue
            p = blobs.path(digest)
            if p.exists():
                os.chmod(p, 0o644)
                os.unlink(p)
                freed += size
    for target in moved:
        shutil.rmtree(target, ignore_errors=True)
    if trash.is_dir():
        shutil.rmtree(trash, ignore_errors=True)
    return freed
