"""CLIP features for evaluation: which CLIP model, its identity, image/text embeddings, a cache.

A CLIP spec is `tiny` (a toy CLIP with random weights, built from code on first use under
<home>/models/clip-tiny/<version>/, for trying the workflow: its scores mean nothing), a Hugging
Face repo id found in the local HF cache (never downloaded here), or a local folder holding a CLIP
`config.json` (model_type "clip") and `.safetensors` weights. Pickled weights are refused.

Images are preprocessed with PIL/numpy the way CLIP's image processor does it (shorter side to the
model's size with bicubic resampling, center crop, [0, 1], per-channel mean/std), with the values
read from the folder's preprocessor_config.json / config.json where present. Image embeddings can
be cached on disk per model hash (<home>/cache/embeddings/<hash[:16]>/), keyed by caller-given keys
such as the sha256 of each image's bytes, so a model change never reuses another model's numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, ModelNotFound, UsageError

ENV_CLIP = "STYLER_CLIP"
TINY_CLIP_VERSION = "4"  # 1: random weights; 2: first world pretraining; 3: trained with auxiliary attribute heads;
# 4: then its vision tower on softened pictures too (pretrain.robust_vision), so it reads style through blur (shipped)
TINY_MARKER = "styler_clip_tiny.json"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_TOKENS = 77
CACHE_FORMAT = 1  # bump when preprocessing changes: old cache entries are then ignored
_SEED_LOCK = threading.Lock()

# The tiny CLIP's towers. Its text tower is the tiny base's text encoder (styler.models.tiny).
TINY_VISION = {"hidden_size": 96, "intermediate_size": 256, "num_hidden_layers": 3, "num_attention_heads": 4,
               "image_size": 64, "patch_size": 8, "num_channels": 3, "hidden_act": "quick_gelu"}
TINY_PROJECTION = 64
WORLD_NOTE = ("tiny CLIP: trained on styler's built-in world; compare its scores with each other, "
              "not with published CLIP scores")


def clip_note(protocols) -> str:
    """One line for a table or report whose scores used these protocols' CLIPs ('' if none
    needs a note): the built-in world's tiny CLIP, or a CLIP with random weights."""
    clips = [((p or {}).get("clip") or {}) for p in protocols]
    if any(c.get("world") for c in clips):
        return WORLD_NOTE
    if any(not c.get("meaningful", True) for c in clips):
        return "scores made with a CLIP that has random weights are not meaningful"
    return ""


def tiny_clip_config():
    from transformers import CLIPConfig

    from ..models.tiny import TEXT_CONFIG
    from ..models.tokenizer import special_ids, vocab_size

    return CLIPConfig(text_config={"vocab_size": vocab_size(), **special_ids(), **TEXT_CONFIG},
                      vision_config=dict(TINY_VISION), projection_dim=TINY_PROJECTION)


@dataclass(frozen=True)
class ClipRef:
    name: str
    kind: str  # "tiny" | "hf" | "folder"
    path: Path
    hash: str
    meaningful: bool  # False for toy models with random weights
    world: bool = False  # the built-in world's tiny CLIP: meaningful only against other tiny-CLIP scores

    @property
    def note(self) -> str:
        if self.world:
            return WORLD_NOTE
        return "" if self.meaningful else f"{self.name} has random weights: its scores are not meaningful"


# ---------------------------------------------------------------- the tiny CLIP


def tiny_clip_dir(home: str | os.PathLike, seed: int | None = None) -> Path:
    name = TINY_CLIP_VERSION if seed is None else f"{TINY_CLIP_VERSION}-random{seed}"
    return Path(home) / "models" / "clip-tiny" / name


def _is_built(folder: Path) -> bool:
    return (folder / TINY_MARKER).is_file() and (folder / "config.json").is_file()


