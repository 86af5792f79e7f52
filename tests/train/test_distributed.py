"""Data-parallel training: `styler train` under torchrun (gloo on the CPU) equals `--processes 2`;
a rank that dies ends a --processes run with one line instead of a hang; rank 0's progress is
shown by the parent; the launcher's environment is read and checked."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open

from registry import Adapter, BlobStore, Registry, Run
from styler.train.parallel import Failure, failure_message, launcher_env, root_cause
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline

FAST = ["--base", "tiny", "--resolution", "32"]


def _weights(home, name):
    with safe_open(str(BlobStore(home).path(Registry().resolve(Adapter, name).blob)), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _losses(home, name):
    run = Registry().get(Run, Registry().resolve(Adapter, name).run_id)
    return [json.loads(x) for x in (home / "runs" / run.id / "metrics.jsonl").read_text().splitlines()]


def _relative_gap(a: dict, b: dict) -> float:
    """|a − b| over |b| on the LoRA B matrices (which start at zero, so |b| is the whole update)."""
    num = sum(float(((a[k] - b[k]) ** 2).sum()) for k in b if "lora_B" in k) ** 0.5
    return num / sum(float((b[k] ** 2).sum()) for k in b if "lora_B" in k) ** 0.5


def test_one_batch_accumulation_processes_and_torchrun_agree(calli, styler_home):
    """The same global batch four ways. Adam turns round-off in near-zero gradients into small
    weight differences, so weights are compared relative to the update; losses match closely.
    torchrun and --processes 2 run the same gloo arithmetic: they agree to round-off."""
    ARGS = [*FAST, "--steps", "3", "--lr", "1e-3", "--validate-every", "2"]
    assert run_cli("train", calli, *ARGS, "--batch", "2", "--name", "one").exit_code == 0
    assert run_cli("train", calli, *ARGS, "--batch", "1", "--accum", "2", "--name", "acc").exit_code == 0
    r = run_cli("train", calli, *ARGS, "--batch", "1", "--processes", "2", "--name", "two")
    assert r.exit_code == 0, r.stderr
    assert "completed step 3/3" in r.stderr and "val" in r.stderr  # the parent shows rank 0's progress
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "styler", "train", calli, *ARGS, "--batch", "1", "--name", "launched"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**env, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("trained launched@1") == 1  # rank 1 printed nothing
    assert "completed step 3/3" in r.stderr

    names = ("one", "acc", "two", "launched")
    w = {n: _weights(styler_home, n) for n in names}
    assert w["one"].keys() == w["acc"].keys() == w["two"].keys() == w["launched"].keys()
    assert _relative_gap(w["two"], w["one"]) < 0.03
    assert _relative_gap(w["acc"], w["one"]) < 0.03
    for k in w["two"]:
        torch.testing.assert_close(w["launched"][k], w["two"][k], rtol=1e-5, atol=1e-7)
    rows = {n: _losses(styler_home, n) for n in names}
    for n in ("acc", "two", "launched"):
        assert [x["loss"] for x in rows[n]] == pytest.approx([x["loss"] for x in rows["one"]], rel=1e-4), n
    assert [("val_loss" in x) for x in rows["launched"]] == [False, True, True]  # rank 0 validated alone
    runs = Registry().all(Run)
    assert len(runs) == 4 and {x.status for x in runs} == {"completed"}  # no process wrote a run of its own
    assert {x.config["processes"] for x in runs if x.config["name"] in ("two", "launched")} == {2}
    assert sorted(p.name for p in (styler_home / "runs").iterdir()) == sorted(x.id for x in runs)


def test_a_rank_that_dies_ends_the_run_with_one_line(calli, styler_home, monkeypatch):
    monkeypatch.setenv("STYLER_TEST_FAULT", "1:1:exit")  # rank 1 exits (code 3, no report) as step 2 starts
    t0 = time.monotonic()
    r = run_cli("train", calli, *FAST, "--steps", "4", "--processes", "2")
    took = time.monotonic() - t0
    assert r.exit_code == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == "error: rank 1 of 2 exited with code 3 before finishing; the other process(es) were stopped"
    assert took < 90  # start-up included; without the supervisor this never returns
    run = Registry().all(Run)[0]
    assert run.status == "failed" and "rank 1 of 2 exited with code 3" in run.error and run.step == 1
    assert Registry().all(Adapter) == []


def test_root_cause_prefers_a_process_own_error_then_a_crash():
    peer = Failure(0, "DistBackendError: Connection closed by peer", 1, peer=True)
    crash = Failure(1, "", 3, crashed=True)
    own = Failure(1, "RuntimeError: boom", 1)
    nan0, nan1 = Failure(0, "the loss became NaN/inf at step 5", 1), Failure(1, "the loss became NaN", 1)
    assert root_cause([peer, crash]) is crash
    assert root_cause([peer, own]) is own
    assert root_cause([nan1, nan0, crash]) is nan0
    assert root_cause([peer]) is peer
    assert failure_message(nan0, 2) == nan0.message  # rank 0's own message, as a single process says it
    assert failure_message(own, 2) == "rank 1 of 2 failed: RuntimeError: boom; the other process(es) were stopped"
    assert failure_message(Failure(1, "", -9, crashed=True), 4).startswith("rank 1 of 4 was killed by SIGKILL")


def test_launcher_environment():
    assert launcher_env({}) is None
    assert launcher_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    assert launcher_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == (3, 4)
    with pytest.raises(Exception, match="whole numbers"):
        launcher_env({"WORLD_SIZE": "two", "RANK": "0"})
    with pytest.raises(Exception, match="RANK=4 is not in 0…3"):
        launcher_env({"WORLD_SIZE": "4", "RANK": "4"})


def test_processes_that_disagree_with_the_launcher_is_a_usage_error(calli, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    r = run_cli("train", calli, *FAST, "--steps", "1", "--processes", "3")
    assert r.exit_code == 2 and "--processes 3 does not match the launcher's WORLD_SIZE=2" in r.stderr
    assert "\n" not in r.stderr.strip() and Registry().all(Run) == []
    monkeypatch.setenv("RANK", "1")  # a non-zero rank's dry run prints nothing (rank 0 prints the plan)
    r = run_cli("train", calli, *FAST, "--steps", "1", "--dry-run")
    assert r.exit_code == 0 and r.stdout == ""
