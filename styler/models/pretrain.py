"""Pretraining the built-in world's models: the tiny CLIP, the tiny VAE and the tiny UNet.

The recipe (what ships in ``styler/models/tiny_world/``, with its figures in manifest.json):

1. **Tiny CLIP** (transformers' ``CLIPModel`` at toy size: ViT 64 px / patch 8, a 3-layer text
   tower) is trained contrastively on world images of the four world styles, with captions that
   name a random subset of colour+shape, background and style ("a red circle", "on a blue
   background, pixel art", "a circle", ...), so every attribute gets its own direction. Equal
   captions in a batch are positives of each other (soft targets), not negatives. Contrastive loss
   alone learns colour and style within a few hundred steps but shape hardly at all (2000 steps:
   28 %, chance 25 %), so linear heads on the image embedding classify shape, colour, background
   and style alongside it during training (shape weighted 2x) and are then dropped. Its second
   part (``robust_vision``) trains the vision tower alone for 600 more steps with half of each
   batch softened (blur, resampling, noise: what a VAE and a small denoiser lose), so styles are
   read from palette, outline and texture rather than pixel-exact sharpness: without it, the
   probe called 40 % of the VAE's own pixel-art reconstructions "plain".
2. **Text encoder** of the base is the tiny CLIP's text tower, as SD-1.5's is CLIP ViT-L/14's:
   a trained text encoder gives the UNet conditioning in which colour, background and style words
   are separate; a frozen random encoder would also be injective, but text-encoder LoRA would then
   train on meaningless features. It stays frozen after stage 1.
3. **VAE** (diffusers' ``AutoencoderKL``, SD-1.5's layout: 8x down, 4 latent channels) is trained as
   an autoencoder on all five world styles (stripes too: like SD's VAE it should encode any
   picture; only the UNet and the CLIP never see stripes) with L1 + MSE + an edge term and KL
   1e-6, and its ``scaling_factor`` is set to 1 / std of its latents, as SD's was.
4. **UNet** (``UNet2DConditionModel``, SD-1.5's block layout) is trained as an epsilon-prediction
   denoiser on plain-style latents with SD-1.5's noise schedule and min-SNR-5 loss weighting,
   conditioned on the frozen text encoder's last hidden states over 77 tokens (the pipeline's own
   encoding), with 10 % of captions dropped to "" so classifier-free guidance works. An EMA of its
   weights is what ships, in float16 (tiny v4's UNet is twice v3's width at 8x8 and 4x4, and the
   package keeps its weights within 25 MB).

Everything is seeded: the same code, seed and thread count give the same numbers on the same
machine. ``python -m styler.models.pretrain OUT [--quick] [--reuse] [--threads N]`` runs it;
``--quick`` is a few steps of each stage (the test), ``--reuse`` keeps stages already in OUT whose
part of the recipe is unchanged (and trains all of them again if the world draws or names
anything otherwise: the manifest keeps a fingerprint of its pictures and words; a CLIP trained
before the robustness part existed keeps its contrastive part, and the UNet is reused while the
text tower is the same bit for bit). The whole recipe ran from
scratch in 2,971 s (49.5 minutes) of 2 CPU cores on 2026-12-02 (CLIP 481 s, VAE 866 s, UNet
1,622 s); the machines differ by up to half from day to day, so on a slow one it takes about 75
(the manifest has each stage's seconds; on a GPU, minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data.synth import world

SIZE = 64  # pixels; latents are SIZE / 8


@dataclass
class Recipe:
    seed: int = 0
    clip_images: int = 4000  # per world style
    clip_steps: int = 2200
    clip_batch: int = 128
    clip_lr: float = 1e-3
    clip_aux: float = 1.0  # weight of each auxiliary attribute head (colour, background, style)
    clip_aux_shape: float = 2.0  # the shape head's weight (shape is what contrastive loss learns last)
    clip_robust_steps: int = 600  # then the vision tower alone, also on softened copies (robust_vision)
    clip_robust_lr: float = 3e-4
    clip_robust_share: float = 0.5  # of each batch's images softened
    vae_images: int = 1500  # per world style
    vae_steps: int = 4000
    vae_batch: int = 16
    vae_lr: float = 6e-4
    unet_images: int = 20000
    unet_steps: int = 4500
    unet_batch: int = 64
    unet_lr: float = 8e-4
    unet_min_snr: float = 5.0  # min-SNR-gamma loss weighting (Hang et al. 2023); 0 = plain MSE
    caption_dropout: float = 0.1
    ema: float = 0.999

    @classmethod
    def quick(cls) -> Recipe:
        return cls(clip_images=32, clip_steps=3, clip_batch=16, clip_robust_steps=2, vae_images=8, vae_steps=2,
                   vae_batch=4, unet_images=32, unet_steps=3, unet_batch=8)


# ---------------------------------------------------------------- configs (SD-1.5 layout, toy size)
# One home each: the base's in styler.models.tiny, the CLIP's in styler.eval.features.

def _configs():
    from ..eval.features import TINY_PROJECTION, TINY_VISION
    from .tiny import TEXT_CONFIG, UNET_CONFIG, VAE_CONFIG

    return TEXT_CONFIG, TINY_VISION, TINY_PROJECTION, UNET_CONFIG, VAE_CONFIG


# ---------------------------------------------------------------- data


def world_images(n_per_style: int, styles, seed: int) -> tuple[np.ndarray, list, list[str]]:
    """uint8 [N, S, S, 3], the scenes and the styles, styles interleaved."""
    imgs, scs, sts = [], [], []
    for i, style in enumerate(styles):
        arr, sc = world.batch(n_per_style, style, size=SIZE, seed=seed * 1000 + i)
        imgs.append(arr)
        scs += sc
        sts += [style] * len(sc)
    return np.concatenate(imgs), scs, sts


def partial_caption(scene, style: str, rng: random.Random) -> str:
    """A caption naming a random non-empty subset of the scene's attributes and its style."""
    if rng.random() < 0.2:  # the shape alone: captions that differ only in the shape teach it
        return f"{world._article(scene.shape)} {scene.shape}"
    while True:
        what = rng.random() < 0.8
        colour = rng.random() < 0.75
        bg = rng.random() < 0.6
        st = style != "plain" and rng.random() < 0.8 or style == "plain" and rng.random() < 0.3
        if what or bg or st:
            break
    parts = []
    if what:
        noun = scene.shape if rng.random() < 0.9 else "shape"
        if colour:
            parts.append(f"{world._article(scene.colour)} {scene.colour} {noun}")
        else:
            parts.append(f"{world._article(noun)} {noun}")
    if bg:
        parts.append(f"on {world._article(scene.background)} {scene.background} background")
    text = " ".join(parts)
    if st:
        text = f"{text}, {world.STYLE_WORDS[style]}" if text else world.STYLE_WORDS[style]
    return text


