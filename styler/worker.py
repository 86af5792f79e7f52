"""`styler worker`: take queued jobs from the registry one at a time and run them.

Each worker has its own id; several workers (processes, hosts sharing a home, GPUs) run side by
side, because claiming a job is atomic. While a job runs a heartbeat thread stamps it every
`heartbeat_s`; a worker that finds a claim older than `stale_after_s` puts it back in the queue
(its worker died). A generate job renders `batch` images per forward pass and records its progress
after each batch, so a cancel request stops it between batches and a recovered job resumes where
the dead worker stopped. A train job runs `styler train`'s own loop on the worker's device: it
stops at a step boundary with a checkpoint (SIGTERM, Ctrl-C, a cancel request), and a job given back
or recovered resumes its run from that checkpoint. A study job renders and scores a finished study.
SIGTERM or Ctrl-C gives the running job back to the queue and exits 0.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import random
import signal
import threading
import time
import traceback
from contextlib import contextmanager

from registry import Job, NotFound, Output, Registry, RegistryError, new_id
from registry import jobs as Q

from .errors import StylerError, UsageError

KINDS = ("generate", "eval", "train", "study")
TRAIN_LOG_EVERY = 10  # a progress line every N steps of a train job


class _Stop(BaseException):
    """Raised by the signal handler inside a job's rendering, so the claim is released at once."""


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, (StylerError, RegistryError)):
        text = exc.message
    else:
        text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    return (text.strip().splitlines() or [type(exc).__name__])[0]


class _Heartbeat(threading.Thread):
    """Stamps the job every `every` seconds; sets `lost` if the job stopped being ours. A failed
    stamp (a busy lock, a full disk) is retried at the next beat; after FAIL_LOG_AFTER failures in a
    row it logs one line (staleness decides whether another worker takes the job), and one more
    when stamping works again."""

    FAIL_LOG_AFTER = 3

    def __init__(self, home, job_id: str, worker_id: str, every: float, log=None):
        super().__init__(daemon=True, name=f"heartbeat {job_id}")
        self.reg, self.job_id, self.worker_id, self.every = Registry(home), job_id, worker_id, every
        self.done, self.lost = threading.Event(), threading.Event()
        self.cancel = threading.Event()  # a cancel request seen by a beat (jobs that check between steps)
        self.log = log or (lambda message: None)
        self.failures = 0  # in a row
        self.failed_total = 0

    def run(self) -> None:
        while not self.done.wait(self.every):
            try:
                if Q.heartbeat(self.reg, self.job_id, self.worker_id).cancel_requested:
                    self.cancel.set()
            except Q.LostClaim:
                self.lost.set()
                return
            except Exception as exc:  # try again next beat; staleness decides
                self.failures += 1
                self.failed_total += 1
                if self.failures == self.FAIL_LOG_AFTER:
                    self.log(f"job {self.job_id}: warning: heartbeat failed {self.failures} times in a row "
                             f"({_one_line(exc)}); still trying every {self.every:g}s")
                continue
            if self.failures >= self.FAIL_LOG_AFTER:
                self.log(f"job {self.job_id}: heartbeat works again after {self.failures} failure(s)")
            self.failures = 0


