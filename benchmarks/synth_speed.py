"""Synthetic datasets: seconds to make 16 images at 128 px for each kind (calligraphy with the
procedural font, the same on every machine); ~0.1-0.4 s each on 2 cores. Moved here from
tests/data/test_synth.py: a timing bound fails on a busy test machine.

    python benchmarks/synth_speed.py [--n 16] [--size 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    from styler.data.synth import KINDS, synthesize

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for kind in KINDS:
        times = []
        for k in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                extra = {"font": ""} if kind == "calligraphy" else {}
                t = time.perf_counter()
                synthesize(kind, Path(tmp) / kind, n=args.n, size=args.size, **extra)
                times.append(time.perf_counter() - t)
        print(f"{kind:<12} {args.n} images at {args.size} px: median {statistics.median(times):.3f} s "
              f"(min {min(times):.3f}, max {max(times):.3f})")


if __name__ == "__main__":
    main()
