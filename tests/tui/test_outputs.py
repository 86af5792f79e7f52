"""The Outputs tab: markup in user text shows literally; the preview; `g` queues an exact regen."""

from __future__ import annotations

import asyncio

import pytest

from registry import Registry

from styler.tui.queue_ops import list_jobs
from styler.tui.widgets import current_key

from .helpers import MARKUP_PROMPT, OUT_BASE, OUT_MIX, OUT_VAL, RUN_ANIME, cell_texts, make_app, settle, stable_screen


@pytest.mark.slow
def test_markup_in_prompts_shows_literally(fixed_home):
    async def go():
        app = make_app(fixed_home)
        async with app.run_test(size=(160, 40)) as pilot:  # wide enough for the whole prompt on one line
            await pilot.press("4")
            await settle(pilot)
            pane = app.pane("outputs")
            assert current_key(pane.table) == OUT_MIX  # newest first
            rows = cell_texts(pane.table)
            assert rows[0][2].startswith("[bold]x[/bold] [link=")
            assert rows[0][3].startswith("anime@1×0.5 + calligr")  # clipped to the column
            recipe = pane.query_one("#recipe").content.plain
            assert f"prompt   {MARKUP_PROMPT}" in recipe
            assert "negative [red]blurry[/red]" in recipe
            assert "anime@1  weight 0.5  te 0.5" in recipe and "calligraphy/ink@1  weight 0.75  te 0.25" in recipe
            screen = await stable_screen(pilot)
            assert MARKUP_PROMPT in screen  # drawn as typed, not as bold text and a link
            assert "[red]blurry[/red]" in screen

            # the provenance of the adapter lists the output with its literal prompt, too
            await pilot.press("2")
            await settle(pilot)
            assert MARKUP_PROMPT in app.pane("adapters").query_one("ProvenanceView").text
            assert MARKUP_PROMPT in await stable_screen(pilot)

            # and the failed job's error and payload in the Queue tab
            await pilot.press("6")
            await settle(pilot)
            assert "[red]boom[/red] adapter missing" in await stable_screen(pilot)

    asyncio.run(go())


@pytest.mark.slow
def test_preview_shows_the_image_or_says_it_is_missing(fixed_home):
    from registry import BlobStore, Output

    reg = Registry(fixed_home)
    blob = reg.get(Output, OUT_BASE).blob
    BlobStore(fixed_home).path(blob).unlink()

    async def go():
        app = make_app(fixed_home)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("4")
            await settle(pilot)
            pane = app.pane("outputs")
            image = pane.query_one("#preview-image")
            assert image.image is not None and image.image.size == (16, 16)
            await pilot.press("down")
            await settle(pilot)
            assert current_key(pane.table) == OUT_BASE
            assert image.image is None
            assert "is missing" in pane.query_one("#recipe").content.plain

    asyncio.run(go())


def test_g_queues_a_regen_with_the_exact_recipe(fixed_home):
    async def go():
        app = make_app(fixed_home)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("4")
            await settle(pilot)
            await pilot.press("g")
            await settle(pilot)

    asyncio.run(go())
    jobs = [j for j in list_jobs(Registry(fixed_home)) if j.status == "queued"]
    assert len(jobs) == 1
    job = jobs[0]
    assert job.kind == "generate"
    assert job.payload == {
        "prompt": MARKUP_PROMPT, "negative": "[red]blurry[/red]",
        "adapters": [["anime@1", 0.5, 0.5], ["calligraphy/ink@1", 0.75, 0.25]],
        "n": 1, "seed": 7, "steps": 2, "width": 16, "height": 16, "scheduler": "ddim", "base": "tiny", "guidance": 7.5,
    }


def test_regen_payload_is_accepted_by_the_worker(fixed_home):
    """The payload `g` queues parses into the worker's generate request unchanged."""
    from registry import Output

    from styler.generate.jobs import request_from_payload
    from styler.tui.queue_ops import regen_payload

    payload = regen_payload(Registry(fixed_home).get(Output, OUT_MIX))
    req = request_from_payload(payload, native=64)
    assert (req.prompt, req.seed, req.steps, req.width, req.height, req.guidance) == (MARKUP_PROMPT, 7, 2, 16, 16, 7.5)
    assert req.adapters == [("anime@1", 0.5, 0.5), ("calligraphy/ink@1", 0.75, 0.25)]
    assert req.extra == {"base": "tiny"}


def test_validation_images_name_their_run_and_step(fixed_home):
    """A validation output has no adapters but a run and a step: it says so, not `none (base)`."""
    from registry import Output

    from styler.tui.panes.outputs import recipe_text
    from styler.tui.provenance import output_source

    reg = Registry(fixed_home)
    val = reg.get(Output, OUT_VAL)
    assert output_source(val) == f"run {RUN_ANIME[-8:]} at step 5"
    recipe = recipe_text(val).plain
    assert f"made by  run {RUN_ANIME[-8:]} at step 5  (run {RUN_ANIME})" in recipe
    assert "none (base)" not in recipe and "adapters" not in recipe
    assert output_source(reg.get(Output, OUT_BASE)) == "base"
    assert "adapters none (base)" in recipe_text(reg.get(Output, OUT_BASE)).plain

    async def go():
        app = make_app(fixed_home)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("4")
            await settle(pilot)
            pane = app.pane("outputs")
            rows = {r[0]: r for r in cell_texts(pane.table)}
            assert rows[OUT_VAL[-8:]][3].startswith(f"run {RUN_ANIME[-8:]} at")  # cut to fit 120 columns
            pane.filter_input.value = RUN_ANIME  # the run id finds its samples
            await settle(pilot)
            assert [r[0] for r in cell_texts(pane.table)] == [OUT_VAL[-8:]]

    asyncio.run(go())


@pytest.mark.slow
def test_80x24_keeps_the_adapters_and_the_whole_seed(fixed_home):
    from .helpers import VAL_SEED

    async def go():
        app = make_app(fixed_home)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("4")
            await settle(pilot)
            lines = (await stable_screen(pilot)).splitlines()
            val = next(line for line in lines if OUT_VAL[-8:] in line)
            mix = next(line for line in lines if OUT_MIX[-8:] in line)
            assert f" {VAL_SEED} " in val + " "  # whole, on screen
            assert "run 0" in val  # the validation image's source, cut but there
            assert "anime@" in mix and " 7 " in mix + " "

    asyncio.run(go())
