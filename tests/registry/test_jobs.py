"""The job queue: claim order, one claim per job across processes, ownership checks, the cancel and
retry state machine, and recovery of claims whose worker stopped responding."""

import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path

import pytest

from registry import Job, NotFound, Registry
from registry import jobs as Q

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def reg(styler_home):
    return Registry(styler_home)


def test_claim_takes_the_oldest_queued_job_of_the_wanted_kinds(reg):
    a = Q.enqueue(reg, "generate", {"prompt": "a"})
    b = Q.enqueue(reg, "eval", {"subject": "anime"})
    c = Q.enqueue(reg, "generate", {"prompt": "c"})

    got = Q.claim(reg, "w1", kinds=["eval"])
    assert got.id == b.id
    assert (got.status, got.worker, got.attempts) == ("running", "w1", 1)
    assert got.claimed_at and got.heartbeat_at == got.claimed_at
    assert Q.claim(reg, "w1").id == a.id
    assert Q.claim(reg, "w2").id == c.id
    assert Q.claim(reg, "w2") is None
    assert [j.worker for j in Q.list_jobs(reg, "running")] == ["w1", "w1", "w2"]


def test_a_job_after_others_waits_until_they_have_ended(reg):
    first = Q.enqueue(reg, "train", {"n": 1})
    second = Q.enqueue(reg, "train", {"n": 2})
    follow = Q.enqueue(reg, "study", {"study": "s"}, after=[first.id, second.id])
    assert follow.after == [first.id, second.id]
    assert Q.claim(reg, "w1").id == first.id
    assert Q.claim(reg, "w2").id == second.id
    assert Q.claim(reg, "w3") is None  # both still running: the follow-up is not taken
    Q.finish(reg, first.id, "w1", {})
    assert Q.claim(reg, "w3") is None
    Q.fail(reg, second.id, "w2", "out of memory")  # an end too: the follow-up decides what to make of it
    assert Q.claim(reg, "w3").id == follow.id
    with pytest.raises(NotFound, match="no job with id NOPE"):
        Q.enqueue(reg, "study", {}, after=["NOPE"])
    assert len(Q.list_jobs(reg)) == 3


def _claim_all(home, ready, go, out):
    reg = Registry(home)
    wid = Q.new_worker_id()
    mine = []
    ready.release()
    go.wait(60)  # all four start claiming together
    while (job := Q.claim(reg, wid)) is not None:
        mine.append(job.id)
        Q.finish(reg, job.id, wid, {"by": wid})
        time.sleep(0.01)  # a little work, so the others get the lock between claims (it is not fair)
    out.put((wid, mine))


@pytest.mark.slow
def test_four_processes_claim_each_of_40_jobs_exactly_once(reg, styler_home):
    ids = {Q.enqueue(reg, "generate", {"i": i}).id for i in range(40)}
    ctx = mp.get_context("spawn")
    out, ready, go = ctx.Queue(), ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=_claim_all, args=(str(styler_home), ready, go, out)) for _ in range(4)]
    for p in procs:
        p.start()
    for _ in procs:
        assert ready.acquire(timeout=60)
    go.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    claimed = [i for _, mine in results for i in mine]
    assert sorted(claimed) == sorted(ids)  # every job once, none twice
    assert len({wid for wid, _ in results}) == 4
    assert sum(1 for _, mine in results if mine) >= 2  # they really raced
    for job in Q.list_jobs(reg):
        assert (job.status, job.attempts) == ("done", 1)
        assert job.result == {"by": job.worker}


def test_worker_ids_name_host_and_process():
    import os
    import socket

    host, pid, rand = Q.new_worker_id().split(":")
    assert (host, pid) == (socket.gethostname(), str(os.getpid())) and rand
    assert Q.new_worker_id() != Q.new_worker_id()


def test_only_the_claiming_worker_may_write_to_a_job(reg):
    job = Q.enqueue(reg, "generate", {})
    Q.claim(reg, "w1")
    before = reg.get(Job, job.id)
    for write in (lambda: Q.heartbeat(reg, job.id, "w2"), lambda: Q.finish(reg, job.id, "w2", {}),
                  lambda: Q.fail(reg, job.id, "w2", "boom"), lambda: Q.release(reg, job.id, "w2")):
        with pytest.raises(Q.LostClaim, match="no longer claimed by worker w2"):
            write()
    assert reg.get(Job, job.id) == before

    beat = Q.heartbeat(reg, job.id, "w1", result={"output_ids": ["x"]})
    assert beat.result == {"output_ids": ["x"]} and beat.heartbeat_at >= before.heartbeat_at
    done = Q.finish(reg, job.id, "w1", {"output_ids": ["x", "y"]})
    assert (done.status, done.result) == ("done", {"output_ids": ["x", "y"]})
    with pytest.raises(Q.LostClaim, match="it is done"):
        Q.heartbeat(reg, job.id, "w1")  # finished jobs belong to nobody