class _Worker:
    def __init__(self, reg: Registry, placement, heartbeat_s: float, stop: threading.Event, log, batch: int = 1):
        self.reg, self.placement, self.heartbeat_s, self.stop, self.log = reg, placement, heartbeat_s, stop, log
        self.batch = batch
        self.id = Q.new_worker_id()
        self.sessions: dict = {}  # (base kind, path) -> Session, kept open across jobs
        self.interruptible = False

    @contextmanager
    def rendering(self):
        """The only stretch where a signal interrupts at once: no job-state write happens inside."""
        self.interruptible = True
        try:
            yield
        finally:
            self.interruptible = False

    def on_signal(self, signum, frame) -> None:
        self.stop.set()
        if self.interruptible:
            raise _Stop()

    def session(self, base_spec: str | None):
        from .generate.engine import Session
        from .models.resolve import resolve_base

        base = resolve_base(base_spec or None)
        key = (base.kind, str(base.path))
        if key not in self.sessions:
            self.log(f"loading base {base.name} on {self.placement.label}")
            self.sessions[key] = Session.open(base_spec or None, self.placement)
        return self.sessions[key]

    # -- one job -------------------------------------------------------------------------------
    def run(self, job: Job) -> None:
        self.log(f"job {job.id} ({job.kind}): started, attempt {job.attempts}")
        beat = _Heartbeat(self.reg.home, job.id, self.id, self.heartbeat_s, log=self.log)
        beat.start()
        try:
            if job.kind == "generate":
                self.generate(job, beat)
            elif job.kind == "eval":
                self.evaluate(job)
            elif job.kind == "train":
                self.train(job, beat)
            elif job.kind == "study":
                self.study(job)
            else:
                raise UsageError(f"unknown job kind {job.kind!r}; this worker runs {', '.join(KINDS[:-1])} and {KINDS[-1]} jobs")
        except _Stop:
            self.release(job)
        except Q.LostClaim as exc:
            self.log(f"job {job.id}: {exc.message}; dropping it")
        except Exception as exc:
            if os.environ.get("STYLER_DEBUG"):
                self.log(traceback.format_exc().rstrip())
            message = _one_line(exc)
            try:
                Q.fail(self.reg, job.id, self.id, message)
                self.log(f"job {job.id}: failed: {message}")
            except Q.LostClaim as lost:
                self.log(f"job {job.id}: {lost.message}; dropping it")
        finally:
            beat.done.set()
            beat.join()

    def release(self, job: Job) -> None:
        Q.release(self.reg, job.id, self.id)
        self.log(f"job {job.id}: stopping; put back in the queue")

    def generate(self, job: Job, beat: _Heartbeat) -> None:
        from .generate.jobs import request_from_payload
        from .generate.service import generate

        payload = dict(job.payload)
        base = payload.pop("base", None)
        session = self.session(base)
        payload.setdefault("batch", self.batch)
        req = request_from_payload(payload, native=64 if session.base.kind == "tiny" else 512)
        # Progress is the outputs themselves: each carries the job id and this series' token in its
        # params, and is stored by one insert, so a worker killed right after storing an image (before
        # its progress stamp) leaves nothing to render twice. The token, written with the first seed
        # by the first stamp before any image, tells this run's images from those of an earlier run
        # that `styler jobs retry` started over.
        series = job.result.get("series") or new_id()
        req.extra = {**req.extra, "base": base, "job": job.id, "job_series": series}
        first = job.result.get("seed", req.seed)
        if first is None:
            first = random.SystemRandom().randint(0, 2**32 - req.n)
        req.seed = first
        req.validate()
        seeds = range(first, first + req.n)
        if "series" in job.result:
            by_seed = {s: i for s, i in self.stored_outputs(job).items() if s in seeds}
        else:  # new, or begun by a worker that recorded only output_ids
            by_seed = {}
            for output_id in job.result.get("output_ids", []):
                try:
                    o = self.reg.get(Output, output_id)
                except NotFound:
                    continue
                by_seed.setdefault(o.seed, o.id)
        todo = [s for s in seeds if s not in by_seed]
        result = {"series": series, "output_ids": [by_seed[s] for s in sorted(by_seed)], "seed": first, "n": req.n}
        warn = lambda m: self.log(f"job {job.id}: warning: {m}")  # noqa: E731
        while todo:
            if beat.lost.is_set():
                raise Q.LostClaim(f"job {job.id} was taken from this worker (its heartbeat went stale)")
            now = Q.heartbeat(self.reg, job.id, self.id, result=result)  # progress so far, and cancel requests
            if self.stop.is_set():
                return self.release(job)
            if now.cancel_requested:
                Q.finish(self.reg, job.id, self.id, result, status="cancelled")
                return self.log(f"job {job.id}: cancelled after {len(by_seed)} of {req.n} images")
            k = 1  # the next run of consecutive seeds, at most one batch
            while k < min(req.batch, len(todo)) and todo[k] == todo[0] + k:
                k += 1
            with self.rendering():
                outs = generate(dataclasses.replace(req, n=k, seed=todo[0]), registry=self.reg, session=session,
                                warn=warn)
            by_seed.update((o.seed, o.id) for o in outs)
            result["output_ids"] = [by_seed[s] for s in sorted(by_seed)]
            del todo[:k]
        Q.finish(self.reg, job.id, self.id, result)
        self.log(f"job {job.id}: done, {len(by_seed)} image(s)")

    def stored_outputs(self, job: Job) -> dict[int, str]:
        """{seed: output id} of the images this job's current series has stored so far (oldest first
        wins; a seed is never rendered twice within a series)."""
        series = job.result.get("series")
        found: dict[int, str] = {}
        for o in self.reg.all(Output):
            if o.params.get("job") == job.id and o.params.get("job_series") == series and o.seed is not None:
                found.setdefault(o.seed, o.id)
        return found

    def evaluate(self, job: Job) -> None:
        """Runs to the end once started (a cancel request is not seen inside evaluate)."""
        from .eval.run import evaluate

        payload = dict(job.payload)
        subject = payload.pop("subject", None)
        if not subject:
            raise UsageError("eval job: the payload needs a subject (an adapter, a mix like a=0.5+b=0.5, or baseline)")
        # prompts/seeds are lists for library callers (a study); a job names a prompts_file, n and seed
        allowed = set(inspect.signature(evaluate).parameters) - {"text", "registry", "warn", "placement", "prompts", "seeds"}
        unknown = sorted(set(payload) - allowed)
        if unknown:
            raise UsageError(f"eval job: unknown option(s) {', '.join(unknown)}; use {', '.join(sorted(allowed))}")
        payload.setdefault("batch", self.batch)
        with self.rendering():
            scores = evaluate(subject, **payload, registry=self.reg, placement=self.placement,
                              warn=lambda m: self.log(f"job {job.id}: warning: {m}"))
        Q.finish(self.reg, job.id, self.id, json.loads(json.dumps(scores, default=str)))
        self.log(f"job {job.id}: done")


    def train(self, job: Job, beat: _Heartbeat) -> None:
        """Train as `styler train` does, on this worker's device; a job that already started a run
        (given back, or recovered from a dead worker) resumes it from its last checkpoint."""
        from registry import Run

        from .train.jobs import config_from_payload
        from .train.trainer import TrainingInterrupted, train

        cfg = config_from_payload(job.payload)
        result = {"run_id": job.result["run_id"]} if job.result.get("run_id") else {}
        resume = None
        if result:
            try:
                run = self.reg.get(Run, result["run_id"])
            except NotFound:
                self.log(f"job {job.id}: its run {result['run_id']} is gone; starting a new run")
                result = {}
            else:
                if run.status == "completed" and run.adapter_id:  # it ended before its job could be
                    return self.trained(job, run, result)
                if run.status == "running":
                    # the worker this job was taken from (its heartbeat went stale) is still stopping
                    # the run at its next step: wait for that, and give the job back if it goes on
                    run = self.wait_until_stopped(run)
                    if run.status == "running":
                        self.log(f"job {job.id}: its run {run.id} is still running (pid {run.pid}); giving the "
                                 "job back to try again later")
                        return self.release(job)
                    if run.status == "completed" and run.adapter_id:
                        return self.trained(job, run, result)
                resume = run.id

        def started(run_id: str) -> None:
            result["run_id"] = run_id
            Q.heartbeat(self.reg, job.id, self.id, result=result)  # from now on a resume continues this run
            self.log(f"job {job.id}: {'resuming' if resume else 'training'} run {run_id} on {self.placement.device}")

        progress = _TrainProgress(self, job, beat, result)
        try:
            outcome = train(cfg, registry=self.reg, resume=resume, on_start=started, monitor=progress,
                            device=self.placement.device)
        except (TrainingInterrupted, KeyboardInterrupt):
            if progress.reason == "lost":
                raise Q.LostClaim(f"job {job.id} was taken from this worker (its heartbeat went stale)") from None
            if progress.reason == "cancel":
                Q.finish(self.reg, job.id, self.id, result, status="cancelled")
                return self.log(f"job {job.id}: cancelled at step {result.get('step', 0)}; the run keeps its "
                                f"checkpoint (`styler train --resume {result.get('run_id')}` continues it)")
            self.stop.set()  # SIGTERM or Ctrl-C stopped the loop: this worker stops too
            Q.heartbeat(self.reg, job.id, self.id, result=result)  # the step it stopped at, for `styler jobs ls`
            return self.release(job)
        self.trained(job, outcome.run, result)

    RUN_STOP_WAIT_S = 60.0  # how long a worker waits for another process to stop a run it resumes

    def wait_until_stopped(self, run):
        """The run once it is no longer running (stopped, or its process gone), or as it is after
        RUN_STOP_WAIT_S or a stop request."""
        from registry import Run

        deadline = time.monotonic() + self.RUN_STOP_WAIT_S
        while run.status == "running" and time.monotonic() < deadline and not self.stop.is_set():
            self.stop.wait(0.25)
            run = self.reg.get(Run, run.id)
        return run

    def trained(self, job: Job, run, result: dict) -> None:
        from registry import Adapter

        adapter = self.reg.get(Adapter, run.adapter_id)
        result.update(run_id=run.id, adapter_id=adapter.id, adapter=adapter.label, step=run.step,
                      total_steps=run.total_steps, final_loss=run.loss)
        Q.finish(self.reg, job.id, self.id, result)
        self.log(f"job {job.id}: done, trained {adapter.label} in run {run.id}")

    def study(self, job: Job) -> None:
        """Render and score a study whose training jobs have ended (the job waits for them)."""
        from .study import render_study

        name = (job.payload or {}).get("study")
        if not name:
            raise UsageError("study job: the payload needs a study name")
        with self.rendering():
            made = render_study(name, registry=self.reg, placement=self.placement,
                                warn=lambda m: self.log(f"job {job.id}: warning: {m}"))
        Q.finish(self.reg, job.id, self.id, {"sheet": str(made.sheet), "table": str(made.table)})
        self.log(f"job {job.id}: done, study {name}: sheet {made.sheet}, scores {made.table}")


