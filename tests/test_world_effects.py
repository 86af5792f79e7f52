"""Effects, not only execution, on the pretrained tiny base: a LoRA trained with the demo's
settings lowers the diffusion loss on its style (which the base never saw) and one that learned
nothing does not; its pictures read as its style to the probe and move style_sim up, against the
baseline on the same prompts and seeds; a mix sweep from one LoRA to another moves the probe's
shares from the first style to the second; the base follows the colour in its prompt far more
often than chance. These fail if training, its loss, mixing, scoring or the base's conditioning broke.
benchmarks/tiny_world.py measures the same effects at full size against issue 11's targets."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow

from styler.demo import TRAIN as SETTINGS  # the demo's LoRA settings (150 steps at 64 px, ~12 s each)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_base_dir):
    """A home with world datasets (plain, pixel, watercolor, stripes) and LoRAs on the three styles
    with the demo's settings, plus a control LoRA on pixel trained with a learning rate too small
    to learn anything."""
    from registry import Registry
    from styler.data.library import synth_dataset
    from styler.train.config import build_config
    from styler.train.trainer import train

    from tests.helpers import home_env, link_tiny

    home = tmp_path_factory.mktemp("world") / "home"
    with home_env(home):
        link_tiny(home, tiny_base_dir)
        reg = Registry()
        for style, trigger in (("plain", ""), ("pixel", "pxl"), ("watercolor", "wtrc"), ("stripes", "strp")):
            synth_dataset(f"w/{style}", kind=f"world-{style}", n=16, size=64, seed=1, trigger=trigger, registry=reg)
        for style in ("pixel", "watercolor", "stripes"):
            train(build_config(dataset=f"w/{style}", name=f"w/{style}", **SETTINGS), registry=reg, console=None)
        train(build_config(dataset="w/pixel", name="w/control", **{**SETTINGS, "lr": 1e-9, "steps": 20}),
              registry=reg, console=None)
    return home


@pytest.fixture
def world_home(world, monkeypatch):
    monkeypatch.setenv("STYLER_HOME", str(world))
    return world


def _scores(name):
    from styler.eval.run import evaluate

    r = evaluate(name, n=12, seed=50, metrics="clip_t,style_sim", steps=12)
    mine = next(k for k in r["scores"] if not k.startswith("baseline"))
    base = next(k for k in r["scores"] if k.startswith("baseline"))
    return r, mine, base


def _denoising_loss(session, reg, dataset, choices):
    """The diffusion loss (epsilon MSE, fixed noise and timesteps) of the base with `choices`
    folded in, on a dataset's images and captions: what training minimises, measured after."""
    import torch

    from styler.models.pretrain import encode_prompts
    from styler.train.data import load_items

    from registry import Dataset

    session.apply(choices, reg)
    pipe = session.pipe
    d = reg.resolve(Dataset, dataset)
    items = load_items(d, reg.home, "all")
    from PIL import Image
    import numpy as np

    x = torch.stack([torch.from_numpy(np.asarray(Image.open(it.path).convert("RGB"), dtype=np.float32)).permute(2, 0, 1)
                     for it in items]) / 127.5 - 1
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
        cond = encode_prompts(pipe.text_encoder, pipe.tokenizer, [it.text for it in items])
        losses = []
        for _ in range(4):
            noise = torch.randn(z.shape, generator=g)
            t = torch.randint(50, 950, (len(z),), generator=g)
            zt = pipe.scheduler.add_noise(z, noise, t)
            losses.append(torch.nn.functional.mse_loss(pipe.unet(zt, t, encoder_hidden_states=cond).sample, noise))
    return float(torch.stack(losses).mean())


def _training_lowers_the_loss_on_the_style_and_a_lora_that_learned_nothing_does_not(world_home):
    from registry import Adapter, Registry
    from styler.generate.engine import AdapterChoice, Session

    reg = Registry()
    session = Session.open("tiny")
    for style in ("pixel", "watercolor"):
        before = _denoising_loss(session, reg, f"w/{style}", [])
        after = _denoising_loss(session, reg, f"w/{style}", [AdapterChoice(reg.resolve(Adapter, f"w/{style}"))])
        assert after < 0.85 * before, (style, before, after)  # the base never saw these styles
    before = _denoising_loss(session, reg, "w/pixel", [])
    control = _denoising_loss(session, reg, "w/pixel", [AdapterChoice(reg.resolve(Adapter, "w/control"))])
    assert abs(control - before) < 0.01 * before, (before, control)


def _a_lora_that_learned_nothing_renders_as_the_baseline(world_home):
    r, mine, base = _scores("w/control")
    s = r["scores"]
    assert abs(s[mine]["style_sim"] - s[base]["style_sim"]) < 0.005, s


SETS = ("w/plain", "w/pixel", "w/watercolor", "w/stripes")


