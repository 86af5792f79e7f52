"""Where the UNet looks while it draws: per-word cross-attention heat maps, and the feature-map
energy of each UNet block, recorded during an ordinary render.

The image is made exactly as `styler generate` makes it (same request, seed, adapters and mix,
same `render_and_store`), with two kinds of recorder in place for that one render:

* ``attn``: every cross-attention layer (the ``attn2`` of each transformer block) gets a
  processor that calls the layer's own processor for the output, untouched, and beside it
  computes softmax(QKᵀ·scale) of the conditional half of the batch with diffusers'
  ``Attention.get_attention_scores``. It keeps, per spatial position, the probability given to
  the chosen word's token positions (summed over a word's tokens, averaged over heads).
* ``conv``: a forward hook on each down, mid and up block keeps the mean |activation| over
  channels of the block's output (the conditional half).

Both are averaged over the denoising steps. Each layer's map is upsampled (bilinear) to the image
size, then the layers are averaged with equal weight. The processors and hooks are removed in a
``finally``, so later renders are what they would have been.

Checked against DAAM (castorini/daam at 09564e048cf5ffc1523aa0605736e7f178ca505a, its own
`daam.trace` run on the tiny pipeline, latent size set to tiny's 8×8): same image, and per-word
maps with Pearson r 0.997 ("circle") and 0.991 ("background") to ours without the mid block (DAAM
leaves it out by default). DAAM sums over steps where this averages (a factor of the step count)
and upsamples bicubic where this is bilinear.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from registry import Output, Registry

from ..errors import UsageError
from .engine import Session
from .service import MAX_TOKENS, Request, check_out_dir, prepare, render_and_store

LAYERS = ("attn", "conv")
_EDGE_PUNCT = ",.;:!?()[]{}\"'`，。、；：！？（）【】《》「」"
_CJK = re.compile("[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff]")


@dataclass(frozen=True)
class HeatMap:
    """One map: `values` normalised to [0, 1] at the image's size, `raw` before normalising
    (mean attention probability, or mean |activation|)."""

    label: str
    values: object  # np.ndarray (H, W) float32
    raw: object
    detail: dict = field(default_factory=dict)  # attn: {"tokens": [...]}; conv: {"block": ..., "shape": [c, h, w]}


@dataclass(frozen=True)
class Explanation:
    output: Output
    layers: str
    image: object  # PIL image, as stored
    maps: list[HeatMap]
    files: dict  # label -> Path of its overlay PNG
    sheet: Path
    image_file: Path | None = None  # the image's PNG under --out


# ---------------------------------------------------------------- words and tokens


def prompt_words(prompt: str) -> list[str]:
    """The prompt's words as a person reads them (whitespace-separated, punctuation stripped)."""
    words = []
    for chunk in prompt.split():
        w = chunk.strip(_EDGE_PUNCT)
        if w and w not in words:
            words.append(w)
    return words


def _spans(text: str, word: str, ignore_case: bool) -> list[tuple[int, int]]:
    """Character spans of `word` in `text`; a word that starts or ends with a Latin letter or digit
    must start or end a word there ("red" is not in "reddish"), CJK matches anywhere."""
    left = "" if _CJK.match(word[0]) or not word[0].isalnum() else r"(?<![0-9A-Za-z])"
    right = "" if _CJK.match(word[-1]) or not word[-1].isalnum() else r"(?![0-9A-Za-z])"
    pattern = re.compile(left + re.escape(word) + right, re.IGNORECASE if ignore_case else 0)
    return [m.span() for m in pattern.finditer(text)]


def _subsequence(ids: list[int], part: list[int]) -> list[int]:
    found = []
    for i in range(len(ids) - len(part) + 1):
        if part and ids[i:i + len(part)] == part:
            found.extend(range(i, i + len(part)))
    return found


def word_positions(pipe, prompt: str, word: str) -> list[int]:
    """The token positions (0 is the start token) the text encoder gives `word` in `prompt`,
    found as the pipeline tokenizes: textual-inversion tokens expanded, cut at 77 tokens. Empty
    when the word is not there."""
    from ..adapters import ti

    tok = pipe.tokenizer
    convert = getattr(pipe, "maybe_convert_prompt", lambda p, _t: p)
    text, needle = convert(prompt, tok), convert(word, tok)
    ignore_case = ti.lowercases(tok)
    limit = tok.model_max_length
    if getattr(tok, "is_fast", False):  # offsets: exact for words inside a longer run (书法 in 书法永)
        enc = tok(text, truncation=True, max_length=limit, return_offsets_mapping=True)
        spans = _spans(text, needle, ignore_case)
        return [i for i, (s, e) in enumerate(enc["offset_mapping"])
                if e > s and any(s < b and a < e for a, b in spans)]
    ids = tok(text, truncation=True, max_length=limit).input_ids
    return _subsequence(ids, tok(needle, add_special_tokens=False).input_ids)