def set_lr(opt, base: float, step: int, total: int, *, warmup: int, floor: float) -> None:
    """Linear warm-up over `warmup` steps, then cosine from `base` down to `floor` x `base`."""
    cosine = 0.5 * (1 + math.cos(math.pi * step / total))
    lr = base * min(1.0, (step + 1) / warmup) * (floor + (1 - floor) * cosine)
    for group in opt.param_groups:
        group["lr"] = lr


def _to_pixels(arr: np.ndarray):
    import torch

    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


# ---------------------------------------------------------------- stage 1: CLIP


def clip_config():
    from ..eval.features import tiny_clip_config

    return tiny_clip_config()


def clip_pixels(arr: np.ndarray):
    """CLIP preprocessing for world-size images (already SIZE px: no resize, no crop)."""
    import torch

    from ..eval.features import CLIP_MEAN, CLIP_STD

    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def clip_world(recipe: Recipe):
    """Stage 1's pictures, scenes and styles (both of its parts train on them)."""
    return world_images(recipe.clip_images, world.WORLD_STYLES, recipe.seed + 11)


def _attribute_heads(scs, sts, dim: int):
    """Each image's shape, colour, background and style index, and a fresh linear head per attribute."""
    import torch

    labels = {
        "shape": torch.tensor([world.SHAPES.index(s.shape) for s in scs]),
        "colour": torch.tensor([world.COLOUR_NAMES.index(s.colour) for s in scs]),
        "background": torch.tensor([world.COLOUR_NAMES.index(s.background) for s in scs]),
        "style": torch.tensor([world.WORLD_STYLES.index(s) for s in sts]),
    }
    return labels, torch.nn.ModuleDict({k: torch.nn.Linear(dim, int(v.max()) + 1) for k, v in labels.items()})


