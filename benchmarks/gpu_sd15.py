"""Full-size SD-1.5 on a GPU: a UNet/VAE/text encoder built from SD-1.5's configs with random
weights (nothing downloaded), bf16 at 512². Measures styler's LoRA train step (time and peak CUDA
memory) at batch 1 and 4, the time of one 50-step 512² image, and images/s at batch 8 for styler
and for diffusers' own StableDiffusionPipeline on the same weights, interleaved in one run.

Goals (issue 10): step ≤ 0.15 s at batch 1, peak ≤ 2.5 GiB, a 50-step image ≤ 1.0 s, batch-8
throughput ≥ 0.95 × diffusers'.

    python benchmarks/gpu_sd15.py                 # needs a CUDA GPU
    python benchmarks/gpu_sd15.py --cpu-smoke     # code-path check on CPU (tiny sizes, not a figure)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")


def build(folder: Path, smoke: bool) -> Path:
    """Save a random-weight SD-1.5-shaped pipeline folder (the tiny tokenizer: ids fit the vocab)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from styler.models.tokenizer import write_tokenizer
    from styler.models.tiny import SCHEDULER_CONFIG

    unet_cfg, vae_cfg, text_cfg = dict(SD15_UNET), dict(SD15_VAE), dict(SD15_TEXT)
    if smoke:  # same structure, toy widths, so the script's code paths run on a CPU
        unet_cfg.update(block_out_channels=(32, 32, 64, 64), sample_size=8, cross_attention_dim=64)
        vae_cfg.update(block_out_channels=(32, 32, 32, 32))
        text_cfg.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    torch.manual_seed(0)
    tok_dir = write_tokenizer(folder / "tok")
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**vae_cfg), text_encoder=CLIPTextModel(CLIPTextConfig(**text_cfg)),
        tokenizer=CLIPTokenizer.from_pretrained(tok_dir), unet=UNet2DConditionModel(**unet_cfg),
        scheduler=DDIMScheduler.from_config(SCHEDULER_CONFIG), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.save_pretrained(folder / "sd15", safe_serialization=True)
    return folder / "sd15"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu-smoke", action="store_true")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("gpu_sd15.py needs a CUDA GPU (use --cpu-smoke to check the code paths on a CPU)")
        sys.exit(2)
    import os

    os.environ.setdefault("STYLER_HOME", tempfile.mkdtemp(prefix="styler-gpu-"))
    from registry import Registry
    from styler.data.library import synth_dataset
    from styler.train.config import build_config
    from styler.train.plan import make_plan
    from styler.train.runs import start_run
    from styler.train.trainer import Trainer

    smoke = args.cpu_smoke
    res = 64 if smoke else 512
    folder = build(Path(tempfile.mkdtemp(prefix="sd15-")), smoke)
    reg = Registry()
    synth_dataset("bench/water", kind="watercolor", n=8, size=res, registry=reg)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (smoke: not a figure)"
    print(f"SD-1.5-shaped model, random weights, {res}px, device: {device}")
    for batch in (1, 4):
        cfg = build_config(dataset="bench/water", base=str(folder), steps=10**6, batch=batch, resolution=res,
                           rank=16, precision="no" if smoke else "bf16", log_every=10**9)
        plan = make_plan(cfg, reg)
        trainer = Trainer(plan, registry=reg)
        trainer.setup(start_run(reg, cfg, plan.dataset, plan.base_identity, plan.total_steps))
        n = 2 if smoke else args.repeats
        trainer.plan.total_steps = 3
        trainer.run(0)  # warm-up (kernels, allocator)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        trainer.plan.total_steps = 3 + n
        trainer.run(3)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        per = (time.perf_counter() - t) / n
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
        print(f"LoRA rank 16 train step, batch {batch}: {per * 1e3:8.1f} ms/step, peak {peak:.2f} GiB")
        del trainer
    from styler.device import Placement, resolve_placement
    from styler.generate.engine import Session

    placement = Placement("cpu", "fp32") if smoke else resolve_placement("cuda", "bf16")
    session = Session.open(str(folder), placement)
    steps = 2 if smoke else 50
    times = []
    for _ in range(1 if smoke else 3):
        t = time.perf_counter()
        session.render(prompt="a watercolor painting of a lake", negative="", seed=1, steps=steps, guidance=7.5,
                       width=res, height=res)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    print(f"one {steps}-step {res}px image: {statistics.median(times):.2f} s")
    throughput(session, folder, placement, res, steps=2 if smoke else 30, rounds=1 if smoke else 3)


def throughput(session, folder: Path, placement, res: int, steps: int, rounds: int) -> None:
    """Images/s at batch 8: styler's render_batch against diffusers' pipeline called directly
    (same weights, dtype, scheduler, steps and per-image generators), alternating rounds."""
    import torch
    from diffusers import StableDiffusionPipeline

    from styler.models.load import quiet

    with quiet():
        ref = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, feature_extractor=None,
                                                      requires_safety_checker=False, dtype=placement.torch_dtype)
    ref.to(placement.device)
    ref.set_progress_bar_config(disable=True)
    session.set_scheduler("ddim")
    prompts, seeds = ["a watercolor painting of a lake"] * 8, list(range(8))

    def styler_batch():
        session.render_batch(prompts=prompts, negative="", seeds=seeds, steps=steps, guidance=7.5, width=res,
                             height=res)

    def diffusers_batch():
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        with torch.no_grad():
            ref(prompt=prompts, num_inference_steps=steps, guidance_scale=7.5, width=res, height=res, generator=gens)

    results = {"styler": [], "diffusers": []}
    for fn in (styler_batch, diffusers_batch):  # warm-up
        fn()
    for _ in range(rounds):
        for name, fn in (("styler", styler_batch), ("diffusers", diffusers_batch)):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            results[name].append(8 / (time.perf_counter() - t))
    s, d = statistics.median(results["styler"]), statistics.median(results["diffusers"])
    print(f"batch 8, {steps} steps, {res}px: styler {s:.2f} img/s, diffusers {d:.2f} img/s, ratio {s / d:.3f}")


if __name__ == "__main__":
    main()
