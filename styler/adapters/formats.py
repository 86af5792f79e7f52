"""Adapter files in and out as `.safetensors` (pickles are refused unopened): peft (what styler's
trainer writes), older diffusers, kohya/A1111, textual-inversion embeddings. Readers produce the
canonical `AdapterData` (lora.py) keyed by (component, live module path); text-encoder paths carry
no `text_model.` in memory (transformers 5's CLIPTextModel has none). Files are written with
`text_encoder.text_model.<module>` (what transformers 4.x, diffusers < 0.36 and ComfyUI expect;
diffusers 0.42 strips the prefix for transformers 5) and read in both forms.

Alpha as diffusers' `load_lora_weights` applies it. peft/diffusers: the `lora_adapter_metadata` JSON
(flat `unet.lora_alpha`, `unet.alpha_pattern`, …), patterns matched as peft does (first regex
`(.*\\.)?(key)$` in order); no metadata: alpha = rank. kohya: the `.alpha` scalar, else rank.

Written layouts:
- "peft": `unet.<module>.lora_A.weight` / `.lora_B.weight` (+ `.lora_magnitude_vector`), and
  `text_encoder.text_model.<module>…` (+ `.lora_magnitude_vector.weight`) for the text encoder;
  metadata with the most common rank/alpha as `r`/`lora_alpha`, others in `rank_pattern`/
  `alpha_pattern` keyed by full module path.
- "kohya": `lora_unet_<module_with_>` / `lora_te_text_model_<module_with_>` + `.lora_down.weight`,
  `.lora_up.weight`, `.alpha` (0-d); metadata `ss_network_dim`/`ss_network_alpha`, and
  `sshs_model_hash`/`sshs_legacy_hash` computed as kohya's `precalculate_safetensors_hashes` does. All
  modules get the most common alpha, other layers' alpha ratio folded into their up weights (ΔW
  unchanged): diffusers' kohya loader silently drops differing per-module alphas (measured, 0.42).
  LoHa/LoKr layers (lycoris.py) are written as LyCORIS writes them: `<stem>.hada_w1_a` … /
  `<stem>.lokr_w1` …, flat conv factors, and their own `.alpha` each (A1111 and ComfyUI read alpha
  per module; diffusers' kohya loader reads no LyCORIS layer at all); metadata
  `ss_network_module` "lycoris.kohya" and `ss_network_args` {"algo": …}.
  DoRA is not written: A1111 (network.py apply_weight_decompose) and ComfyUI (lora.py
  weight_decompose) read `.dora_scale` as a magnitude per input column, peft's DoRA (what styler
  trains) has one per output row, and there is no exact conversion. Reading, a `.dora_scale` of
  shape [out, 1] (LyCORIS `wd_on_out`, older styler exports) is taken per output row; [1, in] is refused.
- "diffusers": pre-peft layout `unet.<module>.lora.down.weight`/`.up.weight`,
  `text_encoder.text_model.<module>.lora_linear_layer.down.weight`/`.up.weight`. It has no place for an alpha
  (diffusers loads it at alpha = rank), so alpha/rank is baked into the up weights.

styler's stored files hold LoHa/LoKr layers in the peft layout's way, `unet.<module>.hada_w1_a` … and
`unet.<module>.alpha` (a 0-d tensor), with conv factors in their kernel shape (lora.py); no peft or
diffusers loader reads them, so `styler adapters export` writes such adapters only as kohya files.

An exported "peft" file (`styler adapters export --format peft`, library.export_payload) is written
from `AdapterData.unit_scale()`: alpha/rank baked into lora_B and the metadata saying alpha = rank,
because ComfyUI and older diffusers (0.32, for one) load peft files without reading any alpha; the
file is then exact at scale 1 in every loader. styler's own stored files keep their alpha.

Every file is written byte for byte the same for the same adapter (`safetensors_bytes`): A1111 and
civitai identify a LoRA by the sha256 of its bytes after the header (AutoV3, `addnet_hash`), and a
textual inversion by the sha256 of the whole file.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path

from ..errors import InputError, UsageError
from . import lycoris
from .lora import LAYER_NAMES, AdapterData, LoraLayer
from .ti import tokens_for

WRITE_FORMATS = ("peft", "kohya", "diffusers")
TI_TOKENS_KEY = "styler.ti_tokens"
LORA_META_KEY = "lora_adapter_metadata"

_PEFT = re.compile(r"^(?:(unet|text_encoder)\.)?(.+)\.(lora_A|lora_B)(?:\.default)?\.weight$")
_PEFT_MAG = re.compile(r"^(?:(unet|text_encoder)\.)?(.+)\.lora_magnitude_vector(?:\.default)?(?:\.weight)?$")
_DIFF = re.compile(r"^(?:(unet|text_encoder)\.)?(.+)\.(?:lora|lora_linear_layer)\.(down|up)\.weight$")
_DIFF_OLD = re.compile(r"\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")
_KOHYA = re.compile(rf"^lora_(unet|te|te1|te2)_(\w+)\.(lora_down\.weight|lora_up\.weight|alpha|dora_scale|"
                    rf"{lycoris.PART_PATTERN})$")
_KOHYA_ANY = re.compile(r"^lora_(?:unet|te\d?)_\w+\.(.+)$")
_KOHYA_PREFIX = re.compile(r"^lora_(unet|te\d?)_")
_KOHYA_PART = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha", "dora_scale": "magnitude",
               **{part: part for part in lycoris.PARTS}}
_OLD_TE = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}
# SD-1.5 module-name words that contain "_", for kohya names read without the model's module list
_SD_WORDS = ("transformer_blocks", "down_blocks", "up_blocks", "mid_block", "time_emb_proj", "conv_shortcut",
             "time_embedding", "linear_1", "linear_2", "proj_in", "proj_out", "to_out", "to_q", "to_k", "to_v",
             "conv_in", "conv_out", "text_model", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj",
             "final_layer_norm", "layer_norm1", "layer_norm2", "text_projection")


# ---------------------------------------------------------------- opening files


def _check_path(path) -> Path:
    from ..models.resolve import PICKLE_SUFFIXES

    p = Path(path).expanduser()
    suffix = p.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise InputError(f"{p}: {suffix} files are pickles and styler never unpickles; convert it to .safetensors")
    if suffix not in (".safetensors", ""):  # no suffix: registry blobs (blobs/sha256/ab/<hash>)
        raise InputError(f"{p}: not a .safetensors file; styler reads adapters only as .safetensors")
    if not p.is_file():
        raise InputError(f"{p} does not exist")
    return p


def _header(path) -> tuple[Path, dict, dict]:
    """(path, {key: shape}, metadata) without reading any tensor."""
    from ..models.resolve import safetensors_header

    p = _check_path(path)
    header = safetensors_header(p)
    meta = dict(header.pop("__metadata__", None) or {})
    return p, {k: tuple(header[k]["shape"]) for k in sorted(header)}, meta  # sorted, as safetensors lists them


def _load(p: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(p))
    except Exception as exc:
        raise InputError(f"{p}: cannot read tensors ({str(exc).splitlines()[0][:200]})") from None


def _classify(p: Path, shapes: dict, meta: dict) -> str:
    keys = list(shapes)
    if keys and any(_KOHYA_PREFIX.match(k) for k in keys):
        return "kohya"
    if any(_PEFT.match(k) or lycoris.STORED_KEY.match(k) for k in keys):
        return "peft"
    if any(_DIFF.match(k) or _DIFF_OLD.search(k) for k in keys):
        return "diffusers"
    if any(_PEFT_MAG.match(k) for k in keys):
        return "peft"
    one_tensor = len(keys) == 1 and len(shapes[keys[0]]) in (1, 2)
    if one_tensor or "emb_params" in keys or any(k.startswith("string_to_param") for k in keys):
        return "textual-inversion"
    sample = ", ".join(keys[:3]) or "none"
    raise InputError(f"{p}: unexpected keys (e.g. {sample}): not a LoRA or embedding styler can read")


def detect_format(path) -> str:
    """"peft" | "diffusers" | "kohya" | "textual-inversion" from the key names (header only)."""
    return _classify(*_header(path))


# ---------------------------------------------------------------- reading


def _te_path(module: str) -> str:
    return module.removeprefix("text_model.")


def _guess_component(module: str) -> str:
    return "text_encoder" if re.search(r"text_model|encoder\.layers|self_attn|mlp\.fc", module) else "unet"


def _parse_peft(key: str):
    key = key.removeprefix("base_model.model.")  # peft's own save_pretrained of one model
    if m := _PEFT.match(key):
        return m.group(1), m.group(2), "down" if m.group(3) == "lora_A" else "up"
    if m := _PEFT_MAG.match(key):
        return m.group(1), m.group(2), "magnitude"
    if m := lycoris.STORED_KEY.match(key):
        return m.group(1), m.group(2), m.group(3)
    return None


def _parse_diffusers(key: str):
    key = key.replace(".processor.", ".")
    old = _DIFF_OLD.search(key)
    if old:  # LoRAAttnProcessor era: attn1.processor.to_q_lora.down.weight
        key = key[: old.start()] + f".{old.group(1)}.lora.{old.group(2)}.weight"
    m = _DIFF.match(key)
    if not m:
        return _parse_peft(key)
    comp, module, part = m.group(1), m.group(2), m.group(3)
    comp = comp or _guess_component(module)
    last = module.rsplit(".", 1)[-1]
    if old and comp == "text_encoder":
        module = module[: -len(last)] + _OLD_TE[last]
    elif old and last == "to_out":
        module += ".0"
    return comp, module, part


def _kohya_lookup(module_names: dict | None) -> dict:
    """(component, name with "_") -> live path; text-encoder names also with A1111's `text_model_`."""
    table = {}
    for comp, names in (module_names or {}).items():
        for name in map(_te_path, names):
            table[(comp, name.replace(".", "_"))] = name
            table[(comp, "text_model_" + name.replace(".", "_"))] = name
    return table


