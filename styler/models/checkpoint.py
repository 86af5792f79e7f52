"""Writing a diffusers Stable Diffusion folder as one original-layout (LDM/CompVis) checkpoint.

Single-file checkpoints are what most SD-1.5 models are shared as, and what `--base x.safetensors`
loads through diffusers' `from_single_file`. Writing one from a folder we already have (the tiny
base, or a real SD-1.5 folder) lets that load path be exercised and compared weight for weight
without any download. Block indices come from the folder's configs, so the same code serves the
toy-sized tiny base and the full SD-1.5 UNet/VAE. Every tensor is renamed through an explicit
table and any key the table does not cover is an error, so nothing is dropped silently.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."

# diffusers ResnetBlock2D part -> LDM ResBlock part (the UNet's resnets)
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
# the VAE's resnets keep diffusers' names except the shortcut
_VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
# VAE mid attention; the old diffusers names (query/key/value/proj_attn) still occur in some folders
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
             "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}


def _per_block(value, n: int) -> list[int]:
    """layers_per_block may be one int or one per block."""
    return list(value) if isinstance(value, (list, tuple)) else [int(value)] * n


def _add_resnet(table: dict, src: str, dst: str, parts: dict) -> None:
    for a, b in parts.items():
        table[f"{src}.{a}."] = f"{dst}.{b}."


def _unet_table(cfg: dict) -> dict[str, str]:
    """diffusers-name prefix -> LDM-name prefix for a UNet2DConditionModel config.

    LDM numbers input_blocks/output_blocks in one running sequence: each resnet (with its
    attention, if the block has one) is one entry, and a down/upsampler is its own entry on the
    down side or rides with the last layer on the up side. diffusers gives every block but the
    last a downsampler, and every up block but the last an upsampler."""
    if cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        raise InputError(f"UNet mid block {cfg.get('mid_block_type')!r} has no single-file layout here")
    down, up = list(cfg["down_block_types"]), list(cfg["up_block_types"])
    layers = _per_block(cfg["layers_per_block"], len(down))
    table = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
             "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}
    idx = 1  # input_blocks.0 is conv_in
    for b, kind in enumerate(down):
        for j in range(layers[b]):
            _add_resnet(table, f"down_blocks.{b}.resnets.{j}", f"input_blocks.{idx}.0", _UNET_RESNET)
            if "CrossAttn" in kind:
                table[f"down_blocks.{b}.attentions.{j}."] = f"input_blocks.{idx}.1."
            idx += 1
        if b < len(down) - 1:
            table[f"down_blocks.{b}.downsamplers.0.conv."] = f"input_blocks.{idx}.0.op."
            idx += 1
    # middle_block: resnet, transformer, resnet (diffusers' converter reads even = resnet)
    _add_resnet(table, "mid_block.resnets.0", "middle_block.0", _UNET_RESNET)
    table["mid_block.attentions.0."] = "middle_block.1."
    _add_resnet(table, "mid_block.resnets.1", "middle_block.2", _UNET_RESNET)
    idx = 0
    for b, kind in enumerate(up):
        n = layers[len(down) - 1 - b] + 1  # up blocks mirror the down blocks, one resnet more
        attn = "CrossAttn" in kind
        for j in range(n):
            _add_resnet(table, f"up_blocks.{b}.resnets.{j}", f"output_blocks.{idx}.0", _UNET_RESNET)
            if attn:
                table[f"up_blocks.{b}.attentions.{j}."] = f"output_blocks.{idx}.1."
            if j == n - 1 and b < len(up) - 1:
                table[f"up_blocks.{b}.upsamplers.0.conv."] = f"output_blocks.{idx}.{2 if attn else 1}.conv."
            idx += 1
    return table


def _vae_table(cfg: dict) -> dict[str, str]:
    """diffusers-name prefix -> LDM-name prefix for an AutoencoderKL config. The LDM decoder
    numbers its up blocks from the lowest resolution's opposite end (up.N-1 runs first)."""
    n_down, n_up = len(cfg["down_block_types"]), len(cfg["up_block_types"])
    layers = int(cfg.get("layers_per_block", 2))
    table = {"quant_conv.": "quant_conv.", "post_quant_conv.": "post_quant_conv."}
    for side in ("encoder", "decoder"):
        table.update({f"{side}.conv_in.": f"{side}.conv_in.", f"{side}.conv_out.": f"{side}.conv_out.",
                      f"{side}.conv_norm_out.": f"{side}.norm_out."})
        for j in (0, 1):
            _add_resnet(table, f"{side}.mid_block.resnets.{j}", f"{side}.mid.block_{j + 1}", _VAE_RESNET)
        for a, b in _VAE_ATTN.items():
            table[f"{side}.mid_block.attentions.0.{a}."] = f"{side}.mid.attn_1.{b}."
    for i in range(n_down):
        for j in range(layers):
            _add_resnet(table, f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}", _VAE_RESNET)
        if i < n_down - 1:
            table[f"encoder.down_blocks.{i}.downsamplers.0.conv."] = f"encoder.down.{i}.downsample.conv."
    for i in range(n_up):
        k = n_up - 1 - i
        for j in range(layers + 1):
            _add_resnet(table, f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{k}.block.{j}", _VAE_RESNET)
        if i < n_up - 1:
            table[f"decoder.up_blocks.{i}.upsamplers.0.conv."] = f"decoder.up.{k}.upsample.conv."
    return table


def _rename(state: dict, table: dict[str, str], what: str) -> dict:
    """Apply the longest matching prefix to every key; a key no prefix covers is an error."""
    prefixes = sorted(table, key=len, reverse=True)
    out = {}
    for key, tensor in state.items():
        hit = next((p for p in prefixes if key.startswith(p)), None)
        if hit is None:
            raise InputError(f"{what}: no original-layout name for weight {key!r}; the config and weights disagree "
                             "or this is not an SD-1.x style model")
        out[table[hit] + key[len(hit):]] = tensor
    return out


def _load_component(folder: Path, name: str) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    from .resolve import _read_json, weight_files

    files = weight_files(folder / name)
    if not files:
        raise InputError(f"{folder / name} has no .safetensors weights")
    state: dict = {}
    for f in files:  # sharded components: the shards hold disjoint keys
        state.update(load_file(str(f)))
    return state, _read_json(folder / name / "config.json")


def to_single_file(pipeline_folder: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the UNet, VAE and text encoder of a diffusers SD pipeline folder as one
    original-layout `.safetensors` checkpoint at `out` (atomically) and return `out`."""
    from safetensors.torch import save_file

    from .resolve import _read_json

    folder, out = Path(pipeline_folder), Path(out)
    if _read_json(folder / "model_index.json").get("_class_name") != "StableDiffusionPipeline":
        raise InputError(f"{folder} is not a diffusers StableDiffusionPipeline folder (model_index.json)")
    if out.suffix.lower() != ".safetensors":
        raise InputError(f"{out}: a single-file checkpoint must be named *.safetensors")

    tensors: dict = {}
    unet, unet_cfg = _load_component(folder, "unet")
    for key, t in _rename(unet, _unet_table(unet_cfg), "unet").items():
        tensors[UNET_PREFIX + key] = t

    vae, vae_cfg = _load_component(folder, "vae")
    for key, t in _rename(vae, _vae_table(vae_cfg), "vae").items():
        # LDM's VAE attention projects with 1x1 convs; diffusers stores the same numbers as Linear
        if ".mid.attn_1." in key and key.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")) \
                and t.ndim == 2:
            t = t.reshape(*t.shape, 1, 1)
        tensors[VAE_PREFIX + key] = t

    text, _ = _load_component(folder, "text_encoder")
    for key, t in text.items():
        # transformers >= 5.6 saves CLIPTextModel without the text_model. level that SD checkpoints use
        key = key if key.startswith(("text_model.", "text_projection.")) else "text_model." + key
        if key.endswith("position_ids"):
            continue  # a buffer, rebuilt by the model; not a weight
        tensors[TEXT_PREFIX + key] = t

    # safetensors refuses views into shared or strided storage: give every tensor its own memory
    tensors = {k: t.contiguous() for k, t in tensors.items()}
    meta = {"format": "pt", "written_by": "styler (styler.models.checkpoint.to_single_file)",
            "note": f"original Stable Diffusion layout converted from the diffusers folder {folder.name}"}

    from ..files import atomic_write

    return atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata=meta))
