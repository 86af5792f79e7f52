"""The job queue: enqueue, claim, heartbeat, finish, and recovery of claims whose worker died.

Every state change happens inside `reg.locked()`, so two workers never claim the same job. A
worker proves it still owns a job on each write: heartbeat, finish, fail and release raise
`LostClaim` when the job is no longer running under that worker id (it was recovered as stale and
perhaps claimed by another worker); the worker must then stop and write nothing more to the job.

    queued ──claim──> running ──finish──> done
      ^                 │ ├──fail──────> failed ──retry──> queued
      │                 │ └─finish(status="cancelled") ─> cancelled ──retry──> queued
      └─release/stale───┘

A job queued with `after` (ids of other jobs, e.g. a study's render after its training runs) is
not claimed while any of those is queued or running; once they have all ended, whatever their
outcome, it is claimed like any other.

Timing: a worker stamps its job every `heartbeat_s` (DEFAULT_HEARTBEAT_S); another worker requeues
a job whose last stamp is older than `stale_after_s` (DEFAULT_STALE_AFTER_S). A stamp waits at most
the registry's LOCK_TIMEOUT_S for the lock, and a failed one is retried at the next beat, so
stale_after_s should be at least heartbeat_s + LOCK_TIMEOUT_S + heartbeat_s + STALE_MARGIN_S
(5 + 20 + 5 + 15 = 45 <= 60 by default). The two settings are independent: changing the lock timeout
does not change when jobs go stale. `recover_stale` also measures a heartbeat's age from the moment
it asked for the lock, so time spent waiting behind a long critical section (when no heartbeat
could be written either) never counts against a job.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from datetime import datetime
from typing import Iterable

from .errors import Conflict, NotFound, RegistryError
from .ids import now_iso
from .records import Job
from .store import Registry

STATUSES = ("queued", "running", "done", "failed", "cancelled")
DEFAULT_HEARTBEAT_S = 5.0
DEFAULT_STALE_AFTER_S = 60.0
STALE_MARGIN_S = 15.0


def min_stale_after(heartbeat_s: float) -> float:
    """The shortest stale-after time that never requeues a live job whose heartbeat waited the whole
    lock timeout and then missed a beat."""
    from .store import LOCK_TIMEOUT_S

    return 2 * heartbeat_s + LOCK_TIMEOUT_S + STALE_MARGIN_S


class LostClaim(RegistryError):
    """The job is no longer running under this worker; the worker must stop working on it."""


class BadJob(RegistryError):
    """A job or a job query that cannot be used as given (a usage error)."""

    exit_code = 2


class JobStateError(Conflict):
    """The job is in a state that does not allow the operation (e.g. cancelling a finished job)."""


def new_worker_id() -> str:
    """`<hostname>:<pid>:<random>`: unique per worker, and says where to look for it."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _iso_to_epoch(text: str | None) -> float:
    return datetime.fromisoformat(text).timestamp() if text else 0.0


def _get(reg: Registry, job_id: str) -> Job:
    try:
        return reg.get(Job, job_id)
    except NotFound:
        raise NotFound(f"no job with id {job_id}; list them with `styler jobs ls`") from None


def enqueue(reg: Registry, kind: str, payload: dict, *, after: Iterable[str] | None = None) -> Job:
    """Add a queued job; the payload must be a JSON object (it is stored as is). With `after`, the
    job waits in the queue until those jobs have ended (done, failed or cancelled)."""
    if not kind:
        raise BadJob("a job needs a kind (e.g. generate or eval)")
    if not isinstance(payload, dict):
        raise BadJob(f"a job payload is a JSON object, not {type(payload).__name__}")
    try:
        json.dumps(payload)
    except (TypeError, ValueError) as exc:
        raise BadJob(f"the job payload cannot be stored as JSON: {exc}") from None
    after = list(after or [])
    for job_id in after:
        _get(reg, job_id)
    return reg.insert(Job(kind=kind, payload=payload, after=after))


ENDED = ("done", "failed", "cancelled")


def waiting_on(job: Job, by_id: dict[str, Job]) -> list[str]:
    """The ids among `job.after` that have not ended yet (a job no longer in the registry has)."""
    return [i for i in job.after if i in by_id and by_id[i].status not in ENDED]


def claim(reg: Registry, worker_id: str, kinds: Iterable[str] | None = None) -> Job | None:
    """Take the oldest queued job (of `kinds`, if given) that waits on no unfinished job, for this
    worker; None if there is none."""
    wanted = set(kinds) if kinds is not None else None
    with reg.locked():
        by_id = None
        for job in reg.find(Job, status="queued"):  # oldest first: ids are time-ordered
            if job.after:
                by_id = by_id if by_id is not None else {j.id: j for j in reg.all(Job)}
                if waiting_on(job, by_id):
                    continue
            if wanted is None or job.kind in wanted:
                stamp = now_iso()
                return reg.update(Job, job.id, status="running", worker=worker_id, claimed_at=stamp,
                                  heartbeat_at=stamp, attempts=job.attempts + 1, error="")
    return None


