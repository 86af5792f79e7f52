"""Registry scale: time per output insert and per full listing at 1k and 10k outputs, for
styler's segmented tables and for one TinyDB file per table (the naive layout), side by side.

    python benchmarks/registry_scale.py [--n 10000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from registry import Output, Registry
from registry import store as store_mod


def _output(i: int) -> Output:
    return Output(blob=f"{i:064x}", prompt=f"a cat in watercolor style, number {i}", negative="blurry", seed=i,
                  steps=30, guidance=7.5, width=512, height=512, scheduler="ddim",
                  base={"name": "tiny", "hash": "0" * 64}, adapters=[{"id": "x", "name": "anime", "weight": 0.5}])


def _prefill(reg: Registry, n: int, segment_bytes: int) -> None:
    """Write n records straight into the table's files (one write per file), laid out as n
    inserts would have left them, so the benchmark need not pay the naive layout's O(n²) fill."""
    from registry.storage import write_json_atomic

    docs = [_output(i).to_dict() for i in range(n)]
    per_segment = max(1, min(n, segment_bytes // len(json.dumps(docs[0], ensure_ascii=False)) + 1)) if docs else 1
    chunks = [docs[i:i + per_segment] for i in range(0, n, per_segment)] or [[]]
    for k, chunk in enumerate(chunks, 1):
        path = reg.table_path("outputs") if k == len(chunks) else reg.dir / f"outputs.{k:04d}.json"
        write_json_atomic(path, {"outputs": {str(j + 1): d for j, d in enumerate(chunk)}})


def measure(checkpoints: list[int], segment_bytes: int, timed_inserts: int = 50) -> dict[int, tuple[float, float]]:
    """For each size: mean time of `timed_inserts` inserts into a table already holding that many
    records, and the time to list the whole table."""
    store_mod.SEGMENT_BYTES = segment_bytes
    results = {}
    for cp in checkpoints:
        with tempfile.TemporaryDirectory() as home:
            reg = Registry(home)
            reg.count(Output)  # migrations
            _prefill(reg, cp - timed_inserts, segment_bytes)
            t = time.perf_counter()
            for i in range(timed_inserts):
                reg.insert(_output(cp + i))
            per_insert = (time.perf_counter() - t) / timed_inserts
            t = time.perf_counter()
            assert len(reg.all(Output)) == cp
            results[cp] = (per_insert, time.perf_counter() - t)
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    args = ap.parse_args()
    cps = [1_000, args.n]
    seg = measure(cps, store_mod.SEGMENT_BYTES)
    single = measure(cps, 10**12)
    print(f"{'layout':<22}{'insert@1k':>12}{'insert@' + str(args.n // 1000) + 'k':>12}{'list@' + str(args.n // 1000) + 'k':>12}")
    for label, r in (("segmented (styler)", seg), ("one file per table", single)):
        print(f"{label:<22}{r[1000][0] * 1e3:>10.2f}ms{r[args.n][0] * 1e3:>10.2f}ms{r[args.n][1]:>11.2f}s")
    print(f"insert growth 1k→{args.n // 1000}k: segmented ×{seg[args.n][0] / seg[1000][0]:.2f}, "
          f"single file ×{single[args.n][0] / single[1000][0]:.2f}")
    print(f"insert at {args.n // 1000}k, single file / segmented: ×{single[args.n][0] / seg[args.n][0]:.1f}")


if __name__ == "__main__":
    main()