def _kohya_guess(flat: str) -> str:
    dotted = flat.replace("_", ".")
    for word in sorted(_SD_WORDS, key=len, reverse=True):
        dotted = dotted.replace(word.replace("_", "."), word)
    return dotted


# SGM/LDM (original Stable Diffusion) UNet names, as some trainers write them: diffusers converts these
_LDM_UNET = re.compile(r"^(input_blocks|middle_block|output_blocks|time_embed|out_\d|label_emb)_")


def _layers_per_block(module_names: dict | None) -> int:
    """The UNet's layers_per_block from its module names (SD-1.5's 2 when they are not known)."""
    found = [int(m.group(1)) for name in (module_names or {}).get("unet", ())
             if (m := re.match(r"down_blocks\.0\.resnets\.(\d+)\.", name))]
    return max(found) + 1 if found else 2


def _ldm_kohya_module(stem: str, layers_per_block: int) -> str | None:
    """diffusers' own conversion of an SGM/LDM-named kohya/LyCORIS UNet module (`lora_state_dict`, which
    maps input_blocks/middle_block/output_blocks and in_layers/out_layers/emb_layers/skip_connection
    to diffusers paths). Only names go through it: it gets empty tensors, never a file."""
    import torch
    from types import SimpleNamespace

    from diffusers import StableDiffusionPipeline

    empty = torch.empty(0)
    try:
        converted, _ = StableDiffusionPipeline.lora_state_dict(
            {f"{stem}.lora_down.weight": empty, f"{stem}.lora_up.weight": empty},
            unet_config=SimpleNamespace(layers_per_block=layers_per_block))
    except (ValueError, KeyError, IndexError, AttributeError):
        return None
    downs = [k for k in converted if k.endswith("down.weight")]
    parsed = _parse_diffusers(downs[0]) if len(downs) == 1 else None
    if parsed is None or parsed[0] != "unet":
        return None
    # diffusers reads output_blocks_N_1 as an attention, but in an up block without attention (SD-1.5's
    # up_blocks.0) it is the upsampler; an attention has no `conv`, so that name can only mean this
    return re.sub(r"^(up_blocks\.\d+)\.attentions\.\d+\.conv$", r"\1.upsamplers.0.conv", parsed[1])


