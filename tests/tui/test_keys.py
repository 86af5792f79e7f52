"""The footer lists the keys, `?` shows them all, Back returns from a followed link, focus is
visible and stays on the active tab's table."""

from __future__ import annotations

import asyncio

import pytest

from .helpers import RUN_ANIME, make_app, screen_text, settle, stable_screen

TABS = ("datasets", "adapters", "runs", "outputs", "scores", "queue")


def footer(app) -> str:
    return screen_text(app).splitlines()[-1]


@pytest.mark.slow
def test_footer_lists_enter_tab_esc_the_tab_keys_and_help(fixed_home):
    async def go():
        app = make_app(fixed_home)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await stable_screen(pilot)
            line = footer(app)
            for entry in ("⏎ links", "tab focus", "1-6 tabs", "/ filter", "r refresh", "? keys", "q quit"):
                assert entry in line, line
            assert "esc" not in line and "b back" not in line  # nothing to go back to yet
            await pilot.press("slash")
            await stable_screen(pilot)
            assert "esc table" in footer(app)  # typed keys (q, r, 1-6) are text here, and not listed
            await pilot.press("escape", "6")
            await stable_screen(pilot)
            assert "c cancel" in footer(app) and "? keys" in footer(app)

    asyncio.run(go())


@pytest.mark.slow
def test_question_mark_opens_the_key_help_and_escape_closes_it(fixed_home):
    from styler.tui.keys import KeysScreen

    async def go():
        app = make_app(fixed_home)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("3")
            await settle(pilot)
            table = app.pane("runs").table
            await pilot.press("question_mark")
            await settle(pilot)
            assert isinstance(app.screen, KeysScreen)
            help_text = app.screen.query_one("#keys-text").content.plain
            for line in ("b  Backspace", "Esc", "Enter", "cancel the highlighted job",
                         "queue the highlighted output's recipe again"):
                assert line in help_text
            await pilot.press("1")  # the dashboard's keys are not live under the help
            assert isinstance(app.screen, KeysScreen) and app.active_tab == "runs"
            await pilot.press("escape")
            await settle(pilot)
            assert not isinstance(app.screen, KeysScreen)
            assert app.focused is table

    asyncio.run(go())


@pytest.mark.slow
def test_back_returns_to_the_link_it_was_followed_from(fixed_home):
    async def go():
        app = make_app(fixed_home)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("2")
            await settle(pilot)
            links = app.pane("adapters").query_one("#links")
            await pilot.press("enter", "down")  # into the links; down to the dataset link
            highlighted = links.highlighted
            await pilot.press("enter")
            await settle(pilot)
            assert app.active_tab == "datasets"
            assert "b back" in footer(app)
            await pilot.press("enter", "down", "enter")  # the dataset's links: its run
            await settle(pilot)
            assert app.active_tab == "runs"

            await pilot.press("b")
            await settle(pilot)
            assert app.active_tab == "datasets" and app.focused is app.pane("datasets").query_one("#links")
            await pilot.press("backspace")
            await settle(pilot)
            assert app.active_tab == "adapters"
            assert app.focused is links and links.highlighted == highlighted  # the same link, as left
            await stable_screen(pilot)
            assert "b back" not in footer(app)
            await pilot.press("b")  # nothing left: stays
            await settle(pilot)
            assert app.active_tab == "adapters"

    asyncio.run(go())


@pytest.mark.slow
def test_the_active_tabs_table_keeps_focus(fixed_home):
    """After a tab switch, a refresh and closing the filter the arrows move the table; Tab never
    parks focus on the tab bar (where the arrows switched tabs instead)."""
    from textual.widgets import Tabs

    async def go():
        app = make_app(fixed_home)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            assert app.focused is app.pane("datasets").table  # from the first frame on
            for i, tab in enumerate(TABS, 1):
                await pilot.press(str(i))
                await settle(pilot)
                pane = app.pane(tab)
                assert app.focused is pane.main_widget()
                for _ in range(8):
                    await pilot.press("tab")
                    assert not isinstance(app.focused, Tabs)
                    assert pane in app.focused.ancestors
                await pilot.press("escape")  # out of a filter or form, where a digit is text
            await pilot.press("3")
            await settle(pilot)
            runs = app.pane("runs")
            app.set_focus(None)
            await pilot.press("r")
            await settle(pilot)
            assert app.focused is runs.table
            await pilot.press("slash", "escape")
            assert app.focused is runs.table
            await pilot.press("slash", *"anime", "enter")
            await settle(pilot)
            assert app.focused is runs.table
            await pilot.press("down")
            from styler.tui.widgets import current_key

            assert current_key(runs.table) == RUN_ANIME

    asyncio.run(go())


@pytest.mark.slow
def test_focus_is_visible_without_colour(fixed_home):
    async def go():
        app = make_app(fixed_home)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            pane = app.pane("datasets")
            assert pane.table.styles.border_left[0] == "thick"
            assert pane.filter_input.styles.border_left[0] == "tall"
            row = next(line for line in (await stable_screen(pilot)).splitlines() if "3/1" in line)  # the anime row
            assert row.startswith("█")  # the focused table's bar
            await pilot.press("slash")
            await settle(pilot)
            assert pane.table.styles.border_left[0] == "blank"
            assert pane.filter_input.styles.border_left[0] == "thick"
            row = next(line for line in (await stable_screen(pilot)).splitlines() if "3/1" in line)  # the anime row
            assert not row.startswith("█")

    asyncio.run(go())
