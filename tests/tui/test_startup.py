"""The dashboard starts fast and without torch."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from .helpers import make_app, screen_text

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "diffusers", "transformers", "peft", "accelerate")


def test_importing_the_app_loads_no_torch():
    code = ("import sys, styler.tui.app, styler.cli.tui_cmd; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_running_the_app_loads_no_torch(tmp_path):
    """Every tab shown and every background read done, in a fresh process: still no torch."""
    code = f"""
import asyncio, sys
from styler.tui.app import StylerApp
async def main():
    app = StylerApp({str(tmp_path / 'home')!r})
    async with app.run_test(size=(120, 40)) as pilot:
        for key in "123456":
            await pilot.press(key)
            await app.workers.wait_for_complete()
            await pilot.pause()
asyncio.run(main())
print(','.join(m for m in {HEAVY!r} if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1:] in ([], [""])


def test_first_frame_under_one_second(fixed_home):
    """From creating the app to its first painted frame (tabs drawn; data arrives afterwards).

    The bound is the hard requirement. Wall time is the best of three tries, so a test machine
    busy with other tests (xdist, torch) does not fail it; CPU time must be under it every time."""

    async def first_frame() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        app = make_app(fixed_home)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            elapsed = time.perf_counter() - wall, time.process_time() - cpu
            assert "1 Datasets" in screen_text(app)
        return elapsed

    asyncio.run(first_frame())  # the first app in a process also builds Textual's caches
    tries = []
    for _ in range(3):
        wall, cpu = asyncio.run(first_frame())
        tries.append(wall)
        assert cpu < 1.0
        if wall < 1.0:
            break
    assert min(tries) < 1.0, tries


def test_cli_command_is_registered():
    from tests.helpers import run_cli

    result = run_cli("tui", "--help")
    assert result.exit_code == 0
    assert "Dashboard" in result.stdout or "dashboard" in result.stdout.lower()