def build_tiny_clip(dest: str | os.PathLike, seed: int | None = None) -> Path:
    """Build the tiny CLIP into `dest` atomically (temp folder beside it, renamed into place): the
    shipped pretrained weights (checked by sha256), or random ones from `seed` (tests). Same
    arguments, same bytes."""
    import torch
    from transformers import CLIPModel

    from ..models.load import quiet
    from ..models.tiny import shipped_state
    from ..models.tokenizer import write_tokenizer

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.build-", dir=dest.parent))
    try:
        config = tiny_clip_config()
        if seed is None:
            model = CLIPModel(config).eval()
            model.load_state_dict(shipped_state("clip"))
        else:
            with _SEED_LOCK, torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = CLIPModel(config).eval()
        with quiet():
            model.save_pretrained(str(tmp), safe_serialization=True)
        write_tokenizer(tmp)
        size = TINY_VISION["image_size"]
        pre = {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": size},
               "resample": 3, "do_center_crop": True, "crop_size": {"height": size, "width": size},
               "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
               "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "do_convert_rgb": True}
        (tmp / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n", "utf-8")
        if seed is None:
            marker = {"name": "clip-tiny", "version": TINY_CLIP_VERSION, "weights": "pretrained",
                      "note": WORLD_NOTE + " (recipe: styler/models/pretrain.py)"}
        else:
            marker = {"name": "clip-tiny", "version": TINY_CLIP_VERSION, "weights": "random", "seed": seed,
                      "note": "toy CLIP with random weights (tests); scores are not meaningful"}
        (tmp / TINY_MARKER).write_text(json.dumps(marker, indent=2) + "\n", "utf-8")
        os.chmod(tmp, 0o755)
        try:
            os.replace(tmp, dest)
        except OSError:
            if not _is_built(dest):  # an incomplete leftover: move it aside and retry
                stale = Path(tempfile.mkdtemp(prefix=f".{dest.name}.stale-", dir=dest.parent))
                os.replace(dest, stale / "old")
                shutil.rmtree(stale, ignore_errors=True)
                os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def ensure_tiny_clip(home: str | os.PathLike | None = None, seed: int | None = None) -> Path:
    """The toy CLIP's folder in `home` (default: styler's home), built on first use."""
    from filelock import FileLock

    from ..config import home as styler_home

    home = Path(home) if home is not None else styler_home()
    folder = tiny_clip_dir(home, seed)
    if _is_built(folder):
        return folder
    (home / ".locks").mkdir(parents=True, exist_ok=True)
    with FileLock(str(home / ".locks" / "clip-tiny.lock")):
        if not _is_built(folder):
            build_tiny_clip(folder, seed)
            # earlier versions (random weights) are derived files nothing rebuilds: remove them;
            # scores made with them keep their protocol (name, hash, meaningful False)
            for old in (home / "models" / "clip-tiny").glob("*"):
                if not old.name.startswith(TINY_CLIP_VERSION) and not old.name.startswith(".") and _is_built(old):
                    shutil.rmtree(old, ignore_errors=True)
    return folder


# ---------------------------------------------------------------- resolving and identity


def _not_configured() -> ModelNotFound:
    from ..config import settings_path

    return ModelNotFound(
        "no CLIP model configured for evaluation; point styler at one with --clip "
        "openai/clip-vit-large-patch14 (in your HF cache) or a local folder, set `clip = …` in "
        f"{settings_path()}, or use --clip tiny (trained on the built-in world: for the tiny base)")


def clip_weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.safetensors") if p.is_file())


def _check_folder(folder: Path, label: str) -> None:
    from ..models.resolve import NON_SAFETENSORS_WEIGHTS, PICKLE_SUFFIXES, _read_json

    if not (folder / "config.json").is_file():
        raise ModelNotFound(f"{label} has no config.json; a CLIP folder holds config.json and .safetensors weights "
                            "(as saved by transformers' CLIPModel.save_pretrained)")
    model_type = _read_json(folder / "config.json").get("model_type")
    if model_type != "clip":
        raise ModelNotFound(f"{label} is not a CLIP model (config.json model_type is {model_type!r}, expected 'clip')")
    if not clip_weight_files(folder):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise UsageError(f"{label} has only pickled weights ({', '.join(pickles)}); styler does not unpickle "
                             "files, which can run arbitrary code: convert them to .safetensors or use a copy that has them")
        other = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in NON_SAFETENSORS_WEIGHTS)
        if other:
            raise UsageError(f"{label} has only Flax or TensorFlow weights ({', '.join(other)}); styler reads only "
                             ".safetensors: convert them or use a copy that has them")
        raise ModelNotFound(f"{label} has no .safetensors weights")


def clip_hash(folder: Path) -> str:
    """sha256 over config.json and the safetensors weights (per-file digests are cached in
    <home>/models/hashes.json, shared with the base models' identity, so big files are read once)."""
    from filelock import FileLock

    from ..config import home
    from ..models.resolve import _file_digest, _read_json

    root = home()
    (root / ".locks").mkdir(parents=True, exist_ok=True)
    cache_path = root / "models" / "hashes.json"
    files = [("config.json", folder / "config.json")] + [(p.name, p) for p in clip_weight_files(folder)]
    with FileLock(str(root / ".locks" / "hashes.lock")):
        cache = _read_json(cache_path)
        before = dict(cache)
        lines = [f"{rel} {_file_digest(path, cache)}" for rel, path in files]
        if cache != before:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_name(f".hashes.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n", "utf-8")
            os.replace(tmp, cache_path)
    return hashlib.sha256("".join(line + "\n" for line in lines).encode()).hexdigest()


def default_clip_for(base_kinds) -> str | None:
    """The CLIP to use when none is configured: the tiny CLIP when what is scored was made on the
    built-in tiny base (the two were pretrained on the same world), else None (configure one)."""
    return "tiny" if "tiny" in set(base_kinds) else None


def resolve_clip(spec: str | None = None, fallback: str | None = None) -> ClipRef:
    """The CLIP model for evaluation: `spec`, else $STYLER_CLIP, else `clip` in config.toml, else
    `fallback` (see default_clip_for)."""
    from ..config import load_settings, settings_path

    origin = ""
    if not spec or not spec.strip():
        spec, origin = os.environ.get(ENV_CLIP, "").strip(), f" (from {ENV_CLIP})"
    if not spec:
        spec, origin = load_settings().clip.strip(), f" (from clip in {settings_path()})"
    if not spec and fallback:
        spec, origin = fallback, " (the default on the tiny base)"
    if not spec:
        raise _not_configured()
    spec = spec.strip()
    if spec.lower() == "tiny":
        folder = ensure_tiny_clip()
        return ClipRef("clip-tiny", "tiny", folder, clip_hash(folder), meaningful=True, world=True)
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path.resolve()
        _check_folder(path, f"{path}{origin}")
        return ClipRef(path.name, "folder", path, clip_hash(path), meaningful=not _is_built(path))
    if path.is_file():
        raise UsageError(f"{path}{origin} is a file; --clip takes a CLIP model folder (config.json + .safetensors), "
                         "a Hugging Face repo id or tiny")
    from ..models.resolve import hf_cache_dir, hf_snapshot, is_repo_id

    if is_repo_id(spec):
        snap = hf_snapshot(spec)
        if snap is None:
            raise ModelNotFound(f"CLIP model {spec!r}{origin} is not in the local Hugging Face cache ({hf_cache_dir()}); "
                                "styler does not download it: fetch it yourself (hf download "
                                f"{spec}) or give a local folder with --clip")
        _check_folder(snap, f"CLIP model {spec!r}{origin} ({snap})")
        return ClipRef(spec, "hf", snap, clip_hash(snap), meaningful=not _is_built(snap))
    raise ModelNotFound(f"CLIP model {spec!r}{origin} not found: no such folder, and not a Hugging Face repo id "
                        "(expected tiny, a folder or org/name)")


# ---------------------------------------------------------------- preprocessing


def _preprocess_settings(folder: Path, config) -> dict:
    from ..models.resolve import _read_json

    pre = _read_json(folder / "preprocessor_config.json")
    size = int(config.vision_config.image_size)

    def as_hw(value, default):
        if isinstance(value, dict):
            if "height" in value:
                return int(value["height"]), int(value.get("width", value["height"]))
            if "shortest_edge" in value:
                return int(value["shortest_edge"]), int(value["shortest_edge"])
        if isinstance(value, (int, float)):
            return int(value), int(value)
        return default

    resize = as_hw(pre.get("size"), (size, size))[0]
    crop = as_hw(pre.get("crop_size"), (size, size))
    mean = tuple(float(x) for x in pre.get("image_mean", CLIP_MEAN))
    std = tuple(float(x) for x in pre.get("image_std", CLIP_STD))
    return {"resize": resize, "crop": crop, "mean": mean, "std": std}


def _open_image(image):
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image
    try:
        with Image.open(image) as im:
            im.load()
            return im.copy()
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read image {image}: {getattr(exc, 'strerror', None) or exc}") from None


def preprocess(image, settings: dict):
    """One image → float32 array [3, H, W], as CLIP's image processor prepares it."""
    import numpy as np
    from PIL import Image

    im = _open_image(image).convert("RGB")
    short = settings["resize"]
    w, h = im.size
    scale = short / min(w, h)
    new = (max(short, round(w * scale)), max(short, round(h * scale)))
    if new != (w, h):
        im = im.resize(new, Image.Resampling.BICUBIC)
    ch, cw = settings["crop"]
    left, top = (new[0] - cw) // 2, (new[1] - ch) // 2
    im = im.crop((left, top, left + cw, top + ch))
    arr = np.asarray(im, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(settings["mean"], np.float32)) / np.asarray(settings["std"], np.float32)
    return arr.transpose(2, 0, 1)


# ---------------------------------------------------------------- features


class ClipFeatures:
    """A loaded CLIP model: `image_embeddings` and `text_embeddings`, L2-normalised, [N, D]."""

    def __init__(self, ref: ClipRef, model, settings: dict, placement=None, batch_size: int = 32):
        from ..device import Placement

        self.ref = ref
        self.model = model
        self.settings = settings
        self.placement = placement or Placement()
        self.device = self.placement.device
        self.batch_size = batch_size
        self._tokenizer = None

    @classmethod
    def open(cls, ref: ClipRef, batch_size: int = 32, placement=None) -> "ClipFeatures":
        """Load CLIP on `placement` (default: resolve_placement(): the GPU when there is one)."""
        from transformers import CLIPModel

        from ..device import resolve_placement
        from ..models.load import quiet

        placement = placement or resolve_placement()
        try:
            with quiet():
                model = CLIPModel.from_pretrained(str(ref.path), use_safetensors=True, dtype=placement.torch_dtype)
        except (OSError, ValueError) as exc:
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"cannot load CLIP model {ref.name} from {ref.path}: {line}") from None
        model = model.to(placement.device).eval()
        return cls(ref, model, _preprocess_settings(ref.path, model.config), placement, batch_size)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import CLIPTokenizer

            self._tokenizer = CLIPTokenizer.from_pretrained(str(self.ref.path))
        return self._tokenizer

    @property
    def cache_dir(self) -> Path:
        from ..config import home

        # embeddings differ with the dtype they were computed in: one cache per dtype (fp32 keeps the old name)
        suffix = "" if self.placement.dtype == "fp32" else f"-{self.placement.dtype}"
        return home() / "cache" / "embeddings" / (self.ref.hash[:16] + suffix)

    # the two model calls, kept separate so tests can watch them
    def _encode_images(self, pixels):
        out = self.model.vision_model(pixel_values=pixels, return_dict=True)
        return self.model.visual_projection(out.pooler_output)

    def _encode_texts(self, input_ids, attention_mask):
        out = self.model.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return self.model.text_projection(out.pooler_output)

    def _compute_images(self, images) -> "torch.Tensor":
        import numpy as np
        import torch

        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([preprocess(im, self.settings) for im in images[start:start + self.batch_size]])
            with torch.inference_mode():
                emb = self._encode_images(torch.from_numpy(batch).to(self.device, self.placement.torch_dtype))
            chunks.append(emb.float().cpu())
        return _normalise(torch.cat(chunks), "image")

    def image_embeddings(self, images, keys=None):
        """L2-normalised image embeddings [N, D] for PIL images or paths. With `keys` (one string
        per image, e.g. the sha256 of its bytes) results are cached on disk for this model."""
        import torch

        images = list(images)
        if keys is None:
            if not images:
                return torch.zeros(0, self.model.config.projection_dim)
            return self._compute_images(images)
        keys = [str(k) for k in keys]
        if len(keys) != len(images):
            raise UsageError(f"{len(images)} images but {len(keys)} cache keys")
        cache = _EmbeddingCache(self.cache_dir)
        found = cache.get(set(keys))
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            todo = list(dict.fromkeys(keys[i] for i in missing))
            first = {keys[i]: i for i in reversed(missing)}
            fresh = self._compute_images([images[first[k]] for k in todo])
            cache.put(todo, fresh)
            found.update(zip(todo, fresh))
        if not keys:
            return torch.zeros(0, self.model.config.projection_dim)
        return _normalise(torch.stack([found[k] for k in keys]).float(), "image")

    def text_embeddings(self, texts):
        """L2-normalised text embeddings [N, D]; texts longer than 77 tokens are truncated."""
        import torch

        texts = [str(t) for t in texts]
        if not texts:
            return torch.zeros(0, self.model.config.projection_dim)
        length = min(MAX_TOKENS, int(self.model.config.text_config.max_position_embeddings))
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            tok = self.tokenizer(texts[start:start + self.batch_size], padding="max_length", truncation=True,
                                 max_length=length, return_tensors="pt")
            with torch.inference_mode():
                emb = self._encode_texts(tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device))
            chunks.append(emb.float().cpu())
        return _normalise(torch.cat(chunks), "text")


