"""Plain-text snapshots of each tab, the caption editor, the key help and the quit question, at 120×40 and at 80×24,
over a home with fixed ids and timestamps (files `<screen>-<size>.txt`).

A difference fails with both screens side by side in the message; after an intended change,
regenerate with `STYLER_UPDATE_SNAPSHOTS=1 pytest tests/tui/test_snapshots.py` and review the diff.
"""

from __future__ import annotations

import asyncio
import difflib
import os
from pathlib import Path

import pytest

from .helpers import RUN_ANIME, make_app, settle, stable_screen

SNAPSHOTS = Path(__file__).parent / "snapshots"
SCREENS = {"datasets": "1", "adapters": "2", "runs": "3", "outputs": "4", "scores": "5", "queue": "6"}


@pytest.fixture
def unicode_previews(monkeypatch):
    """Previews drawn with unicode blocks whatever terminal runs the tests (Sixel/Kitty otherwise)."""
    from textual_image.widget import UnicodeImage

    from styler.tui.panes import outputs

    monkeypatch.setattr(outputs, "PreviewImage", UnicodeImage)


SIZES = ((120, 40), (80, 24))


class _RunningWorker:
    """Stands in for the process `w` starts, with a fixed pid, so the quit question shows."""

    pid = 4242

    def poll(self):
        return None


async def _screens(home, size: tuple[int, int]) -> dict[str, str]:
    from styler.tui.widgets import move_to_key

    app = make_app(home)
    shots = {}
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        for name, key in SCREENS.items():
            await pilot.press(key)
            await settle(pilot)
            if name == "runs":
                move_to_key(app.pane("runs").table, RUN_ANIME)  # a finished run: nothing moves
                await settle(pilot)
            shots[name] = await stable_screen(pilot) + "\n"
            if name == "datasets":  # the caption editor over anime@1: a tag added, a replace being typed
                await pilot.press("e")
                await settle(pilot)
                await pilot.press("down", "p", "z", "z", "enter", "s", "p", "i", "x")
                shots["captions"] = await stable_screen(pilot) + "\n"
                await pilot.press("escape", "escape", "escape")  # the input line; unsaved: warned, then dropped
                await settle(pilot)
        await pilot.press("question_mark")
        shots["keys"] = await stable_screen(pilot) + "\n"
        await pilot.press("escape")
        app.background.process, app.background.log_path = _RunningWorker(), Path("logs/worker.log")
        app.pane("queue")._draw_worker_status()  # now, not at the next once-a-second tick
        await pilot.press("q")
        shots["quit"] = await stable_screen(pilot) + "\n"
        await pilot.press("escape")
        app.background.process = None  # nothing to stop on exit
    return shots


def _diff(name: str, expected: str, now: str) -> str:
    return "\n".join(difflib.unified_diff(expected.splitlines(), now.splitlines(), f"{name} (expected)", "now",
                                         lineterm="", n=1))


@pytest.mark.slow
def test_snapshots(fixed_home, unicode_previews):
    shots = {f"{name}-{w}x{h}": text for w, h in SIZES for name, text in asyncio.run(_screens(fixed_home, (w, h))).items()}
    update = os.environ.get("STYLER_UPDATE_SNAPSHOTS") == "1"
    failures = []
    for name, text in shots.items():
        path = SNAPSHOTS / f"{name}.txt"
        if update or not path.exists():
            SNAPSHOTS.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
            continue
        expected = path.read_text(encoding="utf-8")
        if text != expected:
            failures.append(_diff(f"{name}.txt", expected, text))
    assert not failures, "screens changed (STYLER_UPDATE_SNAPSHOTS=1 to accept):\n" + "\n".join(failures)
