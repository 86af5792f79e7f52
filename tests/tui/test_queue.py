"""The Queue tab: a mix generation queued through the form, run by a worker, seen to finish."""

from __future__ import annotations

import asyncio

import pytest
from registry import Registry

from styler.tui.queue_ops import list_jobs
from styler.tui.widgets import current_key

from .helpers import JOB_DONE, JOB_FAILED, cell_texts, make_app, settle


async def _type(pilot, selector: str, text: str) -> None:
    widget = pilot.app.query_one(selector)
    widget.focus()
    widget.value = ""
    await pilot.press(*text)


@pytest.mark.slow
def test_queue_a_mix_through_the_form_and_run_it(styled):
    async def go():
        app = make_app(styled)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("6")
            await settle(pilot)
            pane = app.pane("queue")
            selection = pane.query_one("#mix-adapters")
            assert [str(selection.get_option_at_index(i).prompt) for i in range(selection.option_count)] == \
                ["anime@1", "watercolor@1", "ink@1"]
            selection.focus()
            await pilot.press("down", "space", "down", "space")  # anime and watercolor
            await settle(pilot)
            assert selection.selected == ["anime@1", "watercolor@1"]
            await _type(pilot, "#weights Input.weight", "0.25")  # the first weight row: anime
            pane.weight_input("watercolor@1").value = "0.75"
            await _type(pilot, "#mix-prompt", "a cat [bold]x")
            await _type(pilot, "#mix-n", "1")
            await _type(pilot, "#mix-seed", "11")
            await _type(pilot, "#mix-steps", "2")
            await _type(pilot, "#mix-base", "tiny")
            await pilot.click("#queue-generate")
            await settle(pilot)

            jobs = list_jobs(Registry(styled))
            assert len(jobs) == 1
            job = jobs[0]
            assert (job.kind, job.status) == ("generate", "queued")
            assert job.payload == {"prompt": "a cat [bold]x", "negative": "",
                                   "adapters": [["anime@1", 0.25, None], ["watercolor@1", 0.75, None]],
                                   "n": 1, "seed": 11, "steps": 2, "guidance": 7.5, "scheduler": "ddim", "base": "tiny"}
            rows = {r[0]: r for r in cell_texts(pane.jobs_table)}
            assert rows[job.id[-8:]][1:4] == ["generate", "queued", "0"]

            try:
                from styler.worker import run_worker
            except ImportError:
                pytest.skip("styler.worker.run_worker is not available: the job stays queued")
            await asyncio.to_thread(run_worker, once=True, registry=Registry(styled), log=lambda m: None)
            await pilot.press("r")
            await settle(pilot)
            assert pane.job_status(job.id) == "done"
            rows = {r[0]: r for r in cell_texts(pane.jobs_table)}
            assert rows[job.id[-8:]][2] == "done"

    asyncio.run(go())


@pytest.mark.slow
def test_form_errors_are_notifications_not_jobs(fixed_home):
    async def go():
        app = make_app(fixed_home)
        seen = []
        app.notify = lambda message, **kw: seen.append((message, kw.get("severity")))
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("6")
            await settle(pilot)
            await pilot.click("#queue-generate")  # no prompt
            await _type(pilot, "#mix-prompt", "a fox")
            await _type(pilot, "#mix-steps", "0")
            await pilot.click("#queue-generate")
            await pilot.click("#queue-eval")  # no subject
            await settle(pilot)
        return seen

    seen = asyncio.run(go())
    assert [s for _, s in seen] == ["error"] * 3
    assert "prompt is empty" in seen[0][0] and "steps must be at least 1" in seen[1][0] and "subject" in seen[2][0]
    assert len(list_jobs(Registry(fixed_home))) == 2  # the fixture's two jobs only


@pytest.mark.slow
def test_cancel_retry_keys_and_eval_form(fixed_home):
    async def go():
        app = make_app(fixed_home)
        seen = []
        app.notify = lambda message, **kw: seen.append((message, kw.get("severity")))
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("6")
            await settle(pilot)
            pane = app.pane("queue")
            await _type(pilot, "#eval-subject", "anime@1")
            await _type(pilot, "#eval-n", "2")
            await _type(pilot, "#eval-clip", "tiny")
            await pilot.click("#queue-eval")
            await settle(pilot)
            new = next(j for j in pane.jobs if j.kind == "eval" and j.status == "queued")
            assert new.payload == {"subject": "anime@1", "n": 2, "clip": "tiny", "metrics": None, "against": None}
            pane.jobs_table.focus()
            assert current_key(pane.jobs_table) == new.id  # newest first
            await pilot.press("c")
            await settle(pilot)
            assert pane.job_status(new.id) == "cancelled"
            await pilot.press("t")
            await settle(pilot)
            assert pane.job_status(new.id) == "queued"
            await pilot.press("down", "down", "c")  # the done job cannot be cancelled: an error, no crash
            await settle(pilot)
            assert current_key(pane.jobs_table) != JOB_FAILED
        return seen

    seen = asyncio.run(go())
    errors = [m for m, s in seen if s == "error"]
    assert len(errors) == 1 and "already done" in errors[0]


