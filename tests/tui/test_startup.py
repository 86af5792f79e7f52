"""The dashboard starts without torch (how fast its first frame comes: benchmarks/tui_first_frame.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "diffusers", "transformers", "peft", "accelerate")


def test_importing_the_app_loads_no_torch():
    code = ("import sys, styler.tui.app, styler.cli.tui_cmd; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


@pytest.mark.slow
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


def test_cli_command_is_registered():
    from tests.helpers import run_cli

    result = run_cli("tui", "--help")
    assert result.exit_code == 0
    assert "Dashboard" in result.stdout or "dashboard" in result.stdout.lower()