def _parse_kohya(p: Path, key: str, table: dict, layers_per_block: int = 2, cache: dict | None = None):
    m = _KOHYA.match(key)
    if not m:
        other = _KOHYA_ANY.match(key)
        kind = lycoris.other_kind(other.group(1)) if other else None
        if kind:
            raise InputError(f"{p}: {key} is a LyCORIS {kind} layer; {lycoris.READS}")
        raise InputError(f"{p}: unsupported key {key} ({lycoris.READS})")
    net, flat, part = m.groups()
    if net == "te2":
        raise InputError(f"{p}: {key} is for a second text encoder (SDXL); styler reads SD-1.5 adapters")
    comp = "unet" if net == "unet" else "text_encoder"
    module = table.get((comp, flat)) if table else None
    if module is None and comp == "unet" and _LDM_UNET.match(flat):
        cache = {} if cache is None else cache
        if flat not in cache:
            cache[flat] = _ldm_kohya_module(f"lora_unet_{flat}", layers_per_block)
        module = cache[flat]
        if module is not None and table and (comp, module.replace(".", "_")) not in table:
            module = None
    if module is None and table:
        raise InputError(f"{p}: {key} names no module of this base's {comp}")
    if module is None:
        module = _kohya_guess(flat)
    return comp, module, _KOHYA_PART[part]