def test_fail_keeps_one_line(reg):
    job = Q.enqueue(reg, "generate", {})
    Q.claim(reg, "w1")
    failed = Q.fail(reg, job.id, "w1", "no adapter named 'x'\nTraceback (most recent call last): ...")
    assert (failed.status, failed.error) == ("failed", "no adapter named 'x'")


def test_cancel_and_retry_state_machine(reg):
    queued = Q.enqueue(reg, "generate", {})
    assert Q.cancel(reg, queued.id).status == "cancelled"
    assert Q.cancel(reg, queued.id).status == "cancelled"  # again: unchanged
    again = Q.retry(reg, queued.id)
    assert (again.status, again.worker, again.error, again.attempts) == ("queued", None, "", 0)

    running = Q.claim(reg, "w1")
    assert running.id == queued.id
    requested = Q.cancel(reg, running.id)
    assert (requested.status, requested.cancel_requested) == ("running", True)
    assert Q.heartbeat(reg, running.id, "w1").cancel_requested  # the worker sees it on its next beat
    stopped = Q.finish(reg, running.id, "w1", {"output_ids": ["a"]}, status="cancelled")
    assert stopped.status == "cancelled"
    waiting = Q.enqueue(reg, "generate", {})
    with pytest.raises(Q.JobStateError, match="only failed or cancelled jobs"):
        Q.retry(reg, waiting.id)  # queued: nothing to retry
    Q.cancel(reg, waiting.id)

    failed = Q.enqueue(reg, "generate", {})
    assert Q.claim(reg, "w1").id == failed.id
    Q.fail(reg, failed.id, "w1", "boom")
    with pytest.raises(Q.JobStateError, match="already failed"):
        Q.cancel(reg, failed.id)
    back = Q.retry(reg, failed.id)
    assert (back.status, back.error, back.worker, back.result, back.cancel_requested) == ("queued", "", None, {}, False)

    Q.claim(reg, "w1")
    Q.finish(reg, failed.id, "w1", {})
    with pytest.raises(Q.JobStateError, match="already done"):
        Q.cancel(reg, failed.id)
    with pytest.raises(Q.JobStateError, match="is done"):
        Q.retry(reg, failed.id)


def test_unknown_ids_and_bad_input_are_one_line_errors(reg):
    for op in (Q.cancel, Q.retry):
        with pytest.raises(NotFound, match="no job with id NOPE; list them with `styler jobs ls`"):
            op(reg, "NOPE")
    with pytest.raises(Q.BadJob, match="unknown job status 'finished'"):
        Q.list_jobs(reg, "finished")
    with pytest.raises(Q.BadJob, match="cannot be stored as JSON"):
        Q.enqueue(reg, "generate", {"x": object()})
    with pytest.raises(Q.BadJob, match="needs a kind"):
        Q.enqueue(reg, "", {})
    assert Q.list_jobs(reg) == []


def test_recover_stale_requeues_then_fails_after_max_attempts(reg):
    job = Q.enqueue(reg, "generate", {})
    for attempt in (1, 2, 3):
        claimed = Q.claim(reg, f"w{attempt}")
        assert claimed.attempts == attempt
        now = time.time()
        assert Q.recover_stale(reg, stale_after_s=60, now=now + 30) == []  # still fresh
        (recovered,) = Q.recover_stale(reg, stale_after_s=60, max_attempts=3, now=now + 61)
        if attempt < 3:
            assert (recovered.status, recovered.worker, recovered.attempts) == ("queued", None, attempt)
            with pytest.raises(Q.LostClaim):  # the old worker wakes up: it must stop
                Q.heartbeat(reg, job.id, f"w{attempt}")
    assert recovered.status == "failed"
    assert "worker w3 stopped responding" in recovered.error and "tried 3 times" in recovered.error
    assert Q.claim(reg, "w4") is None
    assert Q.retry(reg, job.id).attempts == 0


def test_recover_stale_leaves_fresh_and_finishes_cancel_requests(reg):
    fresh = Q.enqueue(reg, "generate", {})
    asked = Q.enqueue(reg, "generate", {})
    Q.claim(reg, "w1")
    Q.claim(reg, "w2")
    Q.cancel(reg, asked.id)
    now = time.time() + 120
    reg.update(Job, fresh.id, heartbeat_at=_iso(now - 5))  # w1 beat 5 s before `now`
    (changed,) = Q.recover_stale(reg, stale_after_s=60, now=now)
    assert (changed.id, changed.status) == (asked.id, "cancelled")
    assert reg.get(Job, fresh.id).status == "running"


def _iso(epoch):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")


def test_release_gives_the_job_back_without_counting_the_attempt(reg):
    job = Q.enqueue(reg, "generate", {})
    Q.claim(reg, "w1")
    Q.heartbeat(reg, job.id, "w1", result={"output_ids": ["a"]})
    back = Q.release(reg, job.id, "w1")
    assert (back.status, back.worker, back.attempts, back.result) == ("queued", None, 0, {"output_ids": ["a"]})


def test_jobs_module_stays_headless():
    code = ("import sys, registry.jobs; "
            "print(','.join(m for m in ('torch', 'rich', 'textual', 'typer', 'styler') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""
