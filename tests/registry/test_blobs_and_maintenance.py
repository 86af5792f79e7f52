import hashlib
import os
import time

from registry import Adapter, BlobStore, Dataset, Output, Registry, Run
from registry.maintenance import execute_prune, plan_prune, verify


def test_blobs_are_content_addressed_and_read_only(styler_home):
    store = BlobStore(styler_home)
    digest = store.put_bytes(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    path = store.path(digest)
    assert path.parent.name == digest[:2] and path.read_bytes() == b"hello"
    assert not os.access(path, os.W_OK) or os.geteuid() == 0  # root can write anything
    assert store.put_bytes(b"hello") == digest  # idempotent
    assert list(store.tmp.iterdir()) == []
    assert store.verify(digest)


def test_put_file_streams_and_matches(styler_home, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 << 20))
    store = BlobStore(styler_home)
    digest = store.put_file(src)
    assert store.path(digest).read_bytes() == src.read_bytes()


def test_verify_reports_tampered_blob_and_missing_references(styler_home):
    reg = Registry()
    store = BlobStore(styler_home)
    good = store.put_bytes(b"adapter")
    reg.insert(Adapter(name="a", version=1, blob=good))
    reg.insert(Output(blob="f" * 64))
    assert [p.kind for p in verify(reg)] == ["missing-blob"]
    p = store.path(good)
    os.chmod(p, 0o644)
    p.write_bytes(b"tampered")
    kinds = sorted(p.kind for p in verify(reg))
    assert kinds == ["bad-blob", "missing-blob"]


def test_prune_plans_then_removes_only_unreferenced(styler_home):
    reg = Registry()
    store = BlobStore(styler_home)
    kept = store.put_bytes(b"used")
    gone = store.put_bytes(b"unused" * 100)
    reg.insert(Output(blob=kept))
    orphan = styler_home / "datasets" / "ns" / "old" / "1"
    orphan.mkdir(parents=True)
    (orphan / "x.png").write_bytes(b"12345")
    real = reg.insert(Dataset(name="ns/real", version=1, path="datasets/ns/real/1"))
    (styler_home / real.path).mkdir(parents=True)
    stale = styler_home / "blobs" / "tmp" / "dead.tmp"
    stale.write_bytes(b"x" * 10)
    old = time.time() - 7200
    os.utime(stale, (old, old))
    fresh = styler_home / "blobs" / "tmp" / "live.tmp"
    fresh.write_bytes(b"y")

    plan = plan_prune(reg)
    assert [d for d, _ in plan.blobs] == [gone]
    assert [p for p, _ in plan.orphan_dirs] == [str(orphan)]
    assert [p for p, _ in plan.temp_files] == [str(stale)]
    assert plan.bytes == 600 + 5 + 10

    # a record that starts using the blob after planning keeps it
    reg.insert(Output(blob=gone))
    freed = execute_prune(reg, plan)
    assert freed == 15
    assert store.has(kept) and store.has(gone)
    assert not orphan.exists() and not stale.exists() and fresh.exists()
    assert (styler_home / real.path).exists()


def test_orphan_run_dirs_are_pruned_only_when_old(styler_home):
    reg = Registry()
    run = reg.insert(Run())
    (styler_home / "runs" / run.id).mkdir(parents=True)
    ghost = styler_home / "runs" / "01GHOST"
    ghost.mkdir()
    assert plan_prune(reg).orphan_dirs == []  # fresh: may belong to a run starting now
    old = time.time() - 7200
    os.utime(ghost, (old, old))
    assert [p for p, _ in plan_prune(reg).orphan_dirs] == [str(ghost)]


def test_verify_reports_a_lost_table_file(styler_home):
    reg = Registry()
    reg.insert(Run())
    assert verify(reg) == []
    reg.table_path("runs").unlink()
    problems = verify(reg)
    assert [(p.kind, p.where) for p in problems] == [("missing-table", str(reg.table_path("runs")))]
