"""The built-in tiny base: Stable Diffusion 1.5's architecture at toy size, built from code.

Every component has SD-1.5's layout (UNet2DConditionModel with cross-attention down/up blocks
and a plain block, AutoencoderKL with 8x downsampling and 4 latent channels, CLIPTextModel with
77 positions, a CLIP-format BPE tokenizer, SD-1.5's DDIM schedule) but few channels, so it builds
in seconds and renders a 64 px image on a CPU in well under a second. Its weights ship with
styler (styler/models/tiny_world/, checked by sha256 against manifest.json): styler's own recipe
(styler/models/pretrain.py) pretrained them on the built-in world (styler/data/synth/world.py):
the VAE on all world styles, the UNet on plain-style scenes ("a red circle on a blue background")
with caption dropout, the text encoder as the tiny CLIP's text tower. So tiny follows simple
prompts and a LoRA trained on a style visibly moves it there. The folder is written with
`save_pretrained`, so it loads through the same `from_pretrained` path as a real model, and two
builds are byte-identical. Pictures from tiny are comparable only within the built-in world.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

TINY_VERSION = "4"  # 1: random weights (styler <= 0.1 sessions 1-15); 2: first world pretraining; 3: aux-head CLIP,
# longer VAE and UNet; 4: a UNet twice as wide at 8x8 and 4x4 (64, 128, 128 channels), stored in float16 (the
# CLIP's later robustness part left its text tower, this base's text encoder, unchanged: still 4)
MARKER = "styler_tiny.json"
WEIGHTS = Path(__file__).with_name("tiny_world")  # the shipped weights and their manifest
_SEED_LOCK = threading.Lock()  # seeding uses torch's global RNG: one builder thread at a time

# SD-1.5 values; the trainer makes its DDPMScheduler from the same numbers.
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

# The text encoder is the tiny CLIP's text tower (see styler.models.pretrain), so the UNet's
# cross-attention width is the text encoder's hidden size, as in SD-1.5 (768 = CLIP ViT-L/14's).
TEXT_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}

UNET_CONFIG = {
    "sample_size": 8,  # latents: 64 px / 8
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (64, 128, 128),  # v3's (32, 64, 128) drew softer: see benchmarks/README.md
    "layers_per_block": 1,
    "attention_head_dim": 8,
    "cross_attention_dim": TEXT_CONFIG["hidden_size"],
    "norm_num_groups": 32,
    "act_fn": "silu",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
}

VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,  # three downsamples: 8x
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (16, 32, 64, 64),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 16,
    "sample_size": 64,
    "scaling_factor": 0.18215,  # the pretrained VAE's measured factor replaces it (manifest.json)
}


def manifest() -> dict:
    """The shipped weights' manifest (recipe, configs, file hashes, the pretraining's figures)."""
    path = WEIGHTS / "manifest.json"
    if not path.is_file():
        from ..errors import ModelNotFound

        raise ModelNotFound(f"the tiny base's weights are missing from the installed package ({WEIGHTS}); "
                            "reinstall styler (pip install -e . from a checkout with its styler/models/tiny_world)")
    return json.loads(path.read_text("utf-8"))


def shipped_state(name: str) -> dict:
    """The state dict of one shipped component ("clip", "vae" or "unet"), after checking its
    sha256 against the manifest: a damaged install stops here with one line."""
    import hashlib

    from safetensors.torch import load

    from ..errors import InputError

    entry = manifest()["files"][name]
    path = WEIGHTS / entry["file"]
    data = path.read_bytes() if path.is_file() else b""
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise InputError(f"{path} is {'damaged' if data else 'missing'} (sha256 {digest[:12]}, the manifest "
                         f"says {entry['sha256'][:12]}); reinstall styler")
    return load(data)


def tiny_dir(home: str | os.PathLike) -> Path:
    """Where the tiny base lives inside a styler home."""
    return Path(home) / "models" / "tiny" / TINY_VERSION


def is_built(folder: str | os.PathLike) -> bool:
    """True when `folder` holds a complete tiny build (the marker is written last)."""
    return (Path(folder) / MARKER).is_file() and (Path(folder) / "model_index.json").is_file()


def _components(seed: int | None, tokenizer_dir: Path):
    """The five components: the shipped pretrained weights (seed None) or random ones from `seed`."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from .tokenizer import special_ids, vocab_size

    text_config = CLIPTextConfig(vocab_size=vocab_size(), **special_ids(), **TEXT_CONFIG)
    if seed is None:  # the weights' own configs (the manifest's), so a retrained size loads as it was trained
        configs = manifest()["configs"]
        unet = UNet2DConditionModel(**{**UNET_CONFIG, **configs["unet"]})
        unet.load_state_dict(shipped_state("unet"))
        vae = AutoencoderKL(**{**VAE_CONFIG, **configs["vae"]})
        vae.load_state_dict(shipped_state("vae"))
        text_encoder = CLIPTextModel(text_config)
        clip = shipped_state("clip")
        text_encoder.load_state_dict({k[len("text_model."):]: v for k, v in clip.items() if k.startswith("text_model.")})
    else:
        with _SEED_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = UNet2DConditionModel(**UNET_CONFIG)
            torch.manual_seed(seed + 1)
            vae = AutoencoderKL(**VAE_CONFIG)
            torch.manual_seed(seed + 2)
            text_encoder = CLIPTextModel(text_config)
    for module in (unet, vae, text_encoder):
        module.eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    scheduler = DDIMScheduler(**SCHEDULER_CONFIG)
    return unet, vae, text_encoder, tokenizer, scheduler