def resolve_words(pipe, prompt: str, words: list[str], warn) -> list[tuple[str, list[int]]]:
    """Each --token word with its positions; a word the prompt lacks is a usage error naming the
    prompt's words."""
    seen, resolved = set(), []
    tok = pipe.tokenizer
    text = getattr(pipe, "maybe_convert_prompt", lambda p, _t: p)(prompt, tok)
    ids = tok(text, truncation=True, max_length=tok.model_max_length).input_ids
    for word in words:
        word = word.strip()
        if not word:
            raise UsageError("--token is empty; give a word of the prompt, e.g. --token cat")
        if word in seen:
            raise UsageError(f"--token {word} is given twice; give each word once")
        seen.add(word)
        positions = word_positions(pipe, prompt, word)
        if not positions:
            where = (f"past the {MAX_TOKENS} tokens the text encoder reads"
                     if _spans(prompt, word, True) else "not a word of the prompt")
            raise UsageError(f"--token {word!r} is {where}; the prompt's words are: "
                             f"{', '.join(prompt_words(prompt)) or '(none)'}")
        if tok.unk_token_id is not None and all(ids[p] == tok.unk_token_id for p in positions):
            warn(f"--token {word}: this base's tokenizer has no token for it (it reads {tok.unk_token}), so its "
                 f"map is the unknown token's at that place")
        resolved.append((word, positions))
    return resolved


# ---------------------------------------------------------------- recorders