def _component_meta(meta: dict, comp: str) -> dict | None:
    try:
        flat = json.loads(meta.get(LORA_META_KEY) or "{}")
    except ValueError:
        return None
    sub = {k[len(comp) + 1:]: v for k, v in flat.items() if k.startswith(comp + ".")}
    return sub or None


def _pattern_value(patterns: dict, module: str, default):
    """peft's lookup: the first pattern key that regex-matches the module path as a suffix."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _peft_alpha(cfg: dict | None, module: str, rank: int, comp: str = "unet") -> float:
    if cfg is None:
        return float(rank)
    path = f"text_model.{module}" if comp == "text_encoder" else module  # patterns may name either form
    alpha = float(_pattern_value(cfg.get("alpha_pattern"), path, cfg.get("lora_alpha", 8)))
    if cfg.get("use_rslora"):  # peft scales by alpha/sqrt(r); canonical scale is alpha/r
        alpha *= math.sqrt(rank)
    return alpha


def read_adapter(path, module_names: dict | None = None) -> AdapterData:
    """Any supported file as AdapterData. `module_names` ({component: module paths}, see
    `model_module_names`) resolves kohya's underscore names exactly; without it SD-1.5 naming is assumed."""
    p, shapes, meta = _header(path)
    fmt = _classify(p, shapes, meta)
    tensors = _load(p)
    if fmt == "textual-inversion":
        return AdapterData("textual-inversion", embeddings=_read_ti(p, tensors, meta), metadata=meta, format=fmt)
    table = _kohya_lookup(module_names) if fmt == "kohya" else {}
    lpb, names_seen = _layers_per_block(module_names), {}
    parts: dict = {}
    for key, tensor in tensors.items():
        if fmt == "kohya":
            parsed = _parse_kohya(p, key, table, lpb, names_seen)
        else:
            parsed = _parse_diffusers(key) if fmt == "diffusers" else _parse_peft(key)
            if parsed is None:
                raise InputError(f"{p}: unsupported key {key} in a {fmt} LoRA file")
            parsed = ((parsed[0] or _guess_component(parsed[1])),) + parsed[1:]
        comp, module, part = parsed
        if comp == "text_encoder":
            module = _te_path(module)
        slot = parts.setdefault((comp, module), {})
        if part in slot:
            raise InputError(f"{p}: {key} duplicates another key for {comp}.{module}")
        slot[part] = tensor
    cfgs = {c: _component_meta(meta, c) for c in ("unet", "text_encoder")}
    layers = {}
    for (comp, module), slot in parts.items():
        lyco = lycoris.build_layer(str(p), comp, module, slot)
        if lyco is not None:
            layers[(comp, module)] = lyco
            continue
        if "down" not in slot or "up" not in slot:
            missing = "up" if "down" in slot else "down"
            raise InputError(f"{p}: {comp}.{module} has no {missing} weight; the file is incomplete")
        down, up = slot["down"], slot["up"]
        rank = down.shape[0]
        if down.dim() not in (2, 4) or up.dim() != down.dim() or up.shape[1] != rank or \
                (up.dim() == 4 and tuple(up.shape[2:]) != (1, 1)):
            raise InputError(f"{p}: {comp}.{module} has down {list(down.shape)} and up {list(up.shape)}, "
                             f"which do not make a LoRA")
        if fmt == "kohya":
            alpha = float(slot["alpha"].item()) if "alpha" in slot else float(rank)
        else:
            alpha = _peft_alpha(cfgs[comp], module, rank, comp)
        mag = slot.get("magnitude")
        if mag is not None:
            # kohya/LyCORIS also write input-side scales [1, in]: refused, even when in == out
            if mag.numel() != up.shape[0] or (fmt == "kohya" and mag.shape[0] != up.shape[0]):
                raise InputError(f"{p}: {comp}.{module} has a DoRA scale of shape {list(mag.shape)}; "
                                 f"only per-output-row scales ({up.shape[0]}) are supported")
            mag = mag.reshape(-1)
        layers[(comp, module)] = LoraLayer(comp, module, down, up, alpha, mag)
    return AdapterData("lora", layers=layers, metadata=meta, format=fmt)


