"""`styler train --resume RUN` through styler's own entry point (main): a run that failed before
its first checkpoint starts again from step 0, a finished one is refused, and --steps extends a
run, its stored config (record and config.toml) following so the config reruns it."""

import json
import tomllib

import pytest

from registry import Adapter, Registry, Run
from tests.helpers import tree

pytestmark = pytest.mark.slow  # trains on the tiny base

FAST = ["--base", "tiny", "--resolution", "32", "--lr", "1e-3"]


def _styler(capsys, *args) -> tuple[int, str, str]:
    from styler.cli.main import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _stop_at(monkeypatch, step: int, exc: BaseException) -> None:
    """Make the training loop raise `exc` when it computes step `step` + 1."""
    from styler.train import trainer as tr

    real = tr.Trainer.step_loss

    def step_loss(self, s, micro):
        if s == step:
            raise exc
        return real(self, s, micro)

    monkeypatch.setattr(tr.Trainer, "step_loss", step_loss)


def _steps(home, run_id) -> list[int]:
    rows = (home / "runs" / run_id / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in rows]


def test_a_run_that_failed_before_its_first_checkpoint_restarts_from_step_0(calli, styler_home, monkeypatch, capsys):
    with monkeypatch.context() as m:
        _stop_at(m, 2, RuntimeError("CUDA out of memory (simulated)"))
        rc, _, err = _styler(capsys, "train", calli, *FAST, "--steps", "4")
    assert rc == 1 and "out of memory" in err, err
    run = Registry().all(Run)[0]
    assert run.status == "failed" and _steps(styler_home, run.id) == [1, 2]
    assert not (styler_home / "runs" / run.id / "checkpoints").exists()

    rc, out, err = _styler(capsys, "train", "--resume", run.id)
    assert rc == 0, err
    done = Registry().get(Run, run.id)
    assert (done.status, done.step, done.total_steps, done.error) == ("completed", 4, 4, "")
    assert Registry().get(Adapter, done.adapter_id).run_id == run.id
    assert _steps(styler_home, run.id) == [1, 2, 3, 4]  # the failed attempt's rows are gone

    # a run that succeeded is still refused, in one line, and left as it was
    before = (done.to_dict(), tree(styler_home / "runs"))
    rc, out, err = _styler(capsys, "train", "--resume", run.id)
    assert rc == 2 and out == ""
    assert err.strip() == f"error: run {run.id} already completed; start a new run instead"
    assert (Registry().get(Run, run.id).to_dict(), tree(styler_home / "runs")) == before


def test_resume_with_more_steps_stores_them_and_the_config_reruns_the_run(calli, styler_home, monkeypatch, capsys):
    with monkeypatch.context() as m:
        _stop_at(m, 3, KeyboardInterrupt())
        rc, _, err = _styler(capsys, "train", calli, *FAST, "--steps", "4")
    assert rc == 130 and "checkpoint saved at step 3" in err, err
    run = Registry().all(Run)[0]
    rdir = styler_home / "runs" / run.id

    # fewer steps than the checkpoint has done: one line, exit 2, nothing written
    before = (run.to_dict(), (rdir / "config.toml").read_text(), tree(styler_home))
    rc, out, err = _styler(capsys, "train", "--resume", run.id, "--steps", "2")
    assert rc == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("error: --steps 2 is below step 3") and "--steps 3 or more" in err, err
    assert (Registry().get(Run, run.id).to_dict(), (rdir / "config.toml").read_text(), tree(styler_home)) == before

    rc, _, err = _styler(capsys, "train", "--resume", run.id, "--steps", "6")
    assert rc == 0, err
    done = Registry().get(Run, run.id)
    assert (done.status, done.step, done.total_steps) == ("completed", 6, 6)
    assert done.config["steps"] == 6 and tomllib.loads((rdir / "config.toml").read_text())["steps"] == 6
    assert Registry().get(Adapter, done.adapter_id).metadata["steps"] == 6
    assert _steps(styler_home, run.id) == [1, 2, 3, 4, 5, 6]

    # the stored config reruns it: same steps, same loss curve as the interrupted-then-extended run
    rc, _, err = _styler(capsys, "train", "--config", rdir / "config.toml", "--name", "again")
    assert rc == 0, err
    again = Registry().find(Run, adapter_id=Registry().resolve(Adapter, "again").id)[0]
    assert {**again.config, "name": ""} == {**done.config, "name": ""}

    def losses(run_id):
        rows = (styler_home / "runs" / run_id / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in rows]

    assert losses(again.id) == pytest.approx(losses(run.id), rel=1e-4)