def _grid_shape(n: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) of a layer with n positions: the latent's size halved (rounding up, as the
    UNet's stride-2 convolutions do) until it fits."""
    h, w = latent_hw
    while h * w > n and (h > 1 or w > 1):
        h, w = -(-h // 2), -(-w // 2)
    if h * w != n:
        raise ValueError(f"a layer with {n} positions does not fit a {latent_hw} latent")
    return h, w


def attention_probs(attn, hidden_states, context):
    """softmax(QKᵀ·scale) of one diffusers `Attention` layer, in fp32: (batch·heads, positions,
    tokens), the probabilities its processor applies to the values (no mask: SD's cross-attention
    has none)."""
    hs, ctx = hidden_states, context
    if hs.ndim == 4:
        hs = hs.flatten(2).transpose(1, 2)
    if attn.group_norm is not None:
        hs = attn.group_norm(hs.transpose(1, 2)).transpose(1, 2)
    if attn.norm_cross:
        ctx = attn.norm_encoder_hidden_states(ctx)
    q = attn.head_to_batch_dim(attn.to_q(hs)).float()
    k = attn.head_to_batch_dim(attn.to_k(ctx)).float()
    if getattr(attn, "norm_q", None) is not None:
        q = attn.norm_q(q)
    if getattr(attn, "norm_k", None) is not None:
        k = attn.norm_k(k)
    return attn.get_attention_scores(q, k, None)


class _RecordingProcessor:
    """Runs the layer's own processor for the output and records its attention beside it."""

    def __init__(self, inner, name: str, recorder: "CrossAttentionRecorder"):
        self.inner, self.name, self.recorder = inner, name, recorder

    def __call__(self, attn, hidden_states, *args, **kwargs):
        out = self.inner(attn, hidden_states, *args, **kwargs)
        context = kwargs.get("encoder_hidden_states", args[0] if args else None)
        if context is not None:
            self.recorder.add(self.name, attn, hidden_states, context)
        return out


class CrossAttentionRecorder:
    """The attention the last image of each batch (the conditional half under CFG) gives each
    word, summed over steps per cross-attention layer."""

    def __init__(self, positions: list[list[int]], latent_hw: tuple[int, int]):
        self.positions, self.latent_hw = positions, latent_hw
        self.sums: dict = {}
        self.counts: dict = {}

    def add(self, name: str, attn, hidden_states, context) -> None:
        import torch

        probs = attention_probs(attn, hidden_states[-1:], context[-1:]).mean(0)  # heads averaged
        per_word = torch.stack([probs[:, p].sum(-1) for p in self.positions], -1)  # (positions, words)
        self.sums[name] = self.sums.get(name, 0) + per_word.detach().cpu()
        self.counts[name] = self.counts.get(name, 0) + 1

    @contextmanager
    def installed(self, unet):
        """Every attn2 wrapped for the duration; the original processors back afterwards, always."""
        original = unet.attn_processors
        wrapped = {name: _RecordingProcessor(p, name, self) if name.endswith("attn2.processor") else p
                   for name, p in original.items()}
        if wrapped == original:
            raise UsageError("this base's UNet has no cross-attention layers (attn2) to explain")
        unet.set_attn_processor(wrapped)
        try:
            yield self
        finally:
            unet.set_attn_processor(dict(original))

    def maps(self, size: tuple[int, int]):
        """(word count, H, W) raw maps: each layer's mean over steps, upsampled, layers averaged."""
        import torch
        import torch.nn.functional as F

        layers = []
        for name, total in self.sums.items():
            mean = total / self.counts[name]  # (n, words)
            h, w = _grid_shape(mean.shape[0], self.latent_hw)
            grid = mean.T.reshape(1, -1, h, w)
            layers.append(F.interpolate(grid, size=size, mode="bilinear", align_corners=False)[0])
        if not layers:
            raise RuntimeError("no cross-attention was recorded")
        return torch.stack(layers).mean(0).numpy()


def _blocks(unet) -> list[tuple[str, object]]:
    blocks = [(f"down {i}", b) for i, b in enumerate(unet.down_blocks)]
    if unet.mid_block is not None:
        blocks.append(("mid", unet.mid_block))
    return blocks + [(f"up {i}", b) for i, b in enumerate(unet.up_blocks)]


class BlockEnergyRecorder:
    """Mean |activation| over channels of each UNet block's output (last image of the batch),
    summed over steps."""

    def __init__(self):
        self.sums: dict = {}
        self.counts: dict = {}
        self.shapes: dict = {}

    def _hook(self, label: str):
        def hook(_module, _inputs, output):
            x = output[0] if isinstance(output, tuple) else output
            x = x[-1].float()  # (C, h, w)
            self.shapes[label] = list(x.shape)
            self.sums[label] = self.sums.get(label, 0) + x.abs().mean(0).detach().cpu()
            self.counts[label] = self.counts.get(label, 0) + 1

        return hook

    @contextmanager
    def installed(self, unet):
        handles = [block.register_forward_hook(self._hook(label)) for label, block in _blocks(unet)]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def maps(self, size: tuple[int, int]) -> list[tuple[str, object]]:
        import torch.nn.functional as F

        result = []
        for label in self.sums:
            mean = (self.sums[label] / self.counts[label])[None, None]
            result.append((label, F.interpolate(mean, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()))
        return result


# ---------------------------------------------------------------- pictures

# inferno's colours at 0, .25, .5, .75, 1 (dark, low -> bright, high)
_STOPS = ((0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164))


def normalise(raw):
    """Min-max to [0, 1] (a flat map is all zeros)."""
    import numpy as np

    lo, hi = float(raw.min()), float(raw.max())
    return np.zeros_like(raw, dtype=np.float32) if hi - lo <= 0 else ((raw - lo) / (hi - lo)).astype(np.float32)


def colour_map(values):
    """(H, W) in [0, 1] -> (H, W, 3) uint8 colours."""
    import numpy as np

    stops = np.array(_STOPS, dtype=np.float32)
    x = np.clip(values, 0, 1) * (len(stops) - 1)
    i = np.minimum(x.astype(int), len(stops) - 2)
    f = (x - i)[..., None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).round().astype(np.uint8)


def overlay(image, values, alpha: float = 0.6):
    """The heat map blended over the image."""
    import numpy as np
    from PIL import Image

    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    mixed = base * (1 - alpha) + colour_map(values).astype(np.float32) * alpha
    return Image.fromarray(mixed.round().clip(0, 255).astype(np.uint8))


def _file_label(label: str, taken: set) -> str:
    stem = "".join(c if c.isalnum() or c in "-._" else "-" for c in label) or "word"
    name, i = stem, 2
    while name in taken:
        name, i = f"{stem}-{i}", i + 1
    taken.add(name)
    return name


# ---------------------------------------------------------------- the command


def check_layers(layers: str, words: list[str]) -> str:
    if layers not in LAYERS:
        raise UsageError(f"--layers {layers!r}: use attn (per-word cross-attention) or conv (per-block energy)")
    if layers == "attn" and not words:
        raise UsageError("name a word of the prompt to explain with --token WORD (repeatable)")
    if layers == "conv" and words:
        raise UsageError("--token is for --layers attn (conv maps are per UNet block, not per word); drop --token")
    return layers


def explain(req: Request, words: list[str], layers: str = "attn", *, registry: Registry | None = None,
            session: Session | None = None, out_dir=None, warn=None, placement=None) -> Explanation:
    """Render req (one image) as `generate` does while recording, store the image as an output,
    and write one overlay PNG per word (or per block) plus a labelled sheet."""
    import random

    warn = warn or (lambda m: None)
    check_layers(layers, words)
    if req.content:
        raise UsageError("explain renders text to image; it takes no content image")
    req.n = 1
    out_path = check_out_dir(out_dir)
    reg, session, recorded, _, _ = prepare(req, registry=registry, session=session, out_dir=out_dir, warn=warn,
                                           placement=placement)  # textual-inversion words are known from here on
    resolved = resolve_words(session.pipe, req.prompt, words, warn) if layers == "attn" else []
    seed = req.seed if req.seed is not None else random.SystemRandom().randint(0, 2**32 - 1)
    req.extra = {**req.extra, "explain": {"layers": layers, "tokens": {w: p for w, p in resolved}}}

    unet = session.pipe.unet
    factor = 2 ** (len(session.pipe.vae.config.block_out_channels) - 1)
    size = (req.height, req.width)
    if layers == "attn":
        recorder = CrossAttentionRecorder([p for _, p in resolved], (req.height // factor, req.width // factor))
    else:
        recorder = BlockEnergyRecorder()
    out_existed = out_path is not None and out_path.exists()
    with recorder.installed(unet):
        (output,) = render_and_store([(req, seed)], session, recorded, reg, out_dir=out_path)

    from .studies import _image

    image = _image(reg, output)
    if layers == "attn":
        raw = recorder.maps(size)
        maps = [HeatMap(w, normalise(r), r, {"tokens": p}) for (w, p), r in zip(resolved, raw)]
    else:
        maps = [HeatMap(label, normalise(r), r, {"block": label, "shape": recorder.shapes[label]})
                for label, r in recorder.maps(size)]
    return _write(output, layers, image, maps, reg, out_path, out_existed)


def _write(output: Output, layers: str, image, maps: list[HeatMap], reg: Registry, out_path: Path | None,
           out_existed: bool) -> Explanation:
    """The overlays and the sheet, each written atomically; on any failure the files written so
    far, the image's PNG, its output record and a folder made for them are taken back."""
    import io

    from ..files import write_bytes_atomic
    from .grid import make_strip
    from .service import out_file_name
    from .studies import _cell

    folder = out_path or reg.home / "explain" / output.id
    image_file = out_path / out_file_name(output) if out_path else None
    made_folder = not out_existed if out_path else not folder.exists()
    written: list[Path] = []

    def put(name: str, picture) -> Path:
        buf = io.BytesIO()
        picture.save(buf, format="PNG")
        path = write_bytes_atomic(folder / name, buf.getvalue(), error=f"cannot write the heat maps into {folder}")
        written.append(path)
        return path

    try:
        folder.mkdir(parents=True, exist_ok=True)
        taken: set = set()
        pictures, files = [], {}
        for m in maps:
            pic = overlay(image, m.values)
            pictures.append(pic)
            files[m.label] = put(f"{output.id}_{layers}-{_file_label(m.label, taken)}.png", pic)
        labels = ["image"] + [m.label if layers == "attn" else "{} · {}×{}".format(m.label, *m.detail["shape"][1:])
                              for m in maps]
        title = output.prompt if layers == "attn" else f"{output.prompt} — block energy (mean |activation|)"
        sheet = make_strip([image, *pictures], labels, title=title, cell_size=_cell(image))
        sheet_file = put(f"{output.id}_{layers}-sheet.png", sheet)
    except BaseException:
        for path in written + ([image_file] if image_file is not None else []):
            path.unlink(missing_ok=True)
        if made_folder and folder.exists() and not any(folder.iterdir()):
            folder.rmdir()
        reg.remove(Output, output.id)
        raise
    return Explanation(output=output, layers=layers, image=image, maps=maps, files=files, sheet=sheet_file,
                       image_file=image_file)
