"""Where do the tiny world's probe misses come from? The style probe (fitted on 96-image world
datasets of the five styles) reads (1) the shipped VAE's reconstructions of each style, the
ceiling for any LoRA, and (2) the base's own images for plain captions and for captions carrying
each style's trigger and words, and whether those images still have the prompted colours (the
tiny CLIP picks the shape's colour and the background's among the world's colours; 1–4 minutes
on 2 cores). Part 1 also decodes each style's latents with Gaussian noise added (sigma in the
UNet's scaled units, where the latents have a standard deviation near 1): how much latent error
the decoder absorbs before the style is lost. A fragile decoder would turn a UNet's small errors
into another style; a tolerant one leaves the misses to what the UNet draws.

    .venv/bin/python benchmarks/world_diag.py [--n 48] [--latent-noise 0.1,0.2,0.4] [--weights OUT]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=48, help="images per row")
    ap.add_argument("--latent-noise", default="0.1,0.2,0.4",
                    help="comma-separated sigmas (scaled latent units) for the decoder's tolerance; empty: skip")
    ap.add_argument("--weights", help="a folder from `python -m styler.models.pretrain OUT` to measure instead of "
                    "the shipped styler/models/tiny_world (same world code only)")
    args = ap.parse_args(argv)
    try:
        sigmas = [float(x) for x in args.latent_noise.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--latent-noise {args.latent_noise!r}: give sigmas separated by commas, e.g. 0.1,0.2")
    if any(not 0 <= x < 10 for x in sigmas):
        ap.error(f"--latent-noise {args.latent_noise!r}: each sigma must be in [0, 10)")
    os.environ["STYLER_HOME"] = tempfile.mkdtemp(prefix="styler-world-diag-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.weights:  # the fresh home builds the tiny base and the tiny CLIP from these files
        from styler.models import tiny

        tiny.WEIGHTS = Path(args.weights).resolve()
        if not (tiny.WEIGHTS / "manifest.json").is_file():
            ap.error(f"--weights {args.weights}: no manifest.json there; give the OUT folder of styler.models.pretrain")

    import torch
    from PIL import Image
    from transformers import CLIPTokenizer

    from registry import Registry
    from styler.data.library import synth_dataset
    from styler.data.synth import world
    from styler.demo import DATA, GEN, STYLES
    from styler.eval.features import ClipFeatures, resolve_clip
    from styler.eval.probe import fit_probe, predict
    from styler.eval.run import dataset_images, output_images
    from styler.generate.engine import Session
    from styler.generate.service import Request, generate
    from styler.models.pretrain import _to_pixels

    from _world_colours import colour_texts, prompted_colours

    reg = Registry()
    ref = resolve_clip("tiny")
    feats = ClipFeatures.open(ref)
    tok = CLIPTokenizer.from_pretrained(str(ref.path))

    shape_colour, background = colour_texts(feats.model, tok)

    def colours(images, scenes_) -> str:
        fg, bg = prompted_colours(feats.image_embeddings(images), scenes_, shape_colour, background)
        return f"prompted colours: shape {fg:.0%}, background {bg:.0%}"
    for s in world.STYLES:
        synth_dataset(f"d/{s}", kind=f"world-{s}", registry=reg, **{**DATA, "n": 96})
    probe = fit_probe({f"d/{s}": feats.image_embeddings(dataset_images(f"d/{s}", reg)[1]) for s in world.STYLES})

    def shares(images) -> str:
        top = predict(probe, feats.image_embeddings(images)).argmax(1).tolist()
        return ", ".join(f"{c[2:]} {top.count(i) / len(top):.0%}" for i, c in enumerate(probe.classes) if top.count(i))

    session = Session.open("tiny")
    vae = session.pipe.vae
    print("1. the VAE's reconstructions of held-out world images, as the probe reads them")
    for s in world.STYLES:
        arr, _ = world.batch(args.n, s, size=64, seed=555)
        with torch.no_grad():
            z = vae.encode(_to_pixels(arr)).latent_dist.mean
            rec = vae.decode(z).sample.clamp(-1, 1)
        rec = ((rec + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        print(f"  {s:<12} originals: {shares([Image.fromarray(a) for a in arr])}")
        print(f"  {'':<12} reconstructions: {shares([Image.fromarray(a) for a in rec])}", flush=True)
        if sigmas:
            g = torch.Generator().manual_seed(0)
            own, cells = probe.classes.index(f"d/{s}"), []
            for sigma in sigmas:
                zz = z + sigma / vae.config.scaling_factor * torch.randn(z.shape, generator=g)
                with torch.no_grad():
                    rec = vae.decode(zz).sample.clamp(-1, 1)
                rec = ((rec + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
                top = predict(probe, feats.image_embeddings([Image.fromarray(a) for a in rec])).argmax(1).tolist()
                cells.append(f"sigma {sigma:g}: {top.count(own) / len(top):.0%}")
            print(f"  {'':<12} decoded with latent noise, own style: {', '.join(cells)}", flush=True)
    print("2. the base's own images (no adapter), as the probe reads them")
    scenes = world.scenes(args.n, seed=777)
    rows = [("plain captions", lambda sc: sc.caption())]
    for s, (trigger, _) in STYLES.items():
        rows.append((f"{s}'s trigger and words", lambda sc, s=s, trigger=trigger: world.caption(sc, s, trigger=trigger)))
    rows.append(("plain captions led by pixel's trigger", lambda sc: f"{STYLES['pixel'][0]}, {sc.caption()}"))
    for words, prompt_of in rows:
        outs = []
        for i, sc in enumerate(scenes):
            outs += generate(Request(prompt=prompt_of(sc), seed=i, n=1, **GEN), registry=reg, session=session)
        images = output_images(outs, reg)
        print(f"  {words:<38} {shares(images)}; {colours(images, scenes)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