@pytest.mark.slow
def test_w_starts_a_worker_that_stops_with_the_app(fixed_home):
    import sys

    command = [sys.executable, "-c", "import time; print('worker up', flush=True); time.sleep(60)"]

    async def go():
        app = make_app(fixed_home, worker_command=command)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("6")
            await settle(pilot)
            await pilot.press("w")
            await pilot.pause(0.3)
            bg = app.background
            assert bg.running() and bg.pid
            assert bg.log_path.parent == fixed_home / "logs"
            assert f"worker pid {bg.pid} running" in pane_status(app)
            await pilot.press("w")  # a second press does not start a second worker
            assert app.background.pid == bg.pid
        return bg

    bg = asyncio.run(go())
    assert not bg.running()  # stopped when the app exited
    assert "worker up" in bg.log_path.read_text()


def pane_status(app) -> str:
    return app.pane("queue").query_one("#worker-status").content.plain


@pytest.mark.slow
def test_the_mix_form_reads_without_colour_and_fits_80x24(fixed_home):
    """Boxes read [x]/[ ]; inputs keep their labels once filled; the jobs show their prompt or
    subject; with two weights open the Queue button is still on screen and works."""
    from .helpers import MARKUP_PROMPT, screen_text

    async def go():
        app = make_app(fixed_home)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("6")
            await settle(pilot)
            pane = app.pane("queue")
            screen = screen_text(app)
            assert "[ ] anime@1" in screen and "[ ] calligraphy/ink@1" in screen
            selection = pane.query_one("#mix-adapters")
            selection.focus()
            await pilot.press("down", "space", "down", "space")
            await settle(pilot)
            assert selection.selected == ["anime@1", "calligraphy/ink@1"]
            screen = screen_text(app)
            assert "[x] anime@1" in screen and "[x] calligraphy/ink@1" in screen

            for selector, value in (("#mix-prompt", "a fox"), ("#mix-n", "2"), ("#mix-seed", "11"), ("#mix-steps", "3")):
                await _type(pilot, selector, value)
            pane.jobs_table.focus()
            await settle(pilot)
            borders = [line for line in screen_text(app).splitlines() if "▔" in line]
            for label in ("prompt", "n", "seed", "steps"):
                assert any(f"▔ {label} ▔" in line for line in borders), label

            rows = {r[0]: r for r in cell_texts(pane.jobs_table)}
            assert MARKUP_PROMPT.startswith(rows[JOB_FAILED[-8:]][4].rstrip("…"))  # the prompt, literally
            assert "anime@1".startswith(rows[JOB_DONE[-8:]][4].rstrip("…"))  # the eval job's subject

            button = pane.query_one("#queue-generate")
            assert button.region.bottom <= app.size.height - 1 and button.region.height >= 1  # above the footer
            assert all(w in screen_text(app).splitlines()[-2] for w in ("Queue", "mix", "eval", "train"))
            await pilot.click("#queue-generate")
            await settle(pilot)
            queued = [j for j in list_jobs(Registry(fixed_home)) if j.status == "queued"]
            assert [j.payload["prompt"] for j in queued] == ["a fox"]

    asyncio.run(go())


@pytest.mark.slow
def test_q_asks_before_stopping_the_worker_w_started(fixed_home):
    import sys

    from styler.tui.keys import QuitScreen

    command = [sys.executable, "-c", "import time; time.sleep(60)"]

    async def go():
        app = make_app(fixed_home, worker_command=command)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("6")
            await settle(pilot)
            await pilot.press("w")
            await pilot.pause(0.2)
            bg = app.background
            await pilot.press("q")
            await settle(pilot)
            assert isinstance(app.screen, QuitScreen)
            assert f"(pid {bg.pid}) is still running" in app.screen.query_one("#quit-box").content.plain
            await pilot.press("escape")  # stay
            await settle(pilot)
            assert not isinstance(app.screen, QuitScreen) and bg.running() and app.is_running
            await pilot.press("q", "y")  # stop it and quit
            await settle(pilot)
        return app, bg

    app, bg = asyncio.run(go())
    assert app.return_code == 0 and not bg.running() and app.left_running == ""


