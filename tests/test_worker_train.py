"""Train jobs: `styler train --queue` and a worker train the adapter `styler train` trains; SIGTERM
gives the job back with a checkpoint and the next worker resumes the same run; a cancel or a lost
claim stops the loop; bad input is one line and queues nothing."""

import json
import os
import signal
import threading

import pytest

from registry import Adapter, BlobStore, Job, Registry, Run
from registry import jobs as Q
from styler.worker import run_worker
from tests.helpers import run_cli

FAST = ["--base", "tiny", "--resolution", "32", "--steps", "4", "--lr", "5e-2", "--rank", "2"]


@pytest.fixture
def anime(tiny_home):
    from styler.data.library import synth_dataset

    synth_dataset("anime", kind="pixel", n=4, size=32, seed=0)
    return "anime"


def _weights(reg, adapter):
    from safetensors.torch import load_file

    return load_file(str(BlobStore(reg.home).path(adapter.blob)))


def _steps(home, run_id):
    rows = (home / "runs" / run_id / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in rows]


@pytest.mark.slow
def test_a_queued_run_stopped_by_sigterm_resumes_in_the_next_worker_and_equals_a_direct_run(anime, styler_home,
                                                                                            monkeypatch):
    import torch

    from styler.train import trainer as tr

    r = run_cli("train", anime, *FAST, "--name", "direct")
    assert r.exit_code == 0, r.stderr
    reg = Registry()
    direct = reg.resolve(Adapter, "direct")

    r = run_cli("train", anime, *FAST, "--name", "queued", "--queue")
    assert r.exit_code == 0, r.stderr
    job_id = r.stdout.strip()
    job = reg.get(Job, job_id)
    assert (job.kind, job.status, job.payload["config"]["dataset"]) == ("train", "queued", "anime@1")  # pinned
    assert reg.count(Run) == 1  # queueing trains nothing

    real = tr.Trainer.step_loss

    def sigterm_at_step_2(self, step, micro):
        if step == 2 and not os.environ.get("_SIGNALLED"):
            os.environ["_SIGNALLED"] = "1"
            os.kill(os.getpid(), signal.SIGTERM)  # what `kill WORKER_PID` does, mid-step
        return real(self, step, micro)

    monkeypatch.setattr(tr.Trainer, "step_loss", sigterm_at_step_2)
    monkeypatch.delenv("_SIGNALLED", raising=False)
    logs = []
    assert run_worker(log=logs.append, device="cpu") == 0  # no --once: the signal is what stops it
    back = reg.get(Job, job_id)
    run_id = back.result["run_id"]
    assert (back.status, back.worker, back.attempts, back.result["step"]) == ("queued", None, 0, 2)
    stopped = reg.get(Run, run_id)
    assert (stopped.status, stopped.step, stopped.device) == ("interrupted", 2, "cpu")
    from styler.train.checkpoint import checkpoint_step, latest_checkpoint

    assert checkpoint_step(latest_checkpoint(styler_home / "runs" / run_id)) == 2
    assert any("put back in the queue" in line for line in logs)

    # The run recorded as running by a live process (as when the worker the job was taken from is
    # still stopping it): the next worker waits for it, then gives the job back instead of failing it.
    import socket
    import subprocess
    import sys

    from registry.records import process_started
    from styler.worker import _Worker as Worker

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        reg.update(Run, run_id, status="running", pid=holder.pid, host=socket.gethostname(),
                   pid_started=process_started(holder.pid))
        monkeypatch.setattr(Worker, "RUN_STOP_WAIT_S", 0.5, raising=False)
        logs = []
        assert run_worker(once=True, log=logs.append) == 0
        waited = reg.get(Job, job_id)
        assert waited.status == "queued" and not waited.error, (waited.status, waited.error, logs)
        assert any(f"its run {run_id} is still running" in line for line in logs)
        assert reg.get(Run, run_id).status == "running"  # untouched
    finally:
        holder.kill()
        holder.wait()
    # that process gone, the run reads as interrupted, and the next worker resumes it

    logs = []
    assert run_worker(once=True, log=logs.append) == 0
    done = reg.get(Job, job_id)
    assert done.status == "done", done.error
    assert any(f"resuming run {run_id}" in line for line in logs)
    run = reg.get(Run, run_id)
    assert (run.status, run.step, done.result["adapter"]) == ("completed", 4, "queued@1")
    assert _steps(styler_home, run_id) == [1, 2, 3, 4]  # each step once: resumed, not restarted
    assert reg.count(Run) == 2
    queued = reg.get(Adapter, done.result["adapter_id"])
    assert queued.run_id == run_id and queued.label == "queued@1"
    a, b = _weights(reg, direct), _weights(reg, queued)
    assert sorted(a) == sorted(b) and len(a) > 0
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_the_train_loop_stops_on_a_cancel_a_stop_or_a_lost_claim_but_not_at_the_last_step(styler_home):
    from styler.train.monitor import TrainState
    from styler.worker import _Heartbeat, _TrainProgress, _Worker

    reg = Registry()
    job = Q.enqueue(reg, "train", {"config": {"dataset": "anime"}})
    worker = _Worker(reg, None, heartbeat_s=0.0, stop=threading.Event(), log=lambda m: None)
    claimed = Q.claim(reg, worker.id)

    def progress():
        beat = _Heartbeat(reg.home, job.id, worker.id, every=60)
        return _TrainProgress(worker, claimed, beat, {"run_id": "R"}), beat

    state = TrainState(run_id="R", name="anime", method="lora", total_steps=4)
    state.step = 1
    p, _ = progress()
    p.update(state)  # nothing asked: it goes on, and records the step with a heartbeat
    assert p.reason is None and reg.get(Job, job.id).result == {"run_id": "R", "step": 1, "total_steps": 4}

    Q.cancel(reg, job.id)
    p, _ = progress()
    with pytest.raises(KeyboardInterrupt):
        p.update(state)  # the request is seen by its own stamp
    assert p.reason == "cancel"

    worker.stop.set()
    p, beat = progress()
    state.step = 4
    p.update(state)  # the last step: the adapter is saved next, whatever was asked
    state.step = 3
    with pytest.raises(KeyboardInterrupt):
        p.update(state)
    assert p.reason == "cancel"  # cancel wins over stop: the job ends, it is not put back

    Q.recover_stale(reg, stale_after_s=0, now=2e10)  # as if this worker had hung: the job is no longer its
    p, beat = progress()
    with pytest.raises(KeyboardInterrupt):
        p.update(state)
    assert p.reason == "lost" and beat.lost.is_set()