def _owned(reg: Registry, job_id: str, worker_id: str) -> Job:
    """The job, if it is running under this worker; else LostClaim."""
    job = _get(reg, job_id)
    if job.status != "running" or job.worker != worker_id:
        holder = f"running under {job.worker}" if job.status == "running" else job.status
        raise LostClaim(f"job {job_id} is no longer claimed by worker {worker_id} (it is {holder})")
    return job


def heartbeat(reg: Registry, job_id: str, worker_id: str, *, result: dict | None = None) -> Job:
    """Say the worker is alive (and optionally record progress in `result`); returns the job, so the
    caller sees `cancel_requested`. Raises LostClaim if the job is no longer this worker's."""
    with reg.locked():
        _owned(reg, job_id, worker_id)
        changes = {"heartbeat_at": now_iso()}
        if result is not None:
            changes["result"] = result
        return reg.update(Job, job_id, **changes)


def finish(reg: Registry, job_id: str, worker_id: str, result: dict, *, status: str = "done") -> Job:
    """Mark the job done (or `status="cancelled"` when it stopped on a cancel request) with its result."""
    if status not in ("done", "cancelled"):
        raise ValueError(f"finish() sets done or cancelled, not {status!r}")
    with reg.locked():
        _owned(reg, job_id, worker_id)
        return reg.update(Job, job_id, status=status, result=result, heartbeat_at=now_iso())


def fail(reg: Registry, job_id: str, worker_id: str, error: str) -> Job:
    """Mark the job failed with a one-line error (the first line of `error` is kept)."""
    line = (str(error).strip().splitlines() or ["failed"])[0]
    with reg.locked():
        _owned(reg, job_id, worker_id)
        return reg.update(Job, job_id, status="failed", error=line, heartbeat_at=now_iso())


def release(reg: Registry, job_id: str, worker_id: str) -> Job:
    """Give a claimed job back to the queue unfinished (the worker is stopping). The attempt is not
    counted, and the result (progress so far) is kept for the next worker to resume from."""
    with reg.locked():
        job = _owned(reg, job_id, worker_id)
        return reg.update(Job, job_id, status="queued", worker=None, claimed_at=None, heartbeat_at=None,
                          attempts=max(job.attempts - 1, 0))


def cancel(reg: Registry, job_id: str) -> Job:
    """Queued → cancelled now; running → cancel_requested (the worker stops at its next check);
    already cancelled → unchanged; done or failed → JobStateError."""
    with reg.locked():
        job = _get(reg, job_id)
        if job.status == "queued":
            return reg.update(Job, job_id, status="cancelled")
        if job.status == "running":
            return job if job.cancel_requested else reg.update(Job, job_id, cancel_requested=True)
        if job.status == "cancelled":
            return job
        raise JobStateError(f"job {job_id} is already {job.status}; only queued or running jobs can be cancelled")


def retry(reg: Registry, job_id: str) -> Job:
    """Failed or cancelled → queued again, from the start (error, result, worker and attempts cleared)."""
    with reg.locked():
        job = _get(reg, job_id)
        if job.status not in ("failed", "cancelled"):
            raise JobStateError(f"job {job_id} is {job.status}; only failed or cancelled jobs can be retried")
        return reg.update(Job, job_id, status="queued", error="", result={}, worker=None, claimed_at=None,
                          heartbeat_at=None, cancel_requested=False, attempts=0)


def recover_stale(reg: Registry, *, stale_after_s: float, max_attempts: int = 3, now: float | None = None) -> list[Job]:
    """Running jobs whose last heartbeat is older than `stale_after_s` (their worker died or hung) go
    back to the queue, or to failed once they were tried `max_attempts` times, or to cancelled if a
    cancel was requested. Returns the changed jobs."""
    changed = []
    now = time.time() if now is None else now  # before the wait for the lock: see the module docstring
    with reg.locked():
        for job in reg.find(Job, status="running"):
            age = now - _iso_to_epoch(job.heartbeat_at or job.claimed_at)
            if age <= stale_after_s:
                continue
            if job.cancel_requested:
                changes = {"status": "cancelled", "worker": None}
            elif job.attempts >= max_attempts:
                changes = {"status": "failed", "error": (
                    f"worker {job.worker} stopped responding (no heartbeat for {age:.0f}s); the job was "
                    f"tried {job.attempts} times (max {max_attempts}); `styler jobs retry {job.id}` to run it again")}
            else:
                changes = {"status": "queued", "worker": None, "claimed_at": None, "heartbeat_at": None}
            changed.append(reg.update(Job, job.id, **changes))
    return changed


def list_jobs(reg: Registry, status: str | None = None) -> list[Job]:
    """Jobs oldest first, optionally only those with one status."""
    if status is not None and status not in STATUSES:
        raise BadJob(f"unknown job status {status!r}; use one of {', '.join(STATUSES)}")
    return reg.find(Job, status=status) if status else reg.all(Job)