def _read_ti(p: Path, tensors: dict, meta: dict) -> dict:
    out = {}
    for key, t in tensors.items():
        token = key
        if key == "emb_params" or key.startswith("string_to_param"):  # A1111: the token is the file's name
            try:
                token = json.loads(meta.get(TI_TOKENS_KEY, "[]"))[0]
            except (ValueError, IndexError, TypeError):
                token = meta.get("name") or p.stem
        t = t.unsqueeze(0) if t.dim() == 1 else t
        if t.dim() != 2:
            raise InputError(f"{p}: embedding {key} has shape {list(t.shape)}; expected [vectors, dim]")
        out[token] = t
    return out


# ---------------------------------------------------------------- the model side


def model_module_names(pipe) -> dict[str, set[str]]:
    """{"unet": …, "text_encoder": …}: paths of every Linear/Conv2d (peft-wrapped ones counted once,
    by the wrapper's path); text-encoder paths without `text_model.`."""
    import torch

    out = {}
    for comp in ("unet", "text_encoder"):
        model = getattr(pipe, comp, None)
        names, inside = set(), "\0"
        for name, mod in (model.named_modules() if model is not None else []):
            if name.startswith(inside):  # named_modules is depth first: a wrapper's children follow it
                continue
            if hasattr(mod, "base_layer"):  # a peft tuner layer around the real module
                inside = name + "."
                names.add(_te_path(name))
            elif isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
                names.add(_te_path(name))
        out[comp] = names
    return out


def _find_module(model, comp: str, module: str):
    for name in [module] + ([f"text_model.{module}"] if comp == "text_encoder" else []):
        try:
            return model.get_submodule(name)
        except AttributeError:
            continue
    return None


def _fits(layer, shape: list[int]) -> bool:
    """A LoRA's ΔW has the module's shape; a LoHa/LoKr's may have it flat ([out, in·kh·kw], as
    LyCORIS writes conv factors)."""
    want = layer.delta_shape
    if want == shape:
        return True
    return layer.kind != "lora" and len(want) == 2 and want[0] == shape[0] and want[1] == math.prod(shape[1:])


def _weight(pipe, comp: str, module: str):
    model = getattr(pipe, comp, None)
    mod = _find_module(model, comp, module) if model is not None else None
    return getattr(getattr(mod, "base_layer", mod), "weight", None)


