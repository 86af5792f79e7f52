"""Keys move between tabs; filters narrow tables; Enter follows provenance links."""

from __future__ import annotations

import asyncio

import pytest

from registry import Adapter, Dataset, Registry

from styler.tui.widgets import current_key

from .helpers import cell_texts, make_app, settle

TABS = ("datasets", "adapters", "runs", "outputs", "scores", "queue")


@pytest.mark.slow
def test_number_keys_switch_tabs_and_q_quits(fixed_home):
    async def go():
        app = make_app(fixed_home)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            for i, tab in enumerate(TABS, 1):
                await pilot.press(str(i))
                await settle(pilot)
                assert app.active_tab == tab
                assert app.focused is not None and app.focused.id is not None
            await pilot.press("1", "q")
            await pilot.pause()
        return app.return_code

    assert asyncio.run(go()) == 0


@pytest.mark.slow
def test_filter_and_provenance_on_the_styled_home(styled):
    reg = Registry(styled)
    ink = reg.resolve(Adapter, "ink")
    ink_data = reg.get(Dataset, ink.dataset_id)

    async def go():
        app = make_app(styled)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            datasets = app.pane("datasets")
            assert sorted(r[0] for r in cell_texts(datasets.table)) == ["anime", "ink", "watercolor"]
            await pilot.press("slash")
            assert app.focused is datasets.filter_input
            await pilot.press(*"water")
            await settle(pilot)
            assert [r[0] for r in cell_texts(datasets.table)] == ["watercolor"]
            await pilot.press("2")  # typed into the filter, not a tab switch
            await settle(pilot)
            assert datasets.filter_input.value == "water2" and app.active_tab == "datasets"
            await pilot.press("backspace", "escape")  # Escape: back to the table, where keys are commands
            assert app.focused is datasets.table

            await pilot.press("2")
            await settle(pilot)
            adapters = app.pane("adapters")
            assert len(cell_texts(adapters.table)) == 3
            await pilot.press("slash", *"lora")  # method matches all three
            await settle(pilot)
            assert len(cell_texts(adapters.table)) == 3
            await pilot.press(*["backspace"] * 4, "i", "n", "k", "enter")  # Enter in the filter: back to the table
            await settle(pilot)
            assert [r[0] for r in cell_texts(adapters.table)] == ["ink"]
            assert app.focused is adapters.table
            await pilot.press("enter")  # Enter on the adapter: into its provenance links
            await settle(pilot)
            view = adapters.query_one("ProvenanceView")
            text = view.text
            assert f"adapter {ink.label}" in text
            assert f"{ink_data.label} · {ink_data.n_images} images" in text  # its dataset version
            assert "completed · step 3/3" in text  # its run
            assert app.focused.id == "links"

            # the run link is highlighted; down to the dataset link (headers are skipped), Enter
            await pilot.press("down", "enter")
            await settle(pilot)
            assert app.active_tab == "datasets"
            assert datasets.filter_input.value == ""  # the filter that hid it was cleared
            assert current_key(datasets.table) == ink_data.id
            assert "adapters trained on it" in datasets.query_one("ProvenanceView").text

    asyncio.run(go())


@pytest.mark.slow
def test_navigation_to_outputs_and_scores(fixed_home):
    from .helpers import AD_ANIME, OUT_MIX

    async def go():
        app = make_app(fixed_home)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("2")
            await settle(pilot)
            adapters = app.pane("adapters")
            assert current_key(adapters.table) == AD_ANIME
            text = adapters.query_one("ProvenanceView").text
            assert "outputs — 1 made with it" in text and "scores" in text
            await pilot.press("enter", "down", "down", "enter")  # links: run, dataset, output
            await settle(pilot)
            assert app.active_tab == "outputs"
            assert current_key(app.pane("outputs").table) == OUT_MIX

            await pilot.press("2")
            await settle(pilot)
            await pilot.press("enter", *["down"] * 3, "enter")  # … then the first score
            await settle(pilot)
            assert app.active_tab == "scores"
            assert current_key(app.pane("scores").table) == "anime@1"

    asyncio.run(go())
