"""Failures in background reads become one error notification naming the problem; no crash."""

from __future__ import annotations

import asyncio

import pytest

from .helpers import make_app, settle, stable_screen


def _recording(app):
    seen = []
    original = app.notify

    def notify(message, **kw):
        seen.append((message, kw.get("severity"), kw.get("markup", True)))
        original(message, **kw)

    app.notify = notify
    return seen


@pytest.mark.slow
def test_a_corrupt_registry_file_is_a_notification_naming_it(fixed_home):
    bad = fixed_home / "registry" / "datasets.json"
    bad.write_text('{"datasets": {"1": {"id": "x", "name": [bold]')

    async def go():
        app = make_app(fixed_home)
        seen = _recording(app)
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await settle(pilot)
            await pilot.press("2")  # the other tabs still work
            await settle(pilot)
            assert app.is_running
            assert app.pane("adapters").table.row_count == 2
            shown = await stable_screen(pilot)
        return seen, shown

    seen, shown = asyncio.run(go())
    errors = [m for m, severity, markup in seen if severity == "error"]
    assert errors, seen
    assert all(markup is False for m, s, markup in seen if s == "error")  # file names and data are not markup
    assert str(bad) in errors[0] and "is corrupt" in errors[0]
    assert "datasets.json" in shown  # the toast is on screen


@pytest.mark.slow
def test_an_empty_home_shows_hints(styler_home):
    async def go():
        app = make_app(styler_home)
        async with app.run_test(size=(120, 40)) as pilot:
            texts = []
            for key in "123456":
                await pilot.press(key)
                await settle(pilot)
                texts.append(await stable_screen(pilot))
        return texts

    datasets, adapters, runs, outputs, scores, queue = asyncio.run(go())
    assert "no datasets yet" in datasets
    assert "no adapters yet" in adapters
    assert "no runs yet" in runs
    assert "no outputs yet" in outputs
    assert "no scores yet" in scores
    assert "press w to start one" in queue