def check_compatible(data: AdapterData, pipe) -> None:
    """InputError naming the first layer (or embedding) that does not fit the pipeline."""
    head = "adapter does not fit this base: first mismatch"
    if data.kind == "textual-inversion":
        dim = int(pipe.text_encoder.get_input_embeddings().weight.shape[1])
        for token, vec in data.embeddings.items():
            if int(vec.shape[-1]) != dim:
                raise InputError(f"{head} embedding {token!r}: {int(vec.shape[-1])} dims vs the text encoder's {dim}")
        return
    for layer in data.layers.values():
        weight = _weight(pipe, layer.component, layer.module)
        if weight is None:
            raise InputError(f"{head} {layer.component}.{layer.module}: the base has no module {layer.module}")
        want, have = layer.delta_shape, list(weight.shape)
        if not _fits(layer, have):
            raise InputError(f"{head} {layer.component}.{layer.module}: adapter ΔW {want} vs model weight {have}")


def fit_kernels(data: AdapterData, pipe) -> AdapterData:
    """`data` (checked by `check_compatible`) with every LoHa/LoKr conv factor in its module's
    kernel shape (lora.py), so its ΔW, and any merge of it, has the module's shape."""
    from dataclasses import replace

    layers = {key: layer if layer.kind == "lora" else layer.with_kernel(list(_weight(pipe, *key).shape))
              for key, layer in data.layers.items()}
    return replace(data, layers=layers)


# ---------------------------------------------------------------- writing


def _most_common(values):
    return Counter(values).most_common(1)[0][0]


def _peft_config(layers: list[LoraLayer]) -> dict:
    from peft import LoraConfig

    dora = {layer.magnitude is not None for layer in layers}
    if len(dora) > 1:
        raise UsageError(f"{layers[0].component}: DoRA and plain LoRA layers mixed cannot be one peft config")
    r = _most_common(layer.rank for layer in layers)
    alpha = _most_common(float(layer.alpha) for layer in layers)
    cfg = LoraConfig(
        r=r, lora_alpha=alpha, target_modules=sorted(layer.module for layer in layers),
        rank_pattern={layer.module: layer.rank for layer in layers if layer.rank != r},
        alpha_pattern={layer.module: float(layer.alpha) for layer in layers if float(layer.alpha) != alpha},
        use_dora=dora.pop(), init_lora_weights=True)
    return {k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in cfg.to_dict().items()}


def _tensor(t):
    return t.detach().to("cpu").contiguous().clone()


def _peft_magnitude(layer: LoraLayer):
    """peft keeps a Linear's DoRA magnitude as [out] and a Conv2d's as [1, out, 1, 1]."""
    mag = layer.magnitude.reshape(-1)
    return _tensor(mag.reshape(1, -1, 1, 1) if layer.down.dim() == 4 else mag)


def _magnitude_key(comp: str) -> str:
    # diffusers 0.42 loads a text encoder's adapter through transformers 5, which finds a DoRA magnitude
    # only as `.lora_magnitude_vector.weight` (the bare name, peft's own, silently stays at ‖W‖); the
    # UNet (through peft) and diffusers 0.32 read both (measured)
    return "lora_magnitude_vector.weight" if comp == "text_encoder" else "lora_magnitude_vector"


