"""The dashboard's first frame in a warm process: from creating the app to its first painted frame
(tabs drawn; data arrives afterwards) on the tests' fixed home, wall and CPU time, best of N after
one warm-up (the first app in a process builds Textual's caches). The target is under 1 s.
Moved here from tests/tui/test_startup.py: a timing bound fails on a busy test machine.

    python benchmarks/tui_first_frame.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.tui.helpers


async def first_frame(home: Path) -> tuple[float, float]:
    from tests.tui.helpers import make_app, screen_text

    wall, cpu = time.perf_counter(), time.process_time()
    app = make_app(home)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        elapsed = time.perf_counter() - wall, time.process_time() - cpu
        assert "1 Datasets" in screen_text(app)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        os.environ["STYLER_HOME"] = str(home)
        from tests.tui.helpers import build_fixed_home

        build_fixed_home(home)
        asyncio.run(first_frame(home))  # warm-up
        tries = [asyncio.run(first_frame(home)) for _ in range(args.repeat)]
    for wall, cpu in tries:
        print(f"first frame  wall {wall:.3f} s  cpu {cpu:.3f} s")
    print(f"best wall {min(w for w, _ in tries):.3f} s, worst cpu {max(c for _, c in tries):.3f} s (target < 1 s)")


if __name__ == "__main__":
    main()
