"""Overhead of styler's training loop: a `styler train` step (LoRA, latents cached) on the tiny
base against a bare UNet forward + backward + AdamW step on precomputed tensors, measured in the
same process on the same model. Goal: ratio ≤ 1.10.

    python benchmarks/train_step.py [--steps 60] [--batch 4] [--resolution 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    os.environ["STYLER_HOME"] = tempfile.mkdtemp(prefix="styler-bench-")

    import torch
    import torch.nn.functional as F

    from registry import Registry
    from styler.data.library import synth_dataset
    from styler.train.config import build_config
    from styler.train.plan import make_plan
    from styler.train.runs import start_run
    from styler.train.trainer import Trainer

    reg = Registry()
    synth_dataset("bench/pixel", kind="pixel", n=16, size=args.resolution)
    cfg = build_config(dataset="bench/pixel", base="tiny", steps=args.steps * (args.repeats + 1), batch=args.batch,
                       resolution=args.resolution, rank=16, log_every=10**9)
    plan = make_plan(cfg, reg)
    trainer = Trainer(plan, registry=reg)
    trainer.setup(start_run(reg, cfg, plan.dataset, plan.base_identity, plan.total_steps))
    unet, opt = trainer.unet, trainer.optimizer

    # the bare step: same UNet with the same LoRA, same batch shape, everything precomputed
    lat = trainer.cache.latents(list(range(args.batch)), torch.Generator().manual_seed(0))
    hidden = trainer._encode_text([trainer.captions[i] for i in range(args.batch)]).detach()
    noise = torch.randn_like(lat)
    t = torch.randint(0, 1000, (args.batch,))
    sched = trainer.noise_sched

    def bare(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            pred = unet(sched.add_noise(lat, noise, t), t, hidden).sample
            F.mse_loss(pred, noise).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return (time.perf_counter() - t0) / n

    done = 0

    def styler(n: int) -> float:
        nonlocal done
        t0 = time.perf_counter()
        trainer.plan.total_steps = done + n
        trainer.run(done)
        done += n
        return (time.perf_counter() - t0) / n

    bare(5)
    styler(5)  # warm both paths
    b, s, ratios = [], [], []
    for _ in range(args.repeats):  # interleaved pairs, so drift in machine speed hits both sides
        b.append(bare(args.steps))
        s.append(styler(args.steps))
        ratios.append(s[-1] / b[-1])
    bm, sm = statistics.median(b), statistics.median(s)
    ratios.sort()
    print(f"tiny base, LoRA rank 16, batch {args.batch}, {args.resolution}px, latents cached, {torch.get_num_threads()} threads")
    print(f"bare UNet fwd+bwd+AdamW step   {bm * 1e3:8.2f} ms")
    print(f"styler train step              {sm * 1e3:8.2f} ms")
    print(f"ratio styler / bare            {statistics.median(ratios):8.3f}   (median of {len(ratios)} paired "
          f"segments; range {ratios[0]:.3f}–{ratios[-1]:.3f}; goal <= 1.10)")


if __name__ == "__main__":
    main()
