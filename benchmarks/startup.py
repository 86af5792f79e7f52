"""Start-up cost of the CLI: `styler --help` and `styler data ls`, each in a fresh process, next
to a bare `python -c pass` measured in the same run; and proof that torch is not imported.

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


if __name__ == "__main__":
    main()