class _TrainProgress:
    """What a train job has instead of the live panel (the trainer's `monitor`): a log line every
    TRAIN_LOG_EVERY steps and the step in the job's result. It stops the loop, which saves a
    checkpoint and marks the run interrupted, when the worker is stopping, the job is cancelled or
    it is no longer this worker's; `reason` says which."""

    def __init__(self, worker: _Worker, job: Job, beat: _Heartbeat, result: dict):
        self.worker, self.job, self.beat, self.result = worker, job, beat, result
        self.reason: str | None = None
        self._stamped = time.monotonic()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def update(self, state, final: bool = False) -> None:
        if final:
            return
        w, job = self.worker, self.job
        self.result.update(step=state.step, total_steps=state.total_steps)
        if state.step % TRAIN_LOG_EVERY == 0 or state.step == state.total_steps:
            loss = f" loss {state.loss:.4f}" if state.loss is not None else ""
            w.log(f"job {job.id}: step {state.step}/{state.total_steps}{loss}")
        if state.step >= state.total_steps:
            return  # the adapter is saved next: a stop now would only lose it
        if time.monotonic() - self._stamped >= w.heartbeat_s:
            self._stamped = time.monotonic()
            try:
                if Q.heartbeat(w.reg, job.id, w.id, result=self.result).cancel_requested:
                    self.beat.cancel.set()
            except Q.LostClaim:
                self.beat.lost.set()
        if self.beat.lost.is_set():
            self.reason = "lost"
        elif self.beat.cancel.is_set():
            self.reason = "cancel"
        elif w.stop.is_set():
            self.reason = "stop"
        if self.reason:
            raise KeyboardInterrupt  # the trainer's own stop: a checkpoint at this step