def _clip_loss(raw, txt, scale, caps: list[str], idx: list[int], labels, heads, recipe: Recipe):
    """Contrastive loss of image embeddings `raw` against normalised text embeddings `txt` (equal
    captions are positives of each other), plus the attribute heads' cross-entropy."""
    import torch
    import torch.nn.functional as F

    img = F.normalize(raw, dim=-1)
    logits = scale * img @ txt.T
    same = torch.tensor([[a == b for b in caps] for a in caps], dtype=torch.float32)
    target = same / same.sum(1, keepdim=True)
    # an image is also a positive of every caption it satisfies exactly (same caption text)
    loss = 0.5 * (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.log_softmax(0)).sum(0).mean())
    if recipe.clip_aux or recipe.clip_aux_shape:
        at = torch.tensor(idx)
        weight = {"shape": recipe.clip_aux_shape}
        loss = loss + sum(weight.get(k, recipe.clip_aux) * F.cross_entropy(h(raw), labels[k][at]) for k, h in heads.items())
    return loss


def _optimizer_step(opt, loss, params) -> None:
    """Backward, clip the gradients' norm to 1, step."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def train_clip(recipe: Recipe, tokenizer, log):
    import torch
    import torch.nn.functional as F
    from transformers import CLIPModel

    torch.manual_seed(recipe.seed)
    model = CLIPModel(clip_config())
    arr, scs, sts = clip_world(recipe)
    pixels_all = clip_pixels(arr)
    # Auxiliary heads: a linear classifier per attribute on the image embedding, trained with it and
    # then dropped. Contrastive loss alone learns colour and style in a few hundred steps but shape
    # barely at all (colour explains most of a batch's captions); the heads give shape its gradient.
    labels, heads = _attribute_heads(scs, sts, model.config.projection_dim)
    params = list(model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.clip_lr, weight_decay=0.05, betas=(0.9, 0.98))
    rng = random.Random(recipe.seed)
    n = len(scs)
    model.train()
    t0 = time.time()
    for step in range(recipe.clip_steps):
        set_lr(opt, recipe.clip_lr, step, recipe.clip_steps, warmup=100, floor=0.0)
        idx = [rng.randrange(n) for _ in range(recipe.clip_batch)]
        caps = [partial_caption(scs[i], sts[i], rng) for i in idx]
        tok = tokenizer(caps, padding="longest", truncation=True, max_length=77, return_tensors="pt")
        pix = pixels_all[idx]
        if rng.random() < 0.5:
            pix = pix.flip(-1)  # left-right: no attribute of the world depends on it
        raw = image_embeds(model, pix)
        txt = F.normalize(text_embeds(model, tok.input_ids, tok.attention_mask), dim=-1)
        scale = model.logit_scale.exp().clamp(max=100)
        loss = _clip_loss(raw, txt, scale, caps, idx, labels, heads, recipe)
        _optimizer_step(opt, loss, params)
        if step % 50 == 0 or step == recipe.clip_steps - 1:
            log(f"clip {step:5d}/{recipe.clip_steps} loss {loss.item():.3f} scale {scale.item():.1f} {time.time() - t0:.0f}s")
    model.eval()
    del pixels_all  # robust_vision makes its own (0.8 GB at the recipe's size): not two at once
    if recipe.clip_robust_steps:
        robust_vision(model, recipe, tokenizer, arr, scs, sts, log)
    return model


def _blur(x, sigma: float):
    """Separable Gaussian blur of [B, C, H, W] (edges replicated)."""
    import torch
    import torch.nn.functional as F

    r = max(1, int(3 * sigma + 0.5))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def soften(x, rng: random.Random):
    """One of the ways a generated picture is softer than its data, picked by `rng`: a Gaussian
    blur (sigma 0.5-1.3 px), a bilinear resample through 50-75 % of the size, or a light blur with
    noise. What an 8x VAE and a small denoiser lose is this kind of fine detail."""
    import torch
    import torch.nn.functional as F

    kind = rng.randrange(3)
    if kind == 0:
        return _blur(x, rng.uniform(0.5, 1.3))
    if kind == 1:
        side = x.shape[-1]
        small = int(side * rng.choice((0.5, 0.625, 0.75)))
        down = F.interpolate(x, size=(small, small), mode="bilinear", antialias=True, align_corners=False)
        return F.interpolate(down, size=(side, side), mode="bilinear", align_corners=False)
    g = torch.Generator().manual_seed(rng.randrange(2 ** 31))
    y = _blur(x, rng.uniform(0.4, 0.9))
    return y + rng.uniform(0.02, 0.08) * torch.randn(y.shape, generator=g)


def robust_vision(model, recipe: Recipe, tokenizer, arr, scs, sts, log) -> None:
    """Stage 1's second part: train the vision tower (and its projection) alone for
    `clip_robust_steps`, with `clip_robust_share` of each batch's images softened (`soften`), so
    that the CLIP reads a picture's style from its palette, outlines, texture and layout rather
    than from pixel-exact sharpness. Every generated picture is softer than the data (the VAE's
    reconstructions of pixel art lose its 4 px cells), and before this the probe called 40 % of
    the VAE's own pixel-art reconstructions "plain". The text tower, its projection and the
    temperature stay frozen: the base's text encoder is that tower, so it is unchanged
    bit for bit."""
    import torch
    import torch.nn.functional as F

    pixels_all = clip_pixels(arr)
    torch.manual_seed(recipe.seed + 5)
    labels, heads = _attribute_heads(scs, sts, model.config.projection_dim)
    model.requires_grad_(False)
    tower = list(model.vision_model.parameters()) + list(model.visual_projection.parameters())
    for p in tower:
        p.requires_grad_(True)
    params = tower + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.clip_robust_lr, weight_decay=0.05, betas=(0.9, 0.98))
    rng = random.Random(recipe.seed + 5)
    n, batch = len(scs), recipe.clip_batch
    soft = int(round(batch * recipe.clip_robust_share))
    model.vision_model.train()
    t0 = time.time()
    for step in range(recipe.clip_robust_steps):
        set_lr(opt, recipe.clip_robust_lr, step, recipe.clip_robust_steps, warmup=50, floor=0.0)
        idx = [rng.randrange(n) for _ in range(batch)]
        caps = [partial_caption(scs[i], sts[i], rng) for i in idx]
        tok = tokenizer(caps, padding="longest", truncation=True, max_length=77, return_tensors="pt")
        pix = pixels_all[idx]
        if rng.random() < 0.5:
            pix = pix.flip(-1)
        if soft:
            pix = torch.cat([soften(pix[:soft], rng), pix[soft:]])
        raw = image_embeds(model, pix)
        with torch.no_grad():
            txt = F.normalize(text_embeds(model, tok.input_ids, tok.attention_mask), dim=-1)
        loss = _clip_loss(raw, txt, model.logit_scale.exp().clamp(max=100), caps, idx, labels, heads, recipe)
        _optimizer_step(opt, loss, params)
        if step % 50 == 0 or step == recipe.clip_robust_steps - 1:
            log(f"clip robust {step:5d}/{recipe.clip_robust_steps} loss {loss.item():.3f} {time.time() - t0:.0f}s")
    model.requires_grad_(True)
    model.eval()


def text_sha256(model) -> str:
    """sha256 of the text tower's tensors (what the base's text encoder is): the UNet was trained
    on these features, so it is reused only while they are the same bit for bit."""
    h = hashlib.sha256()
    for k, v in sorted(model.text_model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


@dataclass
class ZeroShot:
    colour: float
    shape: float
    style: float


def image_embeds(model, pixels):
    """Projected image embeddings (what styler's evaluation computes)."""
    return model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)


