"""A run whose process died without ending it (SIGKILL, a crash, a reboot) reads as `interrupted`
wherever runs are read, and `styler train --resume` restarts it from step 0 when it left no
checkpoint. A recorded pid that now belongs to another process (pid reuse) is not this run."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from registry import Adapter, Registry, Run
from tests.helpers import run_cli


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _status(run_id: str) -> str:
    return Registry().get(Run, run_id).status


def test_a_running_record_is_judged_by_its_process(styler_home):
    from registry.records import process_started

    me, here = os.getpid(), socket.gethostname()
    reg = Registry()
    live = reg.insert(Run(status="running", pid=me, host=here, pid_started=process_started(me)))
    reused = reg.insert(Run(status="running", pid=me, host=here, pid_started="linux:other-boot:1"))
    dead = reg.insert(Run(status="running", pid=_dead_pid(), host=here))
    old = reg.insert(Run(status="running", pid=_dead_pid()))  # recorded before host/start time were
    elsewhere = reg.insert(Run(status="running", pid=_dead_pid(), host=here + "-other-node"))
    failed = reg.insert(Run(status="failed", pid=_dead_pid(), host=here, error="boom"))
    assert [_status(r.id) for r in (live, reused, dead, old, elsewhere, failed)] == [
        "running", "interrupted", "interrupted", "interrupted", "running", "failed"]
    got = Registry().get(Run, dead.id)
    assert "ended without stopping the run" in got.error and f"--resume {dead.id}" in got.error
    assert [r.status for r in Registry().find(Run, status="interrupted")] == ["interrupted"] * 3
    # every reader sees it: the registry listing and show
    listed = {r["id"]: r["status"] for r in json.loads(run_cli("registry", "ls", "runs", "--json").stdout)}
    assert listed[dead.id] == "interrupted" and listed[live.id] == "running"
    shown = json.loads(run_cli("registry", "show", reused.id, "--json").stdout)
    assert shown["status"] == "interrupted"


def _stored(home) -> dict[str, dict]:
    """The runs table as written on disk, without Run.from_dict's reading."""
    docs = json.loads((home / "registry" / "runs.json").read_text("utf-8"))["runs"].values()
    return {d["id"]: d for d in docs}


def _main(capsys, *args) -> tuple[int, str, str]:
    from styler.cli.main import main

    capsys.readouterr()
    rc = main(list(args))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_listing_runs_stores_interrupted_for_a_run_whose_process_is_gone(styler_home, capsys):
    from registry.records import process_started

    me, here = os.getpid(), socket.gethostname()
    reg = Registry()
    dead = reg.insert(Run(status="running", pid=_dead_pid(), host=here))
    live = reg.insert(Run(status="running", pid=me, host=here, pid_started=process_started(me)))
    elsewhere = reg.insert(Run(status="running", pid=_dead_pid(), host=here + "-other-node"))
    failed = reg.insert(Run(status="failed", pid=_dead_pid(), host=here, error="boom"))
    assert _stored(styler_home)[dead.id]["status"] == "running"

    rc, out, err = _main(capsys, "registry", "ls", "runs", "--json")
    assert rc == 0, err
    listed = {r["id"]: r["status"] for r in json.loads(out)}
    stored = _stored(styler_home)
    assert {k: stored[k]["status"] for k in listed} == listed == {
        dead.id: "interrupted", live.id: "running", elsewhere.id: "running", failed.id: "failed"}
    assert "ended without stopping the run" in stored[dead.id]["error"] and stored[failed.id]["error"] == "boom"
    rc, out, err = _main(capsys, "registry", "verify")
    assert rc == 0 and out.strip() == "registry ok", err


def test_a_read_only_home_still_lists_a_gone_run_as_interrupted(styler_home, capsys, monkeypatch):
    from tests.registry.readonly import make_read_only

    dead = Registry().insert(Run(status="running", pid=_dead_pid(), host=socket.gethostname()))
    make_read_only(monkeypatch, styler_home)
    rc, out, err = _main(capsys, "registry", "ls", "runs", "--json")
    assert rc == 0 and err == "", err
    assert [(r["id"], r["status"]) for r in json.loads(out)] == [(dead.id, "interrupted")]
    assert _stored(styler_home)[dead.id]["status"] == "running"  # nothing could be written, nothing failed


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_run_killed_before_its_first_checkpoint_restarts_from_step_0(calli, styler_home, tmp_path):
    env = {**os.environ, "STYLER_HOME": str(styler_home)}
    cmd = [sys.executable, "-m", "styler", "train", calli, "--base", "tiny", "--resolution", "32", "--steps", "100000",
           "--lr", "1e-3"]
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90  # a generous bound against a hang, not a timing assertion
        run = None
        while time.monotonic() < deadline and proc.poll() is None:
            runs = Registry().all(Run)
            if runs and runs[0].step >= 2:
                run = runs[0]
                break
            time.sleep(0.2)
        assert run is not None, (tmp_path / "log").read_text()
        assert (run.status, run.pid, run.host) == ("running", proc.pid, socket.gethostname())
    finally:
        proc.kill()
        proc.wait()
    assert not (styler_home / "runs" / run.id / "checkpoints").exists()
    assert _status(run.id) == "interrupted"

    r = run_cli("train", "--resume", run.id, "--steps", "3")
    assert r.exit_code == 0, r.stderr
    done = Registry().get(Run, run.id)
    assert (done.status, done.step, done.total_steps) == ("completed", 3, 3)
    adapter = Registry().get(Adapter, done.adapter_id)
    assert adapter.run_id == run.id and adapter.metadata["steps"] == 3
    rows = [json.loads(x) for x in (styler_home / "runs" / run.id / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]  # the killed attempt's rows are gone


@pytest.mark.slow
def test_resume_refuses_a_live_run(calli, styler_home):
    from registry.records import process_started

    run = Registry().insert(Run(status="running", pid=os.getppid(), host=socket.gethostname(),
                                pid_started=process_started(os.getppid()), config={"dataset": calli, "base": "tiny"}))
    r = run_cli("train", "--resume", run.id)
    assert r.exit_code == 2 and "is still running" in r.stderr