def run_worker(*, once: bool = False, device: str | None = None, dtype: str | None = None, batch: int = 1,
               poll_s: float = 1.0, stale_after_s: float = Q.DEFAULT_STALE_AFTER_S, heartbeat_s: float = Q.DEFAULT_HEARTBEAT_S,
               stop_event: threading.Event | None = None, registry: Registry | None = None, log=print) -> int:
    """Run queued jobs until stopped (or, with `once`, at most one); returns the exit code (0)."""
    from .device import resolve_placement

    placement = resolve_placement(device, dtype)
    if batch < 1:
        raise UsageError(f"--batch {batch}: render at least one image per pass (--batch 1)")
    if poll_s <= 0:
        raise UsageError(f"--poll {poll_s:g} must be > 0 seconds")
    if stale_after_s <= heartbeat_s:
        raise UsageError(f"--stale-after {stale_after_s:g}s must be longer than the heartbeat interval "
                         f"({heartbeat_s:g}s), or live jobs would be taken from their workers")
    stop = stop_event or threading.Event()
    worker = _Worker(registry or Registry(), placement, heartbeat_s, stop, log, batch=batch)
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, worker.on_signal) for s in handled}
    log(f"worker {worker.id} ready on {placement.label}; waiting for jobs" + ("" if once else " (Ctrl-C to stop)"))
    if stale_after_s < Q.min_stale_after(heartbeat_s):
        log(f"warning: --stale-after {stale_after_s:g}s is under {Q.min_stale_after(heartbeat_s):g}s (two heartbeats of "
            f"{heartbeat_s:g}s, the registry lock timeout and a margin): a live job whose heartbeat waits on a busy "
            f"registry could be requeued")
    try:
        while not stop.is_set():
            for job in Q.recover_stale(worker.reg, stale_after_s=stale_after_s):
                log(f"job {job.id}: its worker stopped responding; now {job.status}")
            job = Q.claim(worker.reg, worker.id)
            if job is not None:
                worker.run(job)
            if once:
                break
            if job is None:
                stop.wait(poll_s)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    log(f"worker {worker.id} stopped")
    return 0
