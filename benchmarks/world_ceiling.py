"""What can the tiny base draw at all? Two measurements of the limit under the probe figures of
`tiny_world.py` (about 12 minutes on 2 cores with the defaults).

1. The ceiling: the WHOLE tiny UNet (no LoRA) fine-tuned on each style's 96-image world dataset
   (batch 4, AdamW, lr 1e-4, plain noise-prediction MSE), sampled at checkpoints with the demo's
   sampler on the dataset's own captions; the probe (fitted on the plain and style datasets, as
   in `tiny_world.py`) gives the share of outputs it calls the style. A LoRA is a restriction of
   this fine-tune, so a share the whole UNet does not reach at a step count, no LoRA of that
   many steps reaches either.
2. The price of a larger latent: the demo's LoRA trained a few steps at 64 px (8x8 latents) and
   at 128 px (16x16 latents, the same base: the UNet and VAE are convolutional), side by side,
   seconds per step and the ratio; then 3. the same for the pretraining's VAE and UNet steps,
   with the recipe's step counts turned into minutes.

    .venv/bin/python benchmarks/world_ceiling.py [--styles calligraphy,pixel,watercolor]
        [--checkpoints 150,300,600,1200] [--n 32] [--cost-steps 20] [--weights OUT]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--styles", default="calligraphy,pixel,watercolor", help="world styles to fine-tune on")
    ap.add_argument("--checkpoints", default="150,300,600,1200", help="steps at which to sample and probe")
    ap.add_argument("--n", type=int, default=32, help="images sampled per checkpoint")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--size", type=int, default=64, help="image side in part 1 (128: 16x16 latents, the shipped VAE "
                    "and UNet used beyond the 64 px they were pretrained at)")
    ap.add_argument("--cost-steps", type=int, default=20, help="LoRA steps timed per resolution in part 2 (0: skip)")
    ap.add_argument("--sheets", help="a folder to save each style's last checkpoint sheet in")
    ap.add_argument("--weights", help="a folder from `python -m styler.models.pretrain OUT` to measure instead of "
                    "the shipped styler/models/tiny_world (same world code only)")
    args = ap.parse_args(argv)
    try:
        checkpoints = sorted({int(x) for x in args.checkpoints.split(",") if x})
    except ValueError:
        ap.error(f"--checkpoints {args.checkpoints!r}: give step counts separated by commas, e.g. 150,600")
    if not checkpoints or checkpoints[0] < 1:
        ap.error("--checkpoints: give at least one step count >= 1")
    os.environ["STYLER_HOME"] = tempfile.mkdtemp(prefix="styler-world-ceiling-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.weights:
        from styler.models import tiny

        tiny.WEIGHTS = Path(args.weights).resolve()
        if not (tiny.WEIGHTS / "manifest.json").is_file():
            ap.error(f"--weights {args.weights}: no manifest.json there; give the OUT folder of styler.models.pretrain")

    import numpy as np
    import torch
    from diffusers import DDPMScheduler
    from PIL import Image

    from registry import Dataset, Registry
    from styler.data.library import synth_dataset
    from styler.data.synth import world
    from styler.demo import DATA, GEN, STYLES, TRAIN
    from styler.eval.features import ClipFeatures, resolve_clip
    from styler.eval.probe import fit_probe, predict
    from styler.eval.run import dataset_images
    from styler.generate.engine import Session
    from styler.models.pretrain import Recipe, _to_pixels
    from styler.train.config import build_config
    from styler.train.data import load_items, open_rgb
    from styler.train.trainer import train

    styles = [s for s in args.styles.split(",") if s]
    unknown = [s for s in styles if s not in world.STYLES or s == "plain"]
    if unknown:
        ap.error(f"--styles: {', '.join(unknown)} not a world style; choose from "
                 f"{', '.join(s for s in world.STYLES if s != 'plain')}")
    triggers = {**{k: v[0] for k, v in STYLES.items()}, "stripes": "strp"}
    torch.manual_seed(0)
    reg = Registry()
    feats = ClipFeatures.open(resolve_clip("tiny"))
    size = args.size
    synth_dataset("ceil/plain", kind="world-plain", registry=reg, **{**DATA, "n": 96, "size": size})
    for s in styles:
        synth_dataset(f"ceil/{s}", kind=f"world-{s}", trigger=triggers.get(s), registry=reg,
                      **{**DATA, "n": 96, "size": size})
    sets = ["ceil/plain"] + [f"ceil/{s}" for s in styles]
    probe = fit_probe({d: feats.image_embeddings(dataset_images(d, reg)[1]) for d in sets})
    print(f"probe classes {probe.classes}, held-out accuracy {probe.val_accuracy}", flush=True)

    pipe = Session.open("tiny").pipe
    unet = pipe.unet
    start = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    scale = pipe.vae.config.scaling_factor

    def embed(captions):
        ids = pipe.tokenizer(captions, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            return pipe.text_encoder(ids)[0]

    print(f"0. the VAE's reconstructions at {size} px, as the probe reads them", flush=True)
    for s in ["plain", *styles]:
        arr, _ = world.batch(48, s, size=size, seed=555)
        with torch.no_grad():
            rec = pipe.vae.decode(pipe.vae.encode(_to_pixels(arr)).latent_dist.mean).sample.clamp(-1, 1)
        rec = ((rec + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        top = predict(probe, feats.image_embeddings([Image.fromarray(a) for a in rec])).argmax(1).tolist()
        print(f"  {s:<12} own style {top.count(probe.classes.index('ceil/' + s)) / len(top):4.0%}", flush=True)
    print(f"1. the whole UNet fine-tuned per style (batch 4, lr {args.lr}), {args.n} images per checkpoint "
          f"({GEN['scheduler']} {GEN['steps']} steps, guidance {GEN['guidance']})", flush=True)
    for s in styles:
        unet.load_state_dict(start)
        items = load_items(reg.resolve(Dataset, f"ceil/{s}"), reg.home, "all")
        captions = [it.text for it in items]
        pixels = torch.stack([torch.from_numpy(np.asarray(open_rgb(it.path).resize((size, size)), dtype=np.float32))
                              .permute(2, 0, 1)
                              for it in items]) / 127.5 - 1
        with torch.no_grad():
            post = pipe.vae.encode(pixels).latent_dist
        cond = embed(captions)
        prompts = [captions[i % len(captions)] for i in range(args.n)]
        unet.train()
        unet.requires_grad_(True)
        opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
        g = torch.Generator().manual_seed(1)
        t0 = time.time()
        for step in range(1, checkpoints[-1] + 1):
            idx = torch.randint(len(items), (4,), generator=g)
            z0 = (post.mean[idx] + post.std[idx] * torch.randn(post.mean[idx].shape, generator=g)) * scale
            noise = torch.randn(z0.shape, generator=g)
            t = torch.randint(0, noise_sched.config.num_train_timesteps, (4,), generator=g)
            loss = (unet(noise_sched.add_noise(z0, noise, t), t, encoder_hidden_states=cond[idx]).sample
                    - noise).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step not in checkpoints:
                continue
            train_s = time.time() - t0
            unet.eval()
            with torch.no_grad():
                images = [pipe(p, num_inference_steps=GEN["steps"], guidance_scale=GEN["guidance"], width=size,
                               height=size, generator=torch.Generator().manual_seed(100 + i)).images[0]
                          for i, p in enumerate(prompts)]
            unet.train()
            top = predict(probe, feats.image_embeddings(images)).argmax(1).tolist()
            read = Counter(probe.classes[k][len("ceil/"):] for k in top)
            print(f"  {s:<12} step {step:>5} ({train_s:5.0f} s training): own style {read[s] / len(top):4.0%}; "
                  f"read as {', '.join(f'{k} {v / len(top):.0%}' for k, v in read.most_common())}", flush=True)
            if args.sheets and step == checkpoints[-1]:
                Path(args.sheets).mkdir(parents=True, exist_ok=True)
                sheet = Image.new("RGB", (size * 8, size * ((len(images) + 7) // 8)))
                for i, im in enumerate(images):
                    sheet.paste(im, (size * (i % 8), size * (i // 8)))
                sheet.save(Path(args.sheets) / f"ceiling_{s}_{step}.png")
    unet.load_state_dict(start)
    unet.requires_grad_(False)

    if args.cost_steps > 0:
        print(f"2. the demo's LoRA ({TRAIN}), {args.cost_steps} steps at each resolution, side by side", flush=True)
        s = styles[0]
        per_step = {}
        for res in (64, 128):
            name = f"cost/{s}-{res}"
            synth_dataset(name, kind=f"world-{s}", trigger=triggers.get(s), registry=reg,
                          **{**DATA, "n": 24, "size": res})
            for steps in (2, 2 + args.cost_steps):  # the difference removes start-up and saving
                t = time.time()
                train(build_config(**{**TRAIN, "dataset": name, "name": f"{name}-{steps}", "steps": steps,
                                      "resolution": res}), registry=reg, console=None)
                per_step.setdefault(res, []).append(time.time() - t)
            per_step[res] = (per_step[res][1] - per_step[res][0]) / args.cost_steps
            print(f"  {res} px ({res // 8}x{res // 8} latents): {per_step[res]:.3f} s per step, "
                  f"{TRAIN['steps']} steps ~ {per_step[res] * TRAIN['steps']:.0f} s", flush=True)
        print(f"  ratio 128 px / 64 px: {per_step[128] / per_step[64]:.2f}x", flush=True)

        recipe = Recipe()
        print(f"3. the pretraining's VAE step (batch {recipe.vae_batch}) and UNet step (batch {recipe.unet_batch}) at "
              f"each size, {args.cost_steps // 4 or 1} steps each after one warm-up, side by side", flush=True)
        vae, timed = pipe.vae, {}
        cond = embed(["a red circle on a blue background, flat colors"] * recipe.unet_batch)
        for res in (64, 128):
            x = _to_pixels(world.batch(recipe.vae_batch, "pixel", size=res, seed=9)[0])
            z = torch.randn(recipe.unet_batch, unet.config.in_channels, res // 8, res // 8)
            t = torch.randint(0, 1000, (recipe.unet_batch,))

            def vae_step():
                rec = vae.decode(vae.encode(x).latent_dist.sample()).sample
                ((rec - x).abs().mean() + (rec - x).pow(2).mean()).backward()

            def unet_step():
                (unet(z, t, encoder_hidden_states=cond).sample - z).pow(2).mean().backward()

            for part, model, fn, total in (("vae", vae, vae_step, recipe.vae_steps),
                                           ("unet", unet, unet_step, recipe.unet_steps)):
                model.train().requires_grad_(True)
                opt = torch.optim.AdamW(model.parameters(), lr=1e-9)
                reps = args.cost_steps // 4 or 1
                for i in range(reps + 1):
                    if i == 1:
                        t0 = time.time()
                    opt.zero_grad(set_to_none=True)
                    fn()
                    opt.step()
                timed[part, res] = (time.time() - t0) / reps
                model.eval().requires_grad_(False)
                print(f"  {part:<4} {res} px: {timed[part, res]:.3f} s per step, the recipe's {total} steps "
                      f"~ {timed[part, res] * total / 60:.0f} min", flush=True)
        for part in ("vae", "unet"):
            print(f"  {part} ratio 128 px / 64 px: {timed[part, 128] / timed[part, 64]:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