def text_embeds(model, input_ids, attention_mask):
    return model.text_projection(model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output)


def zero_shot(model, tokenizer, n_per_style: int = 64, seed: int = 987654, softened: bool = False) -> ZeroShot:
    """Held-out world images (another seed than training): accuracy of picking the right colour
    (the shape's), shape and style by prompt-ensembled text embeddings. `softened`: each image
    softened first (`soften`, seeded), as generated pictures are."""
    import torch
    import torch.nn.functional as F

    arr, scs, sts = world_images(n_per_style, world.WORLD_STYLES, seed)
    pixels = clip_pixels(arr)
    if softened:
        rng = random.Random(seed)
        pixels = torch.cat([soften(pixels[i:i + 1], rng) for i in range(len(pixels))])
    with torch.no_grad():
        img = F.normalize(image_embeds(model, pixels), dim=-1)

        def classes(prompts_for):
            embs = []
            for prompts in prompts_for:
                tok = tokenizer(prompts, padding="longest", return_tensors="pt")
                e = F.normalize(text_embeds(model, tok.input_ids, tok.attention_mask), dim=-1)
                embs.append(F.normalize(e.mean(0), dim=0))
            return torch.stack(embs)

        colour = classes([[f"{world._article(c)} {c} {s}" for s in world.SHAPES] for c in world.COLOUR_NAMES])
        shape = classes([[f"{world._article(c)} {c} {s}" for c in world.COLOUR_NAMES] + [f"a {s}"] for s in world.SHAPES])
        style = classes([[world.STYLE_WORDS[s]] for s in world.WORLD_STYLES])
    acc = lambda emb, truth, names: float(np.mean([names[i] == t for i, t in zip((img @ emb.T).argmax(1).tolist(), truth)]))
    # colour is judged where the style keeps the shape's colour readable (all four world styles do)
    return ZeroShot(colour=acc(colour, [s.colour for s in scs], world.COLOUR_NAMES),
                    shape=acc(shape, [s.shape for s in scs], world.SHAPES),
                    style=acc(style, sts, world.WORLD_STYLES))