def _a_lora_moves_its_pictures_to_its_style(world_home):
    from registry import Output, Registry
    from styler.eval.features import ClipFeatures, resolve_clip
    from styler.eval.probe import fit_probe, predict
    from styler.eval.run import dataset_images, output_images

    reg = Registry()
    feats = ClipFeatures.open(resolve_clip("tiny"))
    probe = fit_probe({d: feats.image_embeddings(dataset_images(d, reg)[1]) for d in SETS})
    # pixel art is left to the loss check above and to benchmarks/tiny_world.py: at this size (16 images,
    # 12 renders of 12 steps) tiny v4 measured pixel share 0.17 vs 0.08 and style_sim +0.004, within chance
    for style in ("watercolor", "stripes"):
        r, mine, base = _scores(f"w/{style}")
        share = {}
        for subject in (mine, base):
            images = output_images([reg.get(Output, i) for i in r["outputs"][subject]], reg)
            top = predict(probe, feats.image_embeddings(images)).argmax(1).tolist()
            share[subject] = sum(probe.classes[k] == f"w/{style}" for k in top) / len(top)
        # the demo's own table computes the same share (it once compared unversioned class names
        # with versioned labels and printed 0 % for every adapter)
        from styler.demo import _probe_shares

        demo_share = _probe_shares(reg, list(SETS), f"w/{style}", r["outputs"], None)
        assert demo_share[f"w/{style}"] == pytest.approx(share), (demo_share, share)
        s = r["scores"]
        # measured (2026-12-02, tiny v4): watercolor share 0.75 vs 0.58 (the soft base already looks a
        # little like watercolor), style_sim +0.091; stripes (a style nothing was pretrained on) 1.00 vs
        # 0.17, style_sim +0.428
        assert share[mine] >= share[base] + (0.5 if style == "stripes" else 0.0), (style, share)
        assert s[mine]["style_sim"] - s[base]["style_sim"] >= (0.2 if style == "stripes" else 0.05), (style, s)


def _a_mix_sweep_moves_from_one_style_to_the_other(world_home, tmp_path):
    """`styler eval probe --sweep`'s engine on two trained LoRAs: as the weight moves from stripes to
    watercolor, the probe's share for stripes falls and watercolor's rises. It fails if a mix ignored
    its weights (every cell the same), dropped the second adapter, or fitted the probe wrongly."""
    from registry import Registry
    from styler.eval.sweep import probe_sweep

    sw = probe_sweep(list(SETS), "w/stripes", "w/watercolor", n=8, seed=11, steps=12, guidance=5.0, clip="tiny",
                     registry=Registry(), out_dir=tmp_path)
    a = [c["share"][sw["a_class"]] for c in sw["cells"]]
    b = [c["share"][sw["b_class"]] for c in sw["cells"]]
    # measured (2026-12-06, tiny v4, these 16-image datasets): stripes 0.75 0.62 0.38 0.38 0.25 0.25 0.12,
    # Spearman -0.98; watercolor 0.00 0.00 0.25 0.25 0.25 0.50 0.62. With each mix's weights set to 1 the
    # shares stay 1.00 / 0.00 in every cell (no Spearman); with the second adapter dropped watercolor
    # ends at 0.00
    assert a[0] >= 0.6 and a[-1] <= a[0] - 0.4, (a, b)
    assert b[-1] >= b[0] + 0.25, (a, b)
    assert sw["spearman_a"] is not None and sw["spearman_a"] <= -0.8, (sw["spearman_a"], a)  # nan fails too


def _the_base_follows_the_colour_in_its_prompt(world_home):
    import torch
    import torch.nn.functional as F
    from transformers import CLIPTokenizer

    from registry import Registry
    from styler.data.synth import world
    from styler.eval.features import ClipFeatures, resolve_clip
    from styler.eval.run import output_images
    from styler.generate.engine import Session
    from styler.generate.service import Request, generate
    from styler.models.pretrain import text_embeds

    reg = Registry()
    ref = resolve_clip("tiny")
    feats = ClipFeatures.open(ref)
    tok = CLIPTokenizer.from_pretrained(str(ref.path))
    session = Session.open("tiny")
    scenes = world.scenes(8, seed=91)
    outs = []
    for i, s in enumerate(scenes):
        outs += generate(Request(prompt=s.caption(), seed=i, steps=12, guidance=5.0, width=64, height=64),
                         registry=reg, session=session)
    emb = F.normalize(feats.image_embeddings(output_images(outs, reg)).float(), dim=-1)
    with torch.no_grad():
        t = tok([f"a {c} shape" for c in world.COLOUR_NAMES], padding=True, return_tensors="pt")
        colours = F.normalize(text_embeds(feats.model, t.input_ids, t.attention_mask), dim=-1)
    picked = (emb @ colours.T).argmax(1).tolist()
    hits = sum(world.COLOUR_NAMES[k] == s.colour for k, s in zip(picked, scenes))
    # measured 8 of 8 with tiny v3 (chance: 1 in 8; benchmarks/tiny_world.py: 91 % of 64)
    assert hits >= 6, [(world.COLOUR_NAMES[k], s.colour) for k, s in zip(picked, scenes)]


def test_the_world_shows_learning_and_measuring(world_home, tmp_path):
    # one test, so that under pytest-xdist one worker builds the trained world (two demo-settings
    # LoRAs and a control, ~100 s) instead of each worker building its own copy at the same time
    _training_lowers_the_loss_on_the_style_and_a_lora_that_learned_nothing_does_not(world_home)
    _a_lora_that_learned_nothing_renders_as_the_baseline(world_home)
    _a_lora_moves_its_pictures_to_its_style(world_home)
    _a_mix_sweep_moves_from_one_style_to_the_other(world_home, tmp_path)
    _the_base_follows_the_colour_in_its_prompt(world_home)
