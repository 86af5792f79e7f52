"""The caption editor (`e` on the Datasets tab), driven with Pilot: edit one caption, replace text
in all, remove and add a leading tag, save: a new version holds exactly those captions and the
version opened is unchanged; Esc with unsaved changes asks once, then drops them."""

from __future__ import annotations

import asyncio
import json

import pytest

from registry import Dataset, Registry

from .helpers import ANIME_CAPTIONS, DS_ANIME, make_app, settle

pytestmark = pytest.mark.slow


async def type_text(pilot, text: str) -> None:
    await pilot.press(*("space" if c == " " else c for c in text))


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _captions(home, d: Dataset) -> list[str]:
    return [json.loads(line)["text"] for line in (home / d.path / "captions.jsonl").read_text("utf-8").splitlines()]


def test_edit_replace_tags_and_save_as_a_new_version(fixed_home):
    from styler.tui.captions import CaptionEditor
    from styler.tui.widgets import ProvenanceView, current_key

    before = _files(fixed_home / "datasets" / "anime" / "1")

    async def drive():
        app = make_app(fixed_home)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            assert app.pane("datasets").table.cursor_row == 0  # anime@1
            await pilot.press("e")
            await settle(pilot)
            assert isinstance(app.screen, CaptionEditor)
            editor = app.screen
            assert editor.draft.texts == list(ANIME_CAPTIONS)

            await pilot.press("enter")  # edit the first caption: clear it, type a new one
            assert editor.input.value == ANIME_CAPTIONS[0]
            await pilot.press("ctrl+u")
            await type_text(pilot, "anm, a fox")
            await pilot.press("enter")

            await pilot.press("s")  # replace in all
            await type_text(pilot, "pixel art")
            await pilot.press("enter")
            await type_text(pilot, "px")
            await pilot.press("enter")

            await pilot.press("x")  # remove the leading tag: offered from the highlighted caption
            assert editor.input.value == "anm"
            await pilot.press("enter", "p")  # and add another
            await type_text(pilot, "zz")
            await pilot.press("enter")
            assert editor.draft.changed == [0, 1, 2, 3]

            await pilot.press("down", "u")  # put the second caption back as it was
            assert editor.draft.texts[1] == ANIME_CAPTIONS[1]

            await pilot.press("ctrl+s")
            await settle(pilot)
            await settle(pilot)
            assert not isinstance(app.screen, CaptionEditor)
            await settle(pilot)
            detail = app.pane("datasets").query_one(ProvenanceView).text
            assert "made from" in detail and "anime@1" in detail  # a link back to the version it came from
            return current_key(app.pane("datasets").table)

    highlighted = asyncio.run(drive())
    reg = Registry(fixed_home)
    new = reg.resolve(Dataset, "anime@2")
    assert _captions(fixed_home, new) == ["zz, a fox", ANIME_CAPTIONS[1], "zz, px, a blue monster", "zz, a pink tree"]
    assert new.options["derived_from"]["id"] == DS_ANIME and new.caption_from == "edited"
    assert new.trigger == ""  # not every caption has anm any more
    assert _files(fixed_home / "datasets" / "anime" / "1") == before
    assert highlighted == new.id  # the Datasets tab shows the new version


def test_escape_with_unsaved_changes_asks_once_and_writes_nothing(fixed_home):
    """At 80x24; and a version whose files are gone says so instead of opening."""
    from styler.tui.captions import CaptionEditor

    async def drive():
        app = make_app(fixed_home)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await pilot.press("down", "e")  # calligraphy/ink@2 has no files: one error, no editor
            await settle(pilot)
            assert not isinstance(app.screen, CaptionEditor)
            assert any("styler data verify calligraphy/ink@2" in str(n.message) for n in app._notifications)
            await pilot.press("up", "e")
            await settle(pilot)
            await pilot.press("p")
            await type_text(pilot, "zz")
            await pilot.press("enter", "escape")
            await settle(pilot)
            assert isinstance(app.screen, CaptionEditor)  # warned, still open
            assert any("unsaved" in str(n.message) for n in app._notifications)
            await pilot.press("escape")
            await settle(pilot)
            assert not isinstance(app.screen, CaptionEditor)

    asyncio.run(drive())
    assert [d.label for d in Registry(fixed_home).versions(Dataset, "anime")] == ["anime@1"]