def test_train_queue_bad_input_is_one_line_and_queues_nothing(anime, styler_home):
    r = run_cli("train", "nosuch", "--base", "tiny", "--queue")
    assert (r.exit_code, r.stderr) == (1, "error: no dataset named 'nosuch'; see `styler data ls`\n")  # as without --queue
    for args, message in (
        (("train", anime, "--base", "tiny", "--queue", "--processes", "2"),
         "--queue with --processes 2: a worker trains in one process on its device"),
        (("train", anime, "--base", "tiny", "--queue", "--rank", "0"), "--rank must be > 0"),
        (("train", "--resume", "01ABC", "--queue"), "--queue starts a new run"),
        (("train", anime, "--base", "tiny", "--queue", "--dry-run"), "--queue and --dry-run: give one"),
        (("worker", "--once", "--device", "cuda:7"), "--device cuda:7: "),
    ):
        r = run_cli(*args)
        assert r.exit_code == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, r.stderr)
    reg = Registry()
    assert (reg.count(Job), reg.count(Run)) == (0, 0)


def test_a_train_job_without_a_usable_config_fails_with_one_line(styler_home):
    reg = Registry()
    bad = Q.enqueue(reg, "train", {"config": {"dataset": "anime", "ranks": 4}})
    empty = Q.enqueue(reg, "train", {})
    run_worker(once=True, log=lambda m: None)
    run_worker(once=True, log=lambda m: None)
    assert reg.get(Job, bad.id).error == "train job: unknown option(s) ranks; the keys are the `styler train` options"
    assert reg.get(Job, empty.id).error.startswith("train job: the payload needs a config with a dataset")
    assert reg.count(Run) == 0