# ---------------------------------------------------------------- stage 2: VAE


def train_vae(recipe: Recipe, log):
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL

    torch.manual_seed(recipe.seed + 1)
    VAE = _configs()[4]
    vae = AutoencoderKL(**VAE)
    arr, _, _ = world_images(recipe.vae_images, world.STYLES[:4] + ("stripes",), recipe.seed + 22)
    x_all = _to_pixels(arr)
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(recipe.seed + 2)
    vae.train()
    t0 = time.time()
    for step in range(recipe.vae_steps):
        set_lr(opt, recipe.vae_lr, step, recipe.vae_steps, warmup=50, floor=0.1)
        idx = torch.randint(len(x_all), (recipe.vae_batch,), generator=g)
        x = x_all[idx]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        mse = F.mse_loss(rec, x)
        edge = ((rec[..., 1:, :] - rec[..., :-1, :]) - (x[..., 1:, :] - x[..., :-1, :])).abs().mean() + \
               ((rec[..., 1:] - rec[..., :-1]) - (x[..., 1:] - x[..., :-1])).abs().mean()
        kl = post.kl().mean() / z[0].numel()
        loss = l1 + mse + 0.5 * edge + 1e-6 * kl * z[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == recipe.vae_steps - 1:
            log(f"vae {step:5d}/{recipe.vae_steps} l1 {l1.item():.4f} mse {mse.item():.4f} {time.time() - t0:.0f}s")
    vae.eval()
    with torch.no_grad():
        sample = x_all[torch.randperm(len(x_all), generator=g)[:512]]
        z = torch.cat([vae.encode(sample[i:i + 64]).latent_dist.mean for i in range(0, len(sample), 64)])
    vae.register_to_config(scaling_factor=round(float(1.0 / z.std()), 5))
    return vae


def vae_psnr(vae, n: int = 64, seed: int = 4242) -> dict:
    """Reconstruction PSNR (dB) per world style on held-out images."""
    import torch

    out = {}
    for i, style in enumerate(world.STYLES):
        arr, _ = world.batch(n, style, size=SIZE, seed=seed + i)
        x = _to_pixels(arr)
        with torch.no_grad():
            rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        mse = ((rec - x) / 2).pow(2).mean().item()
        out[style] = round(10 * math.log10(1 / max(mse, 1e-10)), 2)
    return out


# ---------------------------------------------------------------- stage 3: UNet


def encode_prompts(text_encoder, tokenizer, prompts: list[str]):
    """Last hidden states over 77 tokens, as StableDiffusionPipeline encodes a prompt."""
    import torch

    tok = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt")
    with torch.no_grad():
        return text_encoder(tok.input_ids)[0]


def unet_caption(scene, rng: random.Random, dropout: float) -> str:
    r = rng.random()
    if r < dropout:
        return ""
    if r < dropout + 0.15:  # partial prompts: the base should follow "a red circle" too
        return partial_caption(scene, "plain", rng).replace(", flat colors", "")
    return scene.caption()


def train_unet(recipe: Recipe, vae, text_encoder, tokenizer, log):
    import copy

    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from .tiny import SCHEDULER_CONFIG

    torch.manual_seed(recipe.seed + 3)
    unet = UNet2DConditionModel(**_configs()[3])
    ema = copy.deepcopy(unet).requires_grad_(False)
    arr, scs, _ = world_images(recipe.unet_images, ("plain",), recipe.seed + 33)
    with torch.no_grad():
        mean, std = [], []
        for i in range(0, len(arr), 256):
            post = vae.encode(_to_pixels(arr[i:i + 256])).latent_dist
            mean.append(post.mean)
            std.append(post.std)
        mean, std = torch.cat(mean), torch.cat(std)
    sf = vae.config.scaling_factor
    sched = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    alphas = sched.alphas_cumprod
    cache: dict[str, torch.Tensor] = {}

    def embed(caps):
        missing = [c for c in dict.fromkeys(caps) if c not in cache]
        if missing:
            for c, e in zip(missing, encode_prompts(text_encoder, tokenizer, missing)):
                cache[c] = e
        return torch.stack([cache[c] for c in caps])

    opt = torch.optim.AdamW(unet.parameters(), lr=recipe.unet_lr, weight_decay=0.01)
    rng = random.Random(recipe.seed + 3)
    g = torch.Generator().manual_seed(recipe.seed + 3)
    unet.train()
    t0 = time.time()
    for step in range(recipe.unet_steps):
        set_lr(opt, recipe.unet_lr, step, recipe.unet_steps, warmup=200, floor=0.05)
        idx = torch.randint(len(mean), (recipe.unet_batch,), generator=g)
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * sf
        if rng.random() < 0.5:
            z0 = z0.flip(-1)
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=g)
        zt = sched.add_noise(z0, noise, t)
        cond = embed([unet_caption(scs[i], rng, recipe.caption_dropout) for i in idx.tolist()])
        pred = unet(zt, t, encoder_hidden_states=cond).sample
        per = (pred - noise).pow(2).mean(dim=(1, 2, 3))
        if recipe.unet_min_snr:  # weight min(SNR, gamma) / SNR: less time on the nearly-clean steps
            snr = alphas[t] / (1 - alphas[t])
            per = per * snr.clamp(max=recipe.unet_min_snr) / snr
        loss = per.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = min(recipe.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - decay)
        if step % 100 == 0 or step == recipe.unet_steps - 1:
            log(f"unet {step:5d}/{recipe.unet_steps} loss {loss.item():.4f} {time.time() - t0:.0f}s")
    return ema.eval()


