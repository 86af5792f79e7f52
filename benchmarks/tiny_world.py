"""Does the built-in world mean something? Prints the figures issue 11 asks for, each with its
target, on the shipped tiny base and tiny CLIP (CPU, a fresh temporary home, about 10 minutes).

    .venv/bin/python benchmarks/tiny_world.py [--n 72] [--styles calligraphy,pixel,watercolor,stripes] [--weights OUT]

1. tiny CLIP zero-shot on held-out world images: colour >= 90 %, shape >= 80 %, style >= 95 % (and,
   without a target, the same images softened as generated pictures are).
2. the base follows its prompts: on 64 generated images the tiny CLIP picks the prompted colour
   for >= 70 %.
3. per style (the demo's three and `stripes`, which nothing was pretrained on): a LoRA trained
   with the demo's settings (<= 30 s on the CPU) against the baseline on the same prompts and
   seeds: the probe (fitted on the style datasets and plain) calls >= 80 % of the adapter's images
   its style and <= 20 % of the baseline's; style_sim rises by >= 0.02; FID (CLIP features)
   against the style's dataset falls; content survives: the CLIP cosine between each image and its
   prompt's scene words alone ("a red circle on a blue background") loses at most 0.05 against the
   baseline's (issue 11 words it as "within 0.05"; a rise means the scene reads better through the
   style, not that content was lost, so the target is one-sided and the two-sided reading is
   printed beside it). (clip_t on the whole prompt is printed too, without a target: the prompt also has
   the trigger and style words, which the adapter's images match and the baseline's do not.)
4. mix sweeps A -> B (0, .2, .4, .5, .6, .8, 1), stripes -> watercolor and calligraphy ->
   watercolor by default: Spearman(B weight, probe share for A) <= -0.9 for each.

The numbers are the tiny CLIP's: comparable with each other, not with published CLIP scores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def line(name: str, value: str, ok: bool | None) -> None:
    mark = "" if ok is None else ("  PASS" if ok else "  FAIL")
    print(f"  {name:<58} {value}{mark}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=72, help="images per subject for the style figures (FID needs > 64)")
    ap.add_argument("--styles", default="calligraphy,pixel,watercolor,stripes")
    ap.add_argument("--sweep", default="stripes:watercolor,calligraphy:watercolor",
                    help="comma-separated A:B pairs, each swept and checked")
    ap.add_argument("--sweep-n", type=int, default=16)
    ap.add_argument("--weights", help="a folder from `python -m styler.models.pretrain OUT` to measure instead of "
                    "the shipped styler/models/tiny_world (same world code only)")
    args = ap.parse_args(argv)
    home = tempfile.mkdtemp(prefix="styler-tiny-world-")
    os.environ["STYLER_HOME"] = home
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.weights:  # the fresh home builds the tiny base and the tiny CLIP from these files
        from styler.models import tiny

        tiny.WEIGHTS = Path(args.weights).resolve()
        if not (tiny.WEIGHTS / "manifest.json").is_file():
            ap.error(f"--weights {args.weights}: no manifest.json there; give the OUT folder of styler.models.pretrain")

    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import CLIPTokenizer

    from registry import Adapter, Dataset, Output, Registry
    from styler.data.library import synth_dataset
    from styler.data.synth import world
    from styler.demo import DATA, GEN, STYLES, TRAIN
    from styler.eval.features import ClipFeatures, resolve_clip
    from styler.eval.probe import fit_probe, predict
    from styler.eval.run import dataset_images, evaluate, output_images
    from styler.eval.sweep import probe_sweep
    from styler.generate.engine import Session
    from styler.generate.service import Request, generate
    from styler.models.pretrain import text_embeds, zero_shot
    from styler.models.tiny import manifest
    from styler.train.config import build_config
    from styler.train.trainer import train

    from _world_colours import colour_texts, prompted_colours

    failures = 0

    def check(name, value, ok):
        nonlocal failures
        failures += 0 if ok or ok is None else 1
        line(name, value, ok)

    def content_cosine(image_emb, prompts) -> float:
        """Mean cosine between each image and its prompt's scene words alone ("a red circle on a
        blue background"), without the trigger and style words: does the content survive?"""
        scenes_ = [next((p for p in prompt.split(", ") if p.endswith("background")), prompt) for prompt in prompts]
        with torch.no_grad():
            t = tok(scenes_, padding=True, return_tensors="pt")
            te = F.normalize(text_embeds(model, t.input_ids, t.attention_mask), dim=-1)
        return float((F.normalize(image_emb.float(), dim=-1) * te).sum(-1).mean())

    t_all = time.time()
    reg = Registry()
    ref = resolve_clip("tiny")
    feats = ClipFeatures.open(ref)
    model = feats.model
    tok = CLIPTokenizer.from_pretrained(str(ref.path))
    print(f"tiny world: home {home}; weights recipe seconds {manifest().get('seconds')}", flush=True)

    print("1. tiny CLIP zero-shot, held-out world images (256 per style)", flush=True)
    zs = zero_shot(model, tok, n_per_style=256)
    check("colour (8 classes, >= 90 %)", f"{zs.colour:.1%}", zs.colour >= 0.90)
    check("shape (4 classes, >= 80 %)", f"{zs.shape:.1%}", zs.shape >= 0.80)
    check("style (4 classes, >= 95 %)", f"{zs.style:.1%}", zs.style >= 0.95)
    soft = zero_shot(model, tok, n_per_style=256, softened=True)
    check("the same, each image softened (blur, resampling or noise; no target)",
          f"colour {soft.colour:.1%}, shape {soft.shape:.1%}, style {soft.style:.1%}", None)

    print("2. the base follows its prompts (64 images, tiny CLIP picks the colour)", flush=True)
    session = Session.open("tiny")
    scenes = world.scenes(64, seed=777)
    outs = []
    for i, s in enumerate(scenes):
        outs += generate(Request(prompt=s.caption(), seed=i, n=1, **GEN), registry=reg, session=session)
    follow, _ = prompted_colours(feats.image_embeddings(output_images(outs, reg)), scenes, *colour_texts(model, tok))
    check("prompted colour picked (>= 70 %)", f"{follow:.1%}", follow >= 0.70)

    print(f"3. LoRA per style, demo settings ({TRAIN}), n={args.n} per subject", flush=True)
    triggers = {**{k: v[0] for k, v in STYLES.items()}, "stripes": "strp"}
    styles = [s for s in args.styles.split(",") if s]
    synth_dataset("bench/plain", kind="world-plain", registry=reg, **{**DATA, "n": 96})
    for s in styles:
        synth_dataset(f"bench/{s}", kind=f"world-{s}", trigger=triggers[s], registry=reg, **{**DATA, "n": 96})
    probe_sets = ["bench/plain"] + [f"bench/{s}" for s in styles]

    def data_content(label: str) -> float:
        """The scene-word cosine of a dataset's own images: how well the tiny CLIP reads the scene
        through that style at all (the reference for the content figure below; no target)."""
        from styler.train.data import load_items

        items = load_items(reg.resolve(Dataset, label), reg.home, "all")
        return content_cosine(feats.image_embeddings([it.path for it in items]), [it.text for it in items])

    plain_content = data_content("bench/plain")
    probe = fit_probe({d: feats.image_embeddings(dataset_images(d, reg)[1]) for d in probe_sets})
    print(f"  probe classes {probe.classes}, held-out accuracy {probe.val_accuracy}", flush=True)
    for s in styles:
        name = f"bench/{s}"
        t = time.time()
        train(build_config(dataset=name, name=name, **TRAIN), registry=reg, console=None)
        secs = time.time() - t
        check(f"{s}: LoRA training time (<= 30 s)", f"{secs:.1f} s", secs <= 30)
        r = evaluate(name, n=args.n, seed=100, clip="tiny", steps=GEN["steps"], guidance=GEN["guidance"],
                     metrics="clip_t,style_sim,fid", registry=reg)
        a_label = reg.resolve(Adapter, name).label
        mine = r["scores"][a_label]
        base_name = next(k for k in r["scores"] if k != a_label)
        base = r["scores"][base_name]
        own = name  # the probe's class names are the dataset names it was fitted on
        shares, content = {}, {}
        for subj in (a_label, base_name):
            outs_ = [reg.get(Output, i) for i in r["outputs"][subj]]
            emb_ = feats.image_embeddings(output_images(outs_, reg))
            top = predict(probe, emb_).argmax(1).tolist()
            shares[subj] = sum(1 for k in top if probe.classes[k] == own) / len(top)
            content[subj] = content_cosine(emb_, [o.prompt for o in outs_])
        check(f"{s}: probe calls adapter images its style (>= 80 %)", f"{shares[a_label]:.0%}", shares[a_label] >= 0.8)
        check(f"{s}: probe calls baseline images that style (<= 20 %)", f"{shares[base_name]:.0%}", shares[base_name] <= 0.2)
        d_sim = mine["style_sim"] - base["style_sim"]
        check(f"{s}: style_sim rise (>= 0.02)", f"{base['style_sim']:.3f} -> {mine['style_sim']:.3f} ({d_sim:+.3f})",
              d_sim >= 0.02)
        check(f"{s}: FID (CLIP features) vs its dataset falls", f"{base['fid']:.2f} -> {mine['fid']:.2f}",
              mine["fid"] < base["fid"])
        d_t = (mine["clip_t"] - base["clip_t"]) / 100  # clip_t is 100·cos: compare cosines
        check(f"{s}: clip_t on the full prompt (with style words)",
              f"{base['clip_t'] / 100:.3f} -> {mine['clip_t'] / 100:.3f} ({d_t:+.3f})", None)
        d_c = content[a_label] - content[base_name]
        check(f"{s}: content clip_t (scene words only) loses <= 0.05",
              f"{content[base_name]:.3f} -> {content[a_label]:.3f} ({d_c:+.3f}; "
              f"within ±0.05: {'yes' if abs(d_c) <= 0.05 else 'no'})", d_c >= -0.05)
        ref_c = data_content(name)
        check(f"{s}: the same for its dataset's own images, against plain's",
              f"{plain_content:.3f} -> {ref_c:.3f} ({ref_c - plain_content:+.3f}: what the style itself costs)", None)

    for pair in [p for p in args.sweep.split(",") if p]:
        a, b = pair.split(":")
        if a not in styles or b not in styles:
            continue
        print(f"4. mix sweep {a} -> {b}, {args.sweep_n} images per weight", flush=True)
        sw = probe_sweep(probe_sets, f"bench/{a}", f"bench/{b}", n=args.sweep_n, seed=3, steps=GEN["steps"], guidance=GEN["guidance"],
                         clip="tiny", registry=reg)
        shares = " ".join(f"{c['share'][sw['a_class']]:.2f}" for c in sw["cells"])
        check(f"share for {a} along the sweep", shares, None)
        check(f"Spearman(B weight, share {a}) (<= -0.9)", f"{sw['spearman_a']:+.3f}", sw["spearman_a"] <= -0.9)
        print(f"  chart: {sw['chart']}", flush=True)
    print(f"done in {time.time() - t_all:.0f} s; {failures} figure(s) missed their target", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
