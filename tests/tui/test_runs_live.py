"""The Runs tab follows a metrics.jsonl that another process appends to."""

from __future__ import annotations

import asyncio

import pytest

from styler.tui.widgets import current_key, move_to_key

from .helpers import RUN_LIVE, make_app, metrics_row, settle


def live_text(pane) -> str:
    return pane.query_one("#live").content.plain


@pytest.mark.slow
def test_runs_tab_follows_appended_metrics(fixed_home):
    metrics = fixed_home / "runs" / RUN_LIVE / "metrics.jsonl"

    async def go():
        app = make_app(fixed_home)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("3")
            await settle(pilot)
            pane = app.pane("runs")
            move_to_key(pane.table, RUN_LIVE)
            await settle(pilot)
            assert "step     2/10  (20%)" in live_text(pane)
            spark = pane.query_one("#loss-spark")
            assert list(spark.data) == [1.1, 0.9]

            with open(metrics, "a") as fh:  # a training in another terminal writes two steps …
                fh.write(metrics_row(3, 0.8) + metrics_row(4, 0.7, val_loss=0.95))
                fh.write(metrics_row(5, 0.6)[:20])  # … and is half-way through a third line
            await pilot.pause(0.7)  # the tail timer runs every 0.5 s
            await settle(pilot)
            text = live_text(pane)
            assert "step     4/10  (40%)" in text
            assert "val 0.95" in text
            assert "2.00 it/s" in text  # step_s 0.5
            assert list(spark.data) == [1.1, 0.9, 0.8, 0.7]

            with open(metrics, "a") as fh:
                fh.write(metrics_row(5, 0.6)[20:] + metrics_row(6, 0.5, memory={"cuda_peak": 3 * 2**30}))
            await pilot.pause(0.7)
            await settle(pilot)
            text = live_text(pane)
            assert "step     6/10  (60%)" in text
            assert "memory   cuda_peak 3.00 GiB" in text
            assert pane.tail.offset == metrics.stat().st_size  # read incrementally to the end
            assert list(spark.data)[-2:] == [0.6, 0.5]

    asyncio.run(go())


def test_runs_tab_stores_interrupted_for_a_run_whose_process_is_gone(styler_home):
    import json
    import socket
    import subprocess
    import sys

    from registry import Registry, Run

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    run = Registry().insert(Run(status="running", pid=p.pid, host=socket.gethostname()))

    async def go():
        app = make_app(styler_home)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("3")
            await settle(pilot)
            assert [r.status for r in app.pane("runs").records] == ["interrupted"]

    asyncio.run(go())
    docs = json.loads((styler_home / "registry" / "runs.json").read_text("utf-8"))["runs"].values()
    assert [(d["id"], d["status"]) for d in docs] == [(run.id, "interrupted")]  # stored, not only shown


@pytest.mark.slow
def test_runs_table_names_the_adapter_keeps_step_and_loss_and_says_how_to_resume(fixed_home):
    from .helpers import RUN_ANIME, RUN_STOPPED, cell_texts, stable_screen

    async def go():
        app = make_app(fixed_home)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("3")
            await settle(pilot)
            pane = app.pane("runs")
            assert [c.label.plain for c in pane.table.ordered_columns][:5] == ["run", "status", "step", "loss", "adapter"]
            lines = (await stable_screen(pilot)).splitlines()
            rows = {line.lstrip("█▊ ")[:8]: line for line in lines}
            anime = rows[RUN_ANIME[-8:]]
            assert "5/5" in anime and "0.25" in anime and "ani" in anime  # step, loss, the adapter's name
            stopped = rows[RUN_STOPPED[-8:]]
            assert "4/10" in stopped and "0.6" in stopped
            assert current_key(pane.table) == RUN_STOPPED  # newest first
            live = pane.query_one("#live").content.plain
            assert f"resume   styler train --resume {RUN_STOPPED}" in live
            assert f"resume: styler train --resume {RUN_STOPPED}" in pane.query_one("ProvenanceView").text
            move_to_key(pane.table, RUN_ANIME)
            await settle(pilot)
            assert "resume" not in pane.query_one("#live").content.plain  # a completed run has nothing to resume
            await pilot.resize_terminal(120, 40)
            await settle(pilot)
            assert {r[0]: r for r in cell_texts(pane.table)}[RUN_ANIME[-8:]][4] == "anime@1"  # whole when it fits

    asyncio.run(go())


def test_a_runs_latest_validation_samples_show_in_its_detail(fixed_home):
    from .helpers import RUN_ANIME, RUN_STOPPED

    (fixed_home / "runs" / RUN_ANIME / "samples" / "sheet.png").unlink()  # a run from before sheets

    async def go():
        app = make_app(fixed_home)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("3")
            await settle(pilot)
            pane = app.pane("runs")
            move_to_key(pane.table, RUN_ANIME)  # its validation image was rendered at step 5
            await settle(pilot)
            samples = pane.query_one("#samples")
            assert samples.display and samples.image is not None and samples.image.size == (16, 16)
            assert pane.query_one("#samples-title").content.plain == "validation samples at step 5"
            move_to_key(pane.table, RUN_STOPPED)  # none
            await settle(pilot)
            assert not pane.query_one("#samples").display and pane.query_one("#samples-title").content.plain == ""

    asyncio.run(go())


def test_o_opens_a_runs_sample_sheet_and_says_when_there_is_none(fixed_home):
    from .helpers import RUN_ANIME, RUN_STOPPED

    async def go():
        app = make_app(fixed_home)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("3")
            await settle(pilot)
            pane = app.pane("runs")
            move_to_key(pane.table, RUN_ANIME)
            await settle(pilot)
            assert pane.query_one("#samples-title").content.plain == "sheet: 2 prompts × 3 steps"
            assert f"sheet: runs/{RUN_ANIME}/samples/sheet.png" in pane.query_one("ProvenanceView").text
            await pilot.press("o")
            await settle(pilot)
            assert type(app.screen).__name__ == "SheetScreen"
            path = fixed_home.resolve() / "runs" / RUN_ANIME / "samples" / "sheet.png"
            assert str(path) in app.screen.query_one("#sheet-path").content.plain
            await pilot.press("o")  # o closes it again
            await settle(pilot)
            assert app.screen is app.screen_stack[0]
            move_to_key(pane.table, RUN_STOPPED)
            await settle(pilot)
            await pilot.press("o")
            await settle(pilot)
            assert app.screen is app.screen_stack[0]
            assert any("has no sample sheet" in n.message for n in app._notifications)

    asyncio.run(go())
