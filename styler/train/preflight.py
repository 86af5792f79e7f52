"""Checks against the base model that run before a training run writes anything.

The base's files are checked (weights present, safetensors headers whole, configs readable) and
its UNet and VAE are built from their configs on the meta device: no weights are read and no
arithmetic is done, yet a forward pass there fails exactly where a real one would on shapes. That
tells whether a resolution fits the architecture (the tiny base's UNet, for one, cannot take
latents smaller than 3×3: a GroupNorm of its second block would see one value per group) and
which layers `--targets` reaches and how wide they are (a LoRA update of a layer has at most the
rank of its weight matrix, so a higher --rank only makes the file bigger). The scheduler's
prediction type must be one the loss knows, and a textual-inversion token must be new to the
base's tokenizer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, UsageError
from .config import TEXT_TARGETS, TrainConfig

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")  # what the trainer's loss_target knows


@dataclass
class BaseLayout:
    """What a base's configs say, with its UNet and VAE built on the meta device (no weights)."""

    name: str
    folder: Path  # where the configs and tokenizer are (a single file's config folder)
    unet: object
    vae: object
    text_hidden: int
    prediction_type: str

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def native(self) -> int:
        size = self.unet.config.sample_size
        return int(size if isinstance(size, int) else size[0]) * self.vae_scale


def _config(folder: Path, rel: str, base_name: str) -> dict:
    path = folder / rel
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise InputError(f"base model {base_name!r} has no {rel} ({path}); it is not a complete diffusers pipeline") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"base model {base_name!r}: {path} is unreadable ({type(exc).__name__}); "
                         "re-download or rebuild the model") from None
    if not isinstance(data, dict):
        raise InputError(f"base model {base_name!r}: {path} is not a JSON object")
    return data


def inspect_base(base) -> BaseLayout:
    """Check the base's files and build its layout; one InputError/ModelNotFound line otherwise."""
    from ..models.load import check_folder, find_single_file_config
    from ..models.resolve import safetensors_header

    if base.kind == "single_file":
        safetensors_header(Path(base.path))  # a pickle renamed .safetensors stops here
        folder = find_single_file_config()
    else:
        check_folder(Path(base.path))
        folder = Path(base.path)
    unet_cfg = _config(folder, "unet/config.json", base.name)
    vae_cfg = _config(folder, "vae/config.json", base.name)
    text_cfg = _config(folder, "text_encoder/config.json", base.name)
    sched_cfg = _config(folder, "scheduler/scheduler_config.json", base.name)

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from ..models.load import quiet

    built = {}
    for key, cls, cfg in (("unet", UNet2DConditionModel, unet_cfg), ("vae", AutoencoderKL, vae_cfg)):
        try:
            with quiet(), torch.device("meta"):
                built[key] = cls.from_config(cfg)
        except Exception as exc:
            line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise InputError(f"base model {base.name!r}: {folder / key / 'config.json'} does not describe a "
                             f"{cls.__name__} ({line})") from None
    hidden = text_cfg.get("hidden_size")
    if not isinstance(hidden, int) or hidden < 1:
        raise InputError(f"base model {base.name!r}: {folder / 'text_encoder/config.json'} has no hidden_size")
    return BaseLayout(base.name, folder, built["unet"], built["vae"], hidden,
                      str(sched_cfg.get("prediction_type", "epsilon")))


def _forward(layout: BaseLayout, resolution: int | tuple[int, int]) -> None:
    """One image through the VAE encoder, the UNet and the VAE decoder, on meta tensors (batch 1:
    the held-out loss runs one image at a time, and some layers need more than one value).
    `resolution` is a square's side or a (width, height) bucket."""
    import torch

    w, h = (resolution, resolution) if isinstance(resolution, int) else resolution
    with torch.no_grad():
        pixels = torch.empty(1, 3, h, w, device="meta")
        latents = layout.vae.encode(pixels).latent_dist.mean
        states = torch.empty(1, 77, layout.text_hidden, device="meta")
        out = layout.unet(latents, torch.zeros(1, dtype=torch.long, device="meta"), states).sample
        if tuple(out.shape) != tuple(latents.shape):
            raise RuntimeError(f"the UNet returned {tuple(out.shape)} for latents {tuple(latents.shape)}")
        layout.vae.decode(latents)


def fits(layout: BaseLayout, resolution: int | tuple[int, int]) -> str | None:
    """None when the base runs at this resolution, else why not (one line)."""
    try:
        _forward(layout, resolution)
    except (RuntimeError, ValueError, IndexError) as exc:
        text = str(exc).strip()
        return text.splitlines()[0][:200] if text else type(exc).__name__
    return None


