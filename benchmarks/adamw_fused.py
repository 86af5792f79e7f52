"""The training loop's optimizer: torch's fused AdamW (what `styler train` uses on the CPU and
CUDA) against the default per-tensor AdamW, on the demo's LoRA settings on the tiny base, in
interleaved pairs in one process. Prints seconds per 100 steps and the ratio fused / default.

    python benchmarks/adamw_fused.py [--steps 100] [--pairs 3]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    os.environ["STYLER_HOME"] = tempfile.mkdtemp(prefix="styler-bench-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from registry import Registry
    from styler.data.library import synth_dataset
    from styler.demo import DATA, TRAIN
    from styler.train.config import build_config
    from styler.train.trainer import train

    reg = Registry()
    synth_dataset("bench/calligraphy", kind="world-calligraphy", trigger="mifu", registry=reg, **{**DATA, "n": 96})
    fused = torch.optim.AdamW

    def default(*a, **kw):  # what torch picks without `fused` (on the CPU: the per-tensor loop)
        kw.pop("fused", None)
        return fused(*a, **kw)

    def run(name: str, make) -> float:
        torch.optim.AdamW = make
        try:
            t = time.perf_counter()
            train(build_config(dataset="bench/calligraphy", name=name, **{**TRAIN, "steps": args.steps}),
                  registry=reg, console=None)
            return time.perf_counter() - t
        finally:
            torch.optim.AdamW = fused

    run("bench/warm", fused)  # first build and caches
    times = {"default": [], "fused": []}
    for i in range(args.pairs):
        times["default"].append(run(f"bench/d{i}", default))
        times["fused"].append(run(f"bench/f{i}", functools.partial(fused)))
    print(f"tiny base, demo LoRA settings ({TRAIN}), {args.steps} steps, {torch.get_num_threads()} threads")
    for k, v in times.items():
        print(f"  {k:<8} {min(v):6.1f}-{max(v):.1f} s (median {statistics.median(v):.1f})")
    ratios = [f / d for f, d in zip(times["fused"], times["default"])]
    print(f"  ratio fused / default  {statistics.median(ratios):.3f} (median of {args.pairs} pairs; "
          f"range {min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
