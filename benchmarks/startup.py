"""Start-up cost of the CLI and the dashboard: `styler --help`, `styler data ls`, and the TUI's
first frame, each in a fresh process, next to a bare `python -c pass` measured in the same run;
and proof that torch is not imported.

    python benchmarks/startup.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

RUN = "import sys; from styler.cli.main import main; sys.argv[0] = 'styler'; main({argv!r})"
PROBE = RUN + "; print('TORCH_LOADED' if 'torch' in sys.modules else 'TORCH_ABSENT', file=sys.stderr)"


def timed(code: str, env: dict, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


TUI = """
import sys, time, asyncio
t0 = time.perf_counter()
from styler.tui.app import StylerApp
async def go():
    app = StylerApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        print(f"FRAME={time.perf_counter() - t0:.4f}", file=sys.stderr)
asyncio.run(go())
print("TORCH_LOADED" if "torch" in sys.modules else "TORCH_ABSENT", file=sys.stderr)
"""


def tui_first_frame(env: dict, repeat: int) -> tuple[float, bool]:
    """Seconds from importing the app module to its first painted frame (headless), median."""
    frames, torch_seen = [], False
    for _ in range(repeat):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", TUI], env=env, capture_output=True, text=True)
        total = time.perf_counter() - t
        frame = next((float(line[6:]) for line in out.stderr.splitlines() if line.startswith("FRAME=")), None)
        torch_seen |= "TORCH_LOADED" in out.stderr
        if frame is not None:
            frames.append((total, frame))
    return statistics.median(f for _, f in frames), torch_seen


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, STYLER_HOME=home)
        bare = timed("pass", env, args.repeat)
        print(f"{'python -c pass':<22}{bare * 1e3:8.0f} ms")
        for argv in (["--help"], ["data", "ls"], ["registry", "ls"]):
            t = timed(RUN.format(argv=argv), env, args.repeat)
            probe = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], env=env, capture_output=True, text=True)
            torch_state = "torch not imported" if "TORCH_ABSENT" in probe.stderr else "TORCH IMPORTED"
            label = "styler " + " ".join(argv)
            print(f"{label:<22}{t * 1e3:8.0f} ms   ×{t / bare:.1f} of bare python, {(t - bare) * 1e3:.0f} ms over it; {torch_state}")
        frame, torch_seen = tui_first_frame(env, args.repeat)
        print(f"{'styler tui first frame':<22}{frame * 1e3:8.0f} ms   (import + first painted frame, headless 120x40); "
              f"{'TORCH IMPORTED' if torch_seen else 'torch not imported'}")


if __name__ == "__main__":
    main()