def check_resolution(layout: BaseLayout, resolution: int) -> None:
    why = fits(layout, resolution)
    if why is None:
        return
    native = layout.native
    if resolution < native and fits(layout, native) is None:
        smallest = next((r for r in range(resolution + 8, native + 1, 8) if fits(layout, r) is None), native)
        side = smallest // layout.vae_scale
        raise UsageError(f"--resolution {resolution} is too small for base {layout.name!r}: its UNet and VAE need "
                         f"latents of at least {side}×{side}; use --resolution {smallest} or more "
                         f"(it was trained at {native})")
    raise InputError(f"base model {layout.name!r} cannot train at --resolution {resolution}: {why}")


def check_buckets(layout: BaseLayout, sizes) -> None:
    """The thinnest buckets in use must run through the base (a side can be too small for its UNet;
    wider buckets with the same shorter side pass where these do)."""
    sizes = set(sizes)
    thinnest = min(min(s) for s in sizes)
    for w, h in sorted(s for s in sizes if min(s) == thinnest):
        why = fits(layout, (w, h))
        if why is not None:
            raise UsageError(f"bucket {w}×{h} is too small for base {layout.name!r} ({why}); raise --min-bucket-reso "
                             f"above {thinnest} (or, with --no-upscale, drop the small images)")


def check_prediction_type(layout: BaseLayout) -> None:
    if layout.prediction_type not in PREDICTION_TYPES:
        raise InputError(f"base model {layout.name!r}: unknown prediction_type {layout.prediction_type!r} in "
                         f"{layout.folder / 'scheduler/scheduler_config.json'}; styler trains "
                         f"{', '.join(PREDICTION_TYPES)}")


def _matches(name: str, targets: list[str]) -> bool:
    # peft's rule for a list of target names: the module's name is the target or ends with ".target"
    return any(name == t or name.endswith("." + t) for t in targets)


def targeted_layers(layout: BaseLayout, targets: list[str]) -> list[tuple[str, int, int]]:
    """(name, input dims, output dims) of every UNet layer a LoRA on `targets` adapts; a conv
    layer's input dims are in_channels × kernel area (its weight as a matrix)."""
    import torch.nn as nn

    found = []
    for name, module in layout.unet.named_modules():
        if not _matches(name, targets):
            continue
        if isinstance(module, nn.Linear):
            found.append((name, module.in_features, module.out_features))
        elif isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            found.append((name, module.in_channels // module.groups * kh * kw, module.out_channels))
    return found


def check_lora(layout: BaseLayout, cfg: TrainConfig) -> None:
    targets = cfg.unet_target_modules()
    layers = targeted_layers(layout, targets)
    if not layers:
        raise UsageError(f"--targets {cfg.targets} matches no layer of {layout.name!r}'s UNet; use attn, conv, ff "
                         f"or their module names")
    name, n_in, n_out = min(layers, key=lambda x: min(x[1], x[2]))
    bound = min(n_in, n_out)
    if cfg.text_encoder and layout.text_hidden < bound:  # q/k/v/out_proj are hidden × hidden
        name, n_in, n_out, bound = f"text_encoder {TEXT_TARGETS[0]}", layout.text_hidden, layout.text_hidden, layout.text_hidden
    rank, what, fix = cfg.rank, f"--rank {cfg.rank}", "--rank"
    if cfg.method == "adalora":  # every layer starts at the init rank
        from .adalora import ranks

        rank = ranks(cfg)[0]
        what, fix = f"--method adalora's start rank {rank}", "--adalora-init-rank"
    if rank > bound:
        raise UsageError(f"{what} is larger than the smallest layer it adapts ({name}: {n_in} → {n_out}), "
                         f"where a LoRA update has rank at most {bound}: a higher rank only makes the adapter bigger; "
                         f"use {fix} {bound} or less")


def check_textual_inversion(layout: BaseLayout, cfg: TrainConfig, token: str) -> None:
    """--token must be new to the base's tokenizer and --init-token one token of it."""
    from transformers import CLIPTokenizer

    from ..models.load import quiet
    from .methods import TextualInversionMethod

    try:
        with quiet():
            tokenizer = CLIPTokenizer.from_pretrained(str(layout.folder / "tokenizer"))
    except Exception as exc:
        line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InputError(f"base model {layout.name!r}: cannot read its tokenizer ({layout.folder / 'tokenizer'}): "
                         f"{line}") from None
    TextualInversionMethod(cfg, token).check_tokens(tokenizer)


def check_base(cfg: TrainConfig, base, *, trigger: str = "") -> BaseLayout:
    """Every check of `cfg` against the base; raises before anything is written."""
    layout = inspect_base(base)
    check_prediction_type(layout)
    if cfg.resolution is None:  # the base's own size, as `generate` renders by default
        cfg.resolution = layout.native
    check_resolution(layout, cfg.resolution)
    if cfg.method == "textual-inversion":
        check_textual_inversion(layout, cfg, cfg.token or trigger)
    else:
        check_lora(layout, cfg)
    return layout
