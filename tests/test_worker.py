"""`styler worker` and `styler jobs`: jobs run to outputs with the right mix, failures become one-line
errors, cancel and stop requests are honoured between images, a killed worker's job is recovered
and finished by another, parallel workers share the queue."""

import json
import re
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from registry import Job, Output, Registry
from registry import jobs as Q
from styler.errors import UsageError
from styler.worker import run_worker
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline

ROOT = Path(__file__).resolve().parents[1]
MIX = [["anime", 0.5, None], ["watercolor", 0.5, None]]


def _payload(n=2, seed=7, adapters=MIX, **more):
    return {"prompt": "a cat", "adapters": adapters, "n": n, "seed": seed, "steps": 2, "size": 32, "base": "tiny", **more}


def _outputs(reg, job):
    return [reg.get(Output, i) for i in job.result["output_ids"]]


def _run_once(**kw):
    logs = []
    assert run_worker(once=True, log=logs.append, **kw) == 0
    return logs


def _spawn_worker(*args, threads=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # several workers on a small CI machine
    return subprocess.Popen([sys.executable, "-m", "styler", "worker", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(reg, job_id, ready, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = reg.get(Job, job_id)
        if ready(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"timed out; job is {job.status} with {job.result}")


def test_mix_job_renders_each_image_with_the_exact_mix(styled):
    reg = Registry()
    job = Q.enqueue(reg, "generate", _payload())
    logs = _run_once()
    job = reg.get(Job, job.id)
    assert (job.status, job.attempts, job.error) == ("done", 1, "")
    outs = _outputs(reg, job)
    assert [o.seed for o in outs] == [7, 8]
    for o in outs:
        assert [(a["name"], a["weight"], a["te_weight"]) for a in o.adapters] == [("anime", 0.5, 0.5), ("watercolor", 0.5, 0.5)]
        assert (o.width, o.height, o.steps, o.prompt) == (32, 32, 2, "a cat")
        assert o.params["job"] == job.id
    assert any("done, 2 image(s)" in line for line in logs)
    assert _run_once()[-1].endswith("stopped")  # an empty queue: nothing to do, exit 0


def test_a_worker_renders_in_batches_with_the_images_of_batch_1(styled, monkeypatch):
    import io

    import numpy as np
    from PIL import Image

    from registry import BlobStore

    def px(o):
        with BlobStore(styled).open(o.blob) as fh:
            return np.asarray(Image.open(io.BytesIO(fh.read())).convert("RGB")).astype(np.int16)

    reg = Registry()
    passes = []
    from styler.generate.engine import Session

    real = Session.render_batch
    monkeypatch.setattr(Session, "render_batch", lambda self, **kw: passes.append(len(kw["seeds"])) or real(self, **kw))
    one = Q.enqueue(reg, "generate", _payload(n=3, batch=1))
    batched = Q.enqueue(reg, "generate", _payload(n=3))
    logs = _run_once(device="cpu", dtype="fp32")
    logs += _run_once(batch=2)
    assert passes == [1, 1, 1, 2, 1]
    assert any("on cpu fp32" in line for line in logs)
    a, b = _outputs(reg, reg.get(Job, one.id)), _outputs(reg, reg.get(Job, batched.id))
    assert [o.seed for o in a] == [o.seed for o in b] == [7, 8, 9]
    assert all((o.device, o.dtype) == ("cpu", "fp32") for o in a + b)
    assert max(int(np.abs(px(x) - px(y)).max()) for x, y in zip(a, b)) <= 2


def test_a_failing_job_is_failed_with_one_line(styled, monkeypatch):
    reg = Registry()
    bad = Q.enqueue(reg, "generate", _payload(adapters=[["nosuch", 1.0, None]]))
    _run_once()
    bad = reg.get(Job, bad.id)
    assert bad.status == "failed"
    assert bad.error.startswith("no adapter named 'nosuch'") and "\n" not in bad.error
    assert "Traceback" not in bad.error and reg.count(Output) == 0

    odd = Q.enqueue(reg, "upscale", {})
    _run_once()
    assert reg.get(Job, odd.id).error == "unknown job kind 'upscale'; this worker runs generate, eval, train and study jobs"

    monkeypatch.setenv("STYLER_DEBUG", "1")  # the traceback goes to the log, never into the record
    typo = Q.enqueue(reg, "generate", _payload(stpes=3))
    logs = _run_once()
    assert reg.get(Job, typo.id).error.startswith("generate job: unknown field(s) stpes;")
    assert any("Traceback" in line for line in logs)


def test_cancel_requested_mid_job_stops_between_images(styled, monkeypatch):
    import styler.generate.service as service

    reg = Registry()
    job = Q.enqueue(reg, "generate", _payload(n=5))
    real = service.generate

    def render_then_cancel(req, **kw):
        outs = real(req, **kw)
        Q.cancel(reg, job.id)  # what `styler jobs cancel` does while the worker renders
        return outs

    monkeypatch.setattr(service, "generate", render_then_cancel)
    _run_once()
    job = reg.get(Job, job.id)
    assert (job.status, job.cancel_requested) == ("cancelled", True)
    assert [o.seed for o in _outputs(reg, job)] == [7]  # the partial result is kept
    assert reg.count(Output) == 1


def test_stop_gives_the_job_back_and_the_next_worker_resumes(styled, monkeypatch):
    import styler.generate.service as service

    reg = Registry()
    job = Q.enqueue(reg, "generate", _payload(n=4, seed=None))
    stop, real, calls = threading.Event(), service.generate, []

    def render_then_stop(req, **kw):
        calls.append(req.seed)
        if len(calls) == 2:
            stop.set()  # what SIGTERM / Ctrl-C do
        return real(req, **kw)

    monkeypatch.setattr(service, "generate", render_then_stop)
    assert run_worker(stop_event=stop, log=lambda m: None) == 0
    back = reg.get(Job, job.id)
    assert (back.status, back.worker, back.attempts, len(back.result["output_ids"])) == ("queued", None, 0, 2)
    first = back.result["seed"]  # the random first seed is kept, so the resumed images continue the series

    _run_once()
    done = reg.get(Job, job.id)
    assert (done.status, done.attempts) == ("done", 1)
    assert [o.seed for o in _outputs(reg, done)] == [first, first + 1, first + 2, first + 3]
    assert calls == [first, first + 1, first + 2, first + 3] and reg.count(Output) == 4


def test_a_worker_that_lost_its_claim_stops_writing(styled, monkeypatch):
    import styler.generate.service as service

    reg = Registry()
    job = Q.enqueue(reg, "generate", _payload(n=3))
    real = service.generate

    def render_then_get_stolen(req, **kw):
        outs = real(req, **kw)
        if reg.get(Job, job.id).worker != "thief":
            Q.recover_stale(reg, stale_after_s=1, now=time.time() + 100)  # as if this worker had hung
            Q.claim(reg, "thief")
        return outs

    monkeypatch.setattr(service, "generate", render_then_get_stolen)
    logs = _run_once()
    stolen = reg.get(Job, job.id)
    assert (stolen.status, stolen.worker, stolen.attempts) == ("running", "thief", 2)
    assert any("no longer claimed by worker" in line and "dropping it" in line for line in logs)


def test_eval_job_records_its_scores(styled):
    reg = Registry()
    job = Q.enqueue(reg, "eval", {"subject": "anime", "n": 1, "steps": 1, "metrics": "clip_t", "clip": "tiny",
                                  "size": 32, "base": "tiny"})
    bad = Q.enqueue(reg, "eval", {"subject": "anime", "seeds": 3})
    _run_once()
    _run_once()
    job = reg.get(Job, job.id)
    assert job.status == "done", job.error
    assert set(job.result["scores"]) == {"anime@1", "baseline"}
    assert isinstance(job.result["scores"]["anime@1"]["clip_t"], float)
    assert reg.get(Job, bad.id).error.startswith("eval job: unknown option(s) seeds;")


def test_a_killed_workers_job_is_recovered_and_finished(styled):
    reg = Registry()
    job = Q.enqueue(reg, "generate", _payload(n=16, seed=100))
    proc = _spawn_worker()
    try:
        running = _wait_for(reg, job.id, lambda j: j.status == "running" and len(j.result.get("output_ids", [])) >= 2)
    finally:
        proc.kill()  # SIGKILL: no chance to release the claim
        proc.wait(30)
    assert running.attempts == 1
    time.sleep(0.6)  # let its last heartbeat age past stale_after_s
    logs = _run_once(stale_after_s=0.5, heartbeat_s=0.1)
    assert any("its worker stopped responding; now queued" in line for line in logs)
    done = reg.get(Job, job.id)
    assert (done.status, done.attempts) == ("done", 2)
    assert done.worker != running.worker
    assert [o.seed for o in _outputs(reg, done)] == list(range(100, 116))  # resumed, no image twice


def test_sigterm_puts_the_running_job_back_and_exits_0(styled):
    reg = Registry()
    job = Q.enqueue(reg, "generate", _payload(n=16))
    proc = _spawn_worker()
    _wait_for(reg, job.id, lambda j: len(j.result.get("output_ids", [])) >= 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    back = reg.get(Job, job.id)
    assert (back.status, back.worker, back.attempts) == ("queued", None, 0)
    assert 1 <= len(back.result["output_ids"]) < 16
    assert "put back in the queue" in err


def test_parallel_workers_take_distinct_jobs(styled):
    reg = Registry()
    ids = [Q.enqueue(reg, "generate", _payload(n=1, seed=i)).id for i in range(3)]
    procs = [_spawn_worker("--once", threads=1) for _ in ids]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    jobs = [reg.get(Job, i) for i in ids]
    assert [j.status for j in jobs] == ["done"] * 3
    assert len({j.worker for j in jobs}) == 3  # each worker ran one job
    assert sorted(o.seed for j in jobs for o in _outputs(reg, j)) == [0, 1, 2]


def test_device_must_exist_here():
    import torch

    with pytest.raises(UsageError, match=re.escape("--device tpu: unknown device; use auto | cpu | cuda | cuda:N | mps")):
        run_worker(once=True, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="--device cuda:0: torch .* sees no CUDA GPU here; use --device cpu"):
            run_worker(once=True, device="cuda:0")
    with pytest.raises(UsageError, match="must be longer than the heartbeat interval"):
        run_worker(once=True, stale_after_s=1, heartbeat_s=5)


# -- CLI ---------------------------------------------------------------------------------------

def test_jobs_cli_add_list_run_cancel_retry(styled):
    r = run_cli("jobs", "add-mix", "a cat", "anime=0.5", "watercolor=0.5", "--n", "2", "--seed", "3", "--steps", "2",
                "--size", "32")
    assert r.exit_code == 0, r.stderr
    job_id = r.stdout.strip()
    assert "styler worker" in r.stderr

    listed = json.loads(run_cli("jobs", "ls", "--json").stdout)
    assert [(j["id"], j["status"], j["payload"]["adapters"]) for j in listed] == [(job_id, "queued", MIX)]
    assert job_id in run_cli("jobs", "ls", "--status", "queued").stdout
    assert run_cli("jobs", "ls", "--status", "done").stdout == ""

    r = run_cli("worker", "--once")
    assert r.exit_code == 0, r.stderr
    assert f"job {job_id}: done, 2 image(s)" in r.stderr and r.stdout == ""
    (done,) = json.loads(run_cli("jobs", "ls", "--status", "done", "--json").stdout)
    assert len(done["result"]["output_ids"]) == 2
    assert "2 output(s)" in run_cli("jobs", "ls").stdout

    r = run_cli("jobs", "cancel", job_id)
    assert (r.exit_code, r.stderr.strip()) == (1, f"error: job {job_id} is already done; only queued or running "
                                                   f"jobs can be cancelled")
    r = run_cli("jobs", "retry", job_id)
    assert r.exit_code == 1 and "only failed or cancelled jobs can be retried" in r.stderr

    second = run_cli("jobs", "add-mix", "a dog", "ink=1").stdout.strip()
    assert run_cli("jobs", "cancel", second).stdout.strip() == f"{second}  cancelled"
    assert run_cli("jobs", "retry", second).stdout.strip() == f"{second}  queued"
    assert Registry().get(Job, second).status == "queued"


def test_jobs_cli_bad_input_is_one_line_and_queues_nothing(styled):
    cases = [
        (("jobs", "cancel", "NOPE"), 1, "error: no job with id NOPE; list them with `styler jobs ls`"),
        (("jobs", "retry", "NOPE"), 1, "error: no job with id NOPE; list them with `styler jobs ls`"),
        (("jobs", "ls", "--status", "finished"), 2, "error: unknown job status 'finished'; use one of queued, "
                                                    "running, done, failed, cancelled"),
        (("jobs", "add-mix", "a cat", "nosuch=0.5"), 1, "error: no adapter named 'nosuch'"),
        (("jobs", "add-mix", "a cat"), 2, "error: no adapters in the mix"),
        (("jobs", "add-mix", "a cat", "a dog", "anime=1"), 2, "error: give exactly one prompt"),
        (("jobs", "add-mix", "a cat", "anime=lots"), 2, "error: the weight of anime must be a number"),
        (("jobs", "add-mix", "a cat", "anime=1", "--steps", "0"), 2, "error: --steps 0 must be >= 1"),
        (("worker", "--device", "nosuch"), 2, "error: --device nosuch: unknown device; use auto | cpu | cuda | cuda:N | mps"),
        (("worker", "--stale-after", "1"), 2, "error: --stale-after 1s must be longer than the heartbeat interval"),
    ]
    for args, code, message in cases:
        r = run_cli(*args)
        assert r.exit_code == code, (args, r.stderr)
        assert r.stderr.startswith(message) and r.stderr.count("\n") == 1, (args, r.stderr)
    assert Registry().count(Job) == 0


def test_python_m_styler_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "styler", "jobs", "ls", "--json"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (r.returncode, json.loads(r.stdout)) == (0, [])


def test_heartbeat_failures_are_counted_and_logged_once_per_streak(styler_home, monkeypatch):
    from registry import RegistryError

    from styler import worker as W

    reg = Registry()
    job = Q.enqueue(reg, "generate", _payload(n=1))
    Q.claim(reg, "w1")
    fails = {"left": 5}
    real = Q.heartbeat

    def flaky(*a, **kw):
        if fails["left"] > 0:
            fails["left"] -= 1
            raise RegistryError("the registry is locked by another styler process for over 20s (…)")
        return real(*a, **kw)

    monkeypatch.setattr(Q, "heartbeat", flaky)
    logs = []
    beat = W._Heartbeat(styler_home, job.id, "w1", 0.01, log=logs.append)
    beat.start()
    deadline = time.monotonic() + 10
    while (fails["left"] or beat.failures) and time.monotonic() < deadline:
        time.sleep(0.01)
    beat.done.set()
    beat.join(5)
    assert beat.failed_total == 5 and beat.failures == 0  # counted, then reset by a good beat
    failing = [line for line in logs if "heartbeat failed" in line]
    assert len(failing) == 1 and "3 times in a row" in failing[0] and "locked by another" in failing[0]
    assert any("heartbeat works again" in line for line in logs)
    assert not beat.lost.is_set()


_KILL_AFTER_INSERT = """
import os, signal, sys
from registry import Output, store
real = store.Registry.insert
def insert(self, record):
    made = real(self, record)
    if isinstance(record, Output) and record.params.get("job") and self.count(Output) >= int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)  # after the output is stored, before anything else is written
    return made
store.Registry.insert = insert
from styler.worker import run_worker
run_worker(once=True, batch=2, log=lambda m: None)
"""


@pytest.mark.parametrize("kill_at", [1, 3])  # inside the first batch; inside the second, after a progress stamp
def test_a_worker_killed_right_after_storing_an_output_never_renders_that_seed_again(tiny_home, monkeypatch, kill_at):
    from styler.generate.engine import Session

    reg = Registry()
    job = Q.enqueue(reg, "generate", _payload(n=4, seed=50, adapters=[]))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _KILL_AFTER_INSERT, str(kill_at)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert reg.count(Output) == kill_at
    time.sleep(0.6)
    rendered, real = [], Session.render_batch
    monkeypatch.setattr(Session, "render_batch", lambda self, **kw: rendered.append(list(kw["seeds"])) or real(self, **kw))
    logs = _run_once(stale_after_s=0.5, heartbeat_s=0.1, batch=2)
    assert any("its worker stopped responding; now queued" in line for line in logs)
    done = reg.get(Job, job.id)
    assert (done.status, done.attempts) == ("done", 2)
    assert [o.seed for o in _outputs(reg, done)] == [50, 51, 52, 53]
    assert sorted(o.seed for o in reg.all(Output)) == [50, 51, 52, 53]  # no seed rendered twice
    assert [s for batch in rendered for s in batch] == list(range(50 + kill_at, 54))


def test_a_retried_job_renders_from_the_start_again(styled, monkeypatch):
    import styler.generate.service as service

    reg = Registry()
    job = Q.enqueue(reg, "generate", _payload(n=3))
    real = service.generate

    def render_then_cancel(req, **kw):
        outs = real(req, **kw)
        Q.cancel(reg, job.id)
        return outs

    monkeypatch.setattr(service, "generate", render_then_cancel)
    _run_once()
    first = reg.get(Job, job.id).result["output_ids"]
    assert len(first) == 1
    monkeypatch.setattr(service, "generate", real)
    Q.retry(reg, job.id)
    _run_once()
    again = reg.get(Job, job.id)
    assert again.status == "done" and [o.seed for o in _outputs(reg, again)] == [7, 8, 9]
    assert not set(first) & set(again.result["output_ids"])  # from the start: its own images