# ---------------------------------------------------------------- the whole recipe


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def world_fingerprint(n: int = 24) -> str:
    """sha256 of what the stages learn from: every style's pictures of `n` fixed scenes, their
    captions, and the world's words. Not world.py's own hash: a docstring, or the trigger's place in
    world.caption() (which no stage uses), leaves the weights valid; a changed pixel or word does not.
    The shipped manifest keeps it, and a test holds the code to it."""
    h = hashlib.sha256(repr((world.SHAPES, world.COLOURS, sorted(world.STYLE_WORDS.items()), world.STYLES)).encode())
    for i, style in enumerate(world.STYLES):
        for scene in world.scenes(n, seed=9000 + i):
            h.update(scene.caption().encode())
            h.update(world.render(scene, style, SIZE, 0).tobytes())
    return h.hexdigest()


def _save(module, path: Path, half: bool = False) -> dict:
    """Write `module`'s weights as safetensors; `half` stores floats as float16 (the UNet, to keep the
    package within its size budget; loading upcasts them into the float32 modules)."""
    from safetensors.torch import save_file

    state = {k: (v.half() if half and v.is_floating_point() else v).detach().contiguous().clone()
             for k, v in module.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    # one metadata key: safetensors writes a metadata map in no fixed order, so with two keys the
    # same tensors gave files of different sha256 from run to run
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return {"file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size,
            "dtype": "float16" if half else "float32"}


def _json(config, drop: str = ""):
    """A config as the manifest stores it (tuples as lists), without the `drop` key, for comparing."""
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if k != drop}
    return json.loads(json.dumps(config))