def _lora_tensors(data: AdapterData, fmt: str) -> tuple[dict, dict]:
    import torch

    tensors, meta = {}, {}
    layers = list(data.layers.values())
    loras = [layer for layer in layers if layer.kind == "lora"]
    common = _most_common(float(layer.alpha) for layer in loras or layers)
    for layer in layers:
        comp, module = layer.component, layer.module
        path = f"text_model.{module}" if comp == "text_encoder" else module  # transformers 4 / ComfyUI paths
        if layer.kind != "lora":
            tensors.update(_lycoris_tensors(layer, fmt, path))
        elif fmt == "peft":
            stem = f"{comp}.{path}"
            tensors[f"{stem}.lora_A.weight"] = _tensor(layer.down)
            tensors[f"{stem}.lora_B.weight"] = _tensor(layer.up)
            if layer.magnitude is not None:
                tensors[f"{stem}.{_magnitude_key(comp)}"] = _peft_magnitude(layer)
        elif fmt == "kohya":
            net = "lora_unet_" if comp == "unet" else "lora_te_text_model_"
            stem = net + module.replace(".", "_")
            up, alpha = layer.up, float(layer.alpha)
            if alpha != common and common != 0:  # one alpha for all: see the module docstring
                up, alpha = (up.float() * (alpha / common)).to(up.dtype), common
            tensors[f"{stem}.lora_down.weight"] = _tensor(layer.down)
            tensors[f"{stem}.lora_up.weight"] = _tensor(up)
            tensors[f"{stem}.alpha"] = torch.tensor(alpha, dtype=torch.float32)
            if layer.magnitude is not None:
                raise UsageError(f"{comp}.{module} is a DoRA layer: a kohya file has no place for it (A1111 and "
                                 f"ComfyUI apply .dora_scale per input column, peft's DoRA is per output row); "
                                 f"export it --format peft or diffusers")
        else:
            inner = "lora" if comp == "unet" else "lora_linear_layer"
            stem = f"{comp}.{path}.{inner}"
            tensors[f"{stem}.down.weight"] = _tensor(layer.down)
            tensors[f"{stem}.up.weight"] = _tensor(layer.unit_scale().up)
            if layer.magnitude is not None:
                tensors[f"{comp}.{path}.{_magnitude_key(comp)}"] = _peft_magnitude(layer)
    if fmt == "peft":
        flat = {}
        for comp in ("unet", "text_encoder"):
            own = [layer for layer in loras if layer.component == comp]
            if own:
                flat.update({f"{comp}.{k}": v for k, v in _peft_config(own).items()})
        if flat:
            meta[LORA_META_KEY] = json.dumps(flat, indent=2, sort_keys=True)
    elif fmt == "kohya":
        ranks = [layer.rank for layer in layers if layer.rank is not None]
        meta["ss_network_dim"] = str(_most_common(ranks) if ranks else 1)
        meta["ss_network_alpha"] = f"{common:g}"
        kinds = data.lycoris_kinds()
        if kinds:  # what LyCORIS's kohya network writes (sd-scripts' --network_module lycoris.kohya)
            meta["ss_network_module"] = "lycoris.kohya"
            args = _json_dict(meta.get("ss_network_args") or data.metadata.get("ss_network_args"))
            args["algo"] = kinds[0] if len(kinds) == 1 else args.get("algo", kinds[0])
            meta["ss_network_args"] = json.dumps(args, sort_keys=True)
        meta.setdefault("ss_network_module", "networks.lora")
    return tensors, meta


def _json_dict(text) -> dict:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _lycoris_tensors(layer, fmt: str, path: str) -> dict:
    """A LoHa/LoKr layer's tensors: kohya keys as LyCORIS writes them, or styler's stored layout."""
    import torch

    if fmt == "diffusers":
        raise UsageError(f"{layer.component}.{layer.module} is a {LAYER_NAMES[layer.kind]} layer: a diffusers file "
                         f"holds only LoRA (B·A) layers; write it --format kohya")
    if fmt == "kohya":
        net = "lora_unet_" if layer.component == "unet" else "lora_te_text_model_"
        stem = net + layer.module.replace(".", "_")
    else:
        stem = f"{layer.component}.{path}"
    out = {f"{stem}.{part}": _tensor(t) for part, t in layer.tensors(flat=fmt == "kohya").items()}
    out[f"{stem}.alpha"] = torch.tensor(float(layer.alpha), dtype=torch.float32)
    return out


def safetensors_bytes(tensors: dict, metadata: dict | None = None) -> bytes:
    """`tensors` + `metadata` as .safetensors bytes, the same bytes every time. The data section is
    safetensors' own (`safetensors.torch.save`: what kohya hashes), the header is re-serialised with
    sorted keys (safetensors' writer orders the metadata differently in every process) and padded
    with spaces to 8 bytes as safetensors pads it; its length is what safetensors would write."""
    from safetensors.torch import save

    raw = save(tensors, metadata=dict(metadata) if metadata else None)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    ordered = {}
    if header.get("__metadata__"):
        ordered["__metadata__"] = dict(sorted(header.pop("__metadata__").items()))
    header.pop("__metadata__", None)
    for key in sorted(header, key=lambda k: (header[k]["data_offsets"], k)):
        ordered[key] = header[key]
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + n:]