@pytest.mark.slow
def test_q_can_leave_the_worker_running(fixed_home):
    import os
    import signal
    import sys

    command = [sys.executable, "-c", "import time; time.sleep(60)"]

    async def go():
        app = make_app(fixed_home, worker_command=command)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("6")
            await settle(pilot)
            await pilot.press("w")
            await pilot.pause(0.2)
            process = app.background.process
            await pilot.press("q", "l")
            await settle(pilot)
        return app, process

    app, process = asyncio.run(go())
    try:
        assert process.poll() is None  # still running after the app exited
        assert f"worker pid {process.pid} is still running" in app.left_running
        assert str(fixed_home / "logs") in app.left_running
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(5)


@pytest.mark.slow
def test_queue_a_training_run_through_the_form_and_follow_it_live_in_runs(tiny_home, monkeypatch):
    """At 80x24: the train form queues a job; a worker trains it and the Runs tab shows its steps as
    they come, then the adapter it made."""
    import threading

    from styler.data.library import synth_dataset
    from styler.train import trainer as tr
    from styler.worker import run_worker

    synth_dataset("anime", kind="pixel", n=4, size=32, seed=0)
    gate, at_step_3 = threading.Event(), threading.Event()
    real = tr.Trainer.step_loss

    def held_at_step_3(self, step, micro):  # the run stays live until the test has looked at it
        if step == 3:
            at_step_3.set()
            gate.wait(180)  # generous: under a loaded -n 2 run the checks below can take a while
        return real(self, step, micro)

    monkeypatch.setattr(tr.Trainer, "step_loss", held_at_step_3)

    async def wait_for(pilot, ready, timeout=180.0):  # returns as soon as ready; the worker loads torch first
        for _ in range(int(timeout / 0.2)):
            if ready():
                return
            await pilot.pause(0.2)
        raise AssertionError("timed out")

    async def go():
        app = make_app(tiny_home)
        seen = []
        app.notify = lambda message, **kw: seen.append((message, kw.get("severity")))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("6")
            await settle(pilot)
            pane = app.pane("queue")
            for selector, text in (("#train-dataset", "anime"), ("#train-steps", "5"), ("#train-rank", "2"),
                                   ("#train-lr", "fast"), ("#train-base", "tiny"), ("#train-resolution", "32")):
                await _type(pilot, selector, text)
            await pilot.click("#queue-train")  # on screen at 80x24
            await settle(pilot)
            assert seen == [("lr must be a number like 1e-4, not 'fast'", "error")] and not list_jobs(Registry(tiny_home))
            await _type(pilot, "#train-lr", "5e-2")
            await pilot.click("#queue-train")
            await settle(pilot)
            jobs = list_jobs(Registry(tiny_home))
            assert len(jobs) == 1 and jobs[0].kind == "train"
            config = jobs[0].payload["config"]
            assert (config["dataset"], config["steps"], config["rank"], config["lr"], config["base"],
                    config["resolution"]) == ("anime@1", 5, 2, 5e-2, "tiny", 32)
            assert current_key(pane.jobs_table) == jobs[0].id

            worker = asyncio.ensure_future(asyncio.to_thread(run_worker, once=True, registry=Registry(tiny_home),
                                                             device="cpu", log=lambda m: None))
            await pilot.press("3")
            runs = app.pane("runs")
            await wait_for(pilot, at_step_3.is_set)
            await wait_for(pilot, lambda: runs.run is not None and "step     3/5" in runs.query_one("#live").content.plain)
            assert runs.run.status == "running"
            assert f"job: {jobs[0].id} (running, on " in runs.query_one("ProvenanceView").text
            gate.set()
            await worker
            await pilot.press("r")  # re-read now rather than at the next 2 s refresh
            await wait_for(pilot, lambda: runs.run is not None and runs.run.status == "completed")
            assert "step     5/5" in runs.query_one("#live").content.plain
            assert runs.adapter_labels[runs.run.adapter_id] == "anime@1"
            assert [r[4][:3] for r in cell_texts(runs.table)] == ["ani"]  # the adapter column, cut at 80 columns
        return seen

    seen = asyncio.run(go())
    assert [s for _, s in seen].count("error") == 1