def _load(module, path: Path):
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(path)))
    return module.eval()


def pretrain(out: str | os.PathLike, recipe: Recipe | None = None, log=print, reuse: bool = False,
             figures_n: int = 64) -> dict:
    """Run the recipe; write clip/vae/unet safetensors and manifest.json into `out`.

    Each stage's weights are written as soon as it ends; with `reuse`, a stage whose file is
    already in `out` (from an earlier run of the same recipe) is loaded instead of trained."""
    import shutil

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from .tokenizer import special_ids, vocab_size, write_tokenizer

    TEXT, VISION, PROJECTION, UNET, VAE = _configs()
    recipe = recipe or Recipe()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    old = {}
    if reuse and (out / "manifest.json").is_file():
        old = json.loads((out / "manifest.json").read_text("utf-8"))
    world_code = world_fingerprint()  # the pictures and words every stage trains on
    if old and old.get("world_fingerprint") != world_code and not (
            "world_fingerprint" not in old and old.get("world_sha256") == sha256(Path(world.__file__))):
        log("reuse: the world (styler/data/synth/world.py) draws or names things otherwise than the one OUT was "
            "trained on; training every stage")
        old = {}

    current_configs = {"text": TEXT, "vision": VISION, "projection_dim": PROJECTION, "unet": UNET, "vae": VAE}

    def same(prefix: str, ignore: str | None = None) -> bool:  # reused only if its part of the recipe is unchanged
        before = old.get("recipe") or {}
        name = {"caption": "unet", "ema": "unet"}.get(prefix, prefix)
        entry = (old.get("files") or {}).get(name)
        if not entry or not (out / entry["file"]).is_file() or sha256(out / entry["file"]) != entry["sha256"]:
            return False
        sizes = {"clip": ("text", "vision", "projection_dim"), "vae": ("vae",), "unet": ("text", "unet")}[name]
        if any(_json(current_configs[k], drop="scaling_factor") != _json((old.get("configs") or {}).get(k), drop="scaling_factor")
               for k in sizes):
            return False  # the same recipe at another size (a changed config) is another stage
        return reuse and all(before.get(k) == v for k, v in asdict(recipe).items()
                             if (k.startswith(prefix) or k == "seed") and not (ignore and k.startswith(ignore)))
    t_all = time.time()
    tok_dir = write_tokenizer(out / ".tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    shutil.rmtree(tok_dir, ignore_errors=True)
    figures: dict = dict(old.get("figures", {})) if reuse else {}
    files: dict = {}

    def partial_manifest():
        manifest = {"name": "styler tiny world", "recipe": asdict(recipe), "world_fingerprint": world_code,
                    "configs": current_configs, "files": files, "figures": figures}  # --reuse compares configs
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", "utf-8")

    old_text = None  # the text tower the UNet in OUT was trained with
    old_clip = (old.get("files") or {}).get("clip")
    if old_clip and (out / old_clip["file"]).is_file() and sha256(out / old_clip["file"]) == old_clip["sha256"]:
        old_text = old_clip.get("text_sha256") or text_sha256(_load(CLIPModel(clip_config()), out / old_clip["file"]))
    t = time.time()
    if same("clip") and (out / "clip.safetensors").is_file():
        clip = _load(CLIPModel(clip_config()), out / "clip.safetensors")
        files["clip"] = {**old["files"]["clip"], "text_sha256": old_text}
        log("clip: reused")
    elif same("clip", ignore="clip_robust") and not (old.get("recipe") or {}).get("clip_robust_steps") \
            and recipe.clip_robust_steps:
        # OUT's CLIP is this recipe's contrastive part alone (trained before the robustness part
        # existed): keep it and run the robustness part on it; the text tower does not move
        clip = _load(CLIPModel(clip_config()), out / "clip.safetensors")
        log("clip: contrastive part reused; training its robustness part")
        arr, scs, sts = clip_world(recipe)
        robust_vision(clip, recipe, tokenizer, arr, scs, sts, log)
        figures["clip_robust_seconds"] = round(time.time() - t)
        files["clip"] = {**_save(clip, out / "clip.safetensors"), "text_sha256": text_sha256(clip)}
    else:
        clip = train_clip(recipe, tokenizer, log)
        figures["clip_seconds"] = round(time.time() - t)
        files["clip"] = {**_save(clip, out / "clip.safetensors"), "text_sha256": text_sha256(clip)}
    figures["clip_zero_shot"] = asdict(zero_shot(clip, tokenizer, n_per_style=figures_n))
    figures["clip_zero_shot_softened"] = asdict(zero_shot(clip, tokenizer, n_per_style=figures_n, softened=True))
    log(f"clip zero-shot {figures['clip_zero_shot']}, on softened images {figures['clip_zero_shot_softened']}")
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size(), **special_ids(), **TEXT))
    text_encoder.load_state_dict(clip.text_model.state_dict())
    text_encoder.eval().requires_grad_(False)  # not a file of its own: the base takes clip's text tower
    partial_manifest()

    t = time.time()
    if same("vae") and (out / "vae.safetensors").is_file() and "vae_scaling_factor" in figures:  # needs no CLIP
        vae = _load(AutoencoderKL(**{**VAE, "scaling_factor": figures["vae_scaling_factor"]}), out / "vae.safetensors")
        files["vae"] = old["files"]["vae"]
        log("vae: reused")
    else:
        vae = train_vae(recipe, log)
        figures["vae_seconds"] = round(time.time() - t)
        figures["vae_scaling_factor"] = float(vae.config.scaling_factor)
        files["vae"] = _save(vae, out / "vae.safetensors")
    vae.requires_grad_(False)
    figures["vae_psnr"] = vae_psnr(vae, n=figures_n)
    log(f"vae psnr {figures['vae_psnr']} scaling {figures['vae_scaling_factor']:.4f}")
    partial_manifest()

    t = time.time()
    # the UNet depends on the CLIP only through its text tower (robust_vision leaves that alone)
    text_same = old_text is not None and old_text == files["clip"]["text_sha256"]
    if text_same and same("vae") and same("unet") and same("caption") and same("ema") \
            and (out / "unet.safetensors").is_file() and "unet_seconds" in figures:
        files["unet"] = old["files"]["unet"]
        log("unet: reused")
    else:
        unet = train_unet(recipe, vae, text_encoder, tokenizer, log)
        figures["unet_seconds"] = round(time.time() - t)
        files["unet"] = _save(unet, out / "unet.safetensors", half=True)

    manifest = {
        "name": "styler tiny world",
        "recipe": asdict(recipe),
        "world_fingerprint": world_code,
        "configs": {"text": TEXT, "vision": VISION, "projection_dim": PROJECTION, "unet": UNET,
                    "vae": {**VAE, "scaling_factor": figures["vae_scaling_factor"]}},
        "files": files,
        "figures": figures,
        "seconds": round(time.time() - t_all),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", "utf-8")
    log(f"wrote {out} in {manifest['seconds']} s")
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m styler.models.pretrain", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder to write the weights and manifest.json into")
    ap.add_argument("--quick", action="store_true", help="a few steps of each stage (to test the code)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 on a busy machine)")
    ap.add_argument("--reuse", action="store_true", help="load stages already in OUT (same recipe) instead of training them")
    for field in ("clip_steps", "vae_steps", "unet_steps", "clip_images", "vae_images", "unet_images"):
        ap.add_argument("--" + field.replace("_", "-"), type=int)
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    recipe = Recipe.quick() if args.quick else Recipe()
    recipe.seed = args.seed
    for field in ("clip_steps", "vae_steps", "unet_steps", "clip_images", "vae_images", "unet_images"):
        if getattr(args, field) is not None:
            setattr(recipe, field, getattr(args, field))
    pretrain(args.out, recipe, log=lambda s: print(s, flush=True), reuse=args.reuse)
    return 0


if __name__ == "__main__":
    sys.exit(main())