def addnet_hash(data: bytes) -> str:
    """sha256 (hex) of the bytes after a .safetensors header: kohya's / sd-webui-additional-networks'
    `addnet_hash_safetensors`, what A1111 keeps as a LoRA's hash (shown as its first 12 digits) and
    civitai calls AutoV3."""
    n = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + n:]).hexdigest()


def addnet_legacy_hash(data: bytes) -> str:
    """kohya's `addnet_hash_legacy`: sha256 of the 64 KiB at offset 1 MiB, first 8 hex digits."""
    return hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


def adapter_bytes(data: AdapterData, fmt: str = "peft", metadata: dict | None = None) -> bytes:
    """The bytes `write_adapter` writes: LoRAs as fmt "peft" | "kohya" | "diffusers" (see the module
    docstring); textual-inversion data as `{token: tensor[n, dim]}` whatever fmt. The file's metadata:
    data.metadata, then `metadata`, then the keys the format itself needs. Kohya files get
    `sshs_model_hash`/`sshs_legacy_hash` as kohya's `precalculate_safetensors_hashes` computes them
    (over the tensors and only the `ss_*` metadata); stale ones from a source file are dropped."""
    if fmt not in WRITE_FORMATS:
        raise UsageError(f"unknown adapter format {fmt!r}; use one of {', '.join(WRITE_FORMATS)}")
    meta = {k: v for k, v in data.metadata.items()
            if k not in (LORA_META_KEY, "ss_network_dim", "ss_network_alpha")}
    meta.update({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()})
    meta.pop(LORA_META_KEY, None)  # only ever the one built here: a stale one would rescale what diffusers loads
    meta = {k: v for k, v in meta.items() if not k.startswith("sshs_")}  # hashes of another file's bytes
    if data.kind == "textual-inversion":
        if not data.embeddings:
            raise UsageError("nothing to write: the embedding has no tokens")
        tensors = {token: _tensor(t if t.dim() == 2 else t.reshape(1, -1)) for token, t in data.embeddings.items()}
        if len(tensors) == 1 and TI_TOKENS_KEY not in meta:
            token, t = next(iter(tensors.items()))
            meta[TI_TOKENS_KEY] = json.dumps(tokens_for(token, t.shape[0]))
    else:
        if not data.layers:
            raise UsageError("nothing to write: the adapter has no layers")
        tensors, own = _lora_tensors(data, fmt)
        meta.update(own)
        if fmt == "kohya":
            hashed = safetensors_bytes(tensors, {k: v for k, v in meta.items() if k.startswith("ss_")})
            meta["sshs_model_hash"] = addnet_hash(hashed)
            meta["sshs_legacy_hash"] = addnet_legacy_hash(hashed)
    meta["format"] = "pt"
    return safetensors_bytes(tensors, meta)


def text_model_keys(state_dict: dict) -> dict:
    """A text encoder's peft state dict as files are written (see the module docstring): `text_model.`
    paths (`encoder.layers.0…` -> `text_model.encoder.layers.0…`) and DoRA magnitudes as
    `….lora_magnitude_vector.weight`."""
    out = {}
    for k, v in state_dict.items():
        k = k if k.startswith("text_model.") else f"text_model.{k}"
        out[k + ".weight" if k.endswith(".lora_magnitude_vector") else k] = v
    return out


def write_adapter(data: AdapterData, path, fmt: str = "peft", metadata: dict | None = None) -> Path:
    """Write `adapter_bytes(data, fmt, metadata)` to `path` (.safetensors) atomically, with the
    permissions a plain open() gives (0o666 & ~umask)."""
    from ..files import write_bytes_atomic

    dest = Path(path).expanduser()
    if dest.suffix.lower() != ".safetensors":
        raise UsageError(f"{dest}: adapters are written as .safetensors; give a path ending in .safetensors")
    payload = adapter_bytes(data, fmt, metadata)
    return write_bytes_atomic(dest, payload, error=f"could not write {dest}")