def _normalise(emb, what: str):
    import torch

    bad = int((~torch.isfinite(emb)).any(dim=-1).sum())
    if bad:
        things = "image(s)" if what == "image" else "text(s)"
        raise InputError(f"CLIP features contain NaN for {bad} {things} of {emb.shape[0]}; "
                         "the model or the images are broken")
    return torch.nn.functional.normalize(emb, dim=-1)


class _EmbeddingCache:
    """Per-model embedding cache: shard-<sha>.safetensors files (rows "k0", "k1", …) plus
    index.json {key: [shard, row]}. Shards are written once (temp + rename); the index is merged
    under a file lock, so concurrent writers only ever add entries."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.index_path = folder / "index.json"

    def _index(self) -> dict:
        try:
            data = json.loads(self.index_path.read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            return {}
        return data.get("keys", {}) if isinstance(data.get("keys"), dict) else {}

    def get(self, keys: set[str]) -> dict:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        index = self._index()
        by_shard: dict[str, list[tuple[str, int]]] = {}
        for k in keys:
            entry = index.get(k)
            if isinstance(entry, list) and len(entry) == 2:
                by_shard.setdefault(str(entry[0]), []).append((k, int(entry[1])))
        found = {}
        for shard, rows in by_shard.items():
            try:
                tensors = load_file(str(self.folder / shard))
            except (OSError, SafetensorError):
                continue  # a lost or damaged shard: those rows are recomputed
            for k, row in rows:
                t = tensors.get(f"k{row}")
                if t is not None:
                    found[k] = t
        return found

    def put(self, keys: list[str], emb) -> None:
        from filelock import FileLock
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        name = "shard-" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:24] + ".safetensors"
        tmp = self.folder / f".{name}.{os.getpid()}.tmp"
        save_file({f"k{i}": emb[i].contiguous().clone() for i in range(len(keys))}, str(tmp))
        os.replace(tmp, self.folder / name)
        with FileLock(str(self.folder / ".index.lock")):
            index = self._index()
            index.update({k: [name, i] for i, k in enumerate(keys)})
            tmp = self.folder / f".index.{os.getpid()}.tmp"
            tmp.write_text(json.dumps({"format": CACHE_FORMAT, "keys": index}) + "\n", "utf-8")
            os.replace(tmp, self.index_path)