def build_tiny(dest: str | os.PathLike, seed: int | None = None) -> Path:
    """Build the tiny pipeline into `dest` (atomically) and return it: the shipped pretrained
    weights, or (`seed` an int) random ones, for tests of architecture-only behaviour.

    Everything is written into a temporary folder beside `dest`, which is renamed into place
    at the end; if another builder got there first, its complete build is kept."""
    from .load import quiet

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.build-", dir=dest.parent))
    try:
        with quiet():
            _save(tmp, seed)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        _commit(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _save(tmp: Path, seed: int | None) -> None:
    from diffusers import StableDiffusionPipeline

    from .tokenizer import write_tokenizer

    tok_dir = write_tokenizer(tmp / "tokenizer")
    unet, vae, text_encoder, tokenizer, scheduler = _components(seed, tok_dir)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    # keep exactly the four files SD-1.5 ships (save_pretrained adds its own variants)
    shutil.rmtree(tmp / "tokenizer")
    write_tokenizer(tmp / "tokenizer")
    if seed is None:
        marker = {"name": "tiny", "version": TINY_VERSION, "weights": "pretrained",
                  "manifest_sha256": {k: v["sha256"] for k, v in manifest()["files"].items()},
                  "note": "SD-1.5's architecture at toy size, pretrained by styler on its built-in world "
                          "(styler/data/synth/world.py, recipe styler/models/pretrain.py)"}
    else:
        marker = {"name": "tiny", "version": TINY_VERSION, "weights": "random", "seed": seed,
                  "note": "toy SD-1.5 architecture with random weights (tests)"}
    (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", "utf-8")


def _commit(tmp: Path, dest: Path) -> None:
    try:
        os.replace(tmp, dest)
        return
    except OSError:
        if is_built(dest):
            return  # a concurrent builder finished first; same bytes, keep theirs
    # an incomplete leftover (crash mid-build in an old version): move it aside, then retry
    stale = Path(tempfile.mkdtemp(prefix=f".{dest.name}.stale-", dir=dest.parent))
    os.replace(dest, stale / "old")
    shutil.rmtree(stale, ignore_errors=True)
    os.replace(tmp, dest)


def ensure_tiny(home: str | os.PathLike | None = None) -> Path:
    """The tiny base's folder in `home` (default: styler's home), built on first use."""
    from filelock import FileLock

    if home is None:
        from ..config import home as styler_home

        home = styler_home()
    folder = tiny_dir(home)
    if is_built(folder):
        return folder
    locks = Path(home) / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / "tiny.lock")):
        if not is_built(folder):
            build_tiny(folder)
            retire_old_versions(home)
    return folder


def retire_old_versions(home: str | os.PathLike) -> list[str]:
    """Remove builds of earlier tiny versions (derived files, rebuilt by no current code):
    models/tiny/<old>/ and their hash-cache lines. Adapters trained on them stay registered and
    are refused at use with the retrain command (see styler.adapters.library.check_base)."""
    root = Path(home) / "models" / "tiny"
    gone = []
    for old in sorted(root.glob("*")) if root.is_dir() else []:
        if old.name != TINY_VERSION and not old.name.startswith(".") and (old / MARKER).is_file():
            shutil.rmtree(old, ignore_errors=True)
            gone.append(old.name)
    return gone
