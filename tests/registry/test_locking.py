"""The registry lock is held only to read and commit records: heavy I/O (size walks, deleting
folders, writing and hashing files) happens outside it; its timeout leaves a margin below the
time after which a worker's job counts as stale."""

import inspect
import threading
import time

from filelock import FileLock, Timeout

from registry import Adapter, BlobStore, Dataset, Job, Registry, Run
from registry import jobs as Q
from registry import maintenance as M
from registry import store as store_mod


def _lock_is_free(home) -> bool:
    other = FileLock(str(home / ".locks" / "registry.lock"))  # another holder, as another process would be
    try:
        other.acquire(timeout=0)
    except Timeout:
        return False
    other.release()
    return True


def _orphans(home):
    reg = Registry()
    reg.count(Run)
    BlobStore(home).put_bytes(b"unused" * 100)
    for parts in (("datasets", "ns", "old", "1"), ("datasets", "gone", "3")):
        d = home.joinpath(*parts)
        d.mkdir(parents=True)
        (d / "x.bin").write_bytes(b"1" * 4096)
    return reg


def test_prune_walks_sizes_and_deletes_folders_outside_the_lock(styler_home, monkeypatch):
    reg = _orphans(styler_home)
    seen = []
    real_size, real_rmtree = M._size, M.shutil.rmtree
    monkeypatch.setattr(M, "_size", lambda p: seen.append(("size", _lock_is_free(styler_home))) or real_size(p))
    plan = M.plan_prune(reg)
    assert len(plan.orphan_dirs) == 2 and len(plan.blobs) == 1

    def rmtree(path, *a, **kw):
        seen.append(("rmtree", _lock_is_free(styler_home)))
        return real_rmtree(path, *a, **kw)

    monkeypatch.setattr(M.shutil, "rmtree", rmtree)
    assert M.execute_prune(reg, plan) == plan.bytes
    assert seen and all(free for _, free in seen), seen
    assert not (styler_home / "datasets" / "ns").exists() and not (styler_home / "datasets" / "gone").exists()
    assert not any((styler_home / ".trash").iterdir())  # the moved folders are gone too


def test_a_folder_registered_between_plan_and_execute_is_kept(styler_home):
    reg = _orphans(styler_home)
    plan = M.plan_prune(reg)
    reg.insert(Dataset(name="gone", version=3, path="datasets/gone/3"))
    M.execute_prune(reg, plan)
    assert (styler_home / "datasets" / "gone" / "3" / "x.bin").is_file()


def test_insert_next_version_does_its_io_outside_the_lock_and_retries_a_taken_version(styler_home):
    reg = Registry()
    calls = []

    def build(version):
        calls.append((version, _lock_is_free(styler_home)))
        if len(calls) == 1:  # someone else registers @1 while this one writes its file
            reg.insert(Adapter(name="ns/a", version=1))
        return Adapter(name="ns/a", version=version, blob=f"{version}" * 64)

    made = reg.insert_next_version(Adapter, "ns/a", build)
    assert made.version == 2 and calls == [(1, True), (2, True)]
    assert [a.version for a in reg.versions(Adapter, "ns/a")] == [1, 2]


def test_the_lock_timeout_leaves_a_margin_below_the_stale_after_time():
    from styler.worker import run_worker

    params = inspect.signature(run_worker).parameters
    stale, beat = params["stale_after_s"].default, params["heartbeat_s"].default
    assert stale == Q.DEFAULT_STALE_AFTER_S and beat == Q.DEFAULT_HEARTBEAT_S
    # a heartbeat that waits the whole lock timeout, then misses its next beat, still lands in time
    assert beat + store_mod.LOCK_TIMEOUT_S + beat <= stale - Q.STALE_MARGIN_S
    assert Q.STALE_MARGIN_S >= 10


def test_time_spent_waiting_for_the_lock_does_not_make_a_job_stale(styler_home):
    reg = Registry()
    job = Q.enqueue(reg, "generate", {"prompt": "a"})
    Q.claim(reg, "w1")
    held, release = threading.Event(), threading.Event()

    def hold():  # a long critical section elsewhere: no heartbeat can be written meanwhile
        other = FileLock(str(styler_home / ".locks" / "registry.lock"))
        with other:
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    threading.Timer(1.0, release.set).start()
    changed = Q.recover_stale(reg, stale_after_s=0.5)  # waits ~1 s for the lock
    t.join()
    assert changed == [] and reg.get(Job, job.id).status == "running"
