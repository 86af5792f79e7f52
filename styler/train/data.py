"""Training data: a managed dataset's items, a seeded torch Dataset of pixels, tokenising, and a
VAE latent cache.

Randomness (flip, crop, colour jitter, latent noise) comes from a torch.Generator seeded from
(seed, epoch, index), so a run is reproducible whatever the DataLoader's workers or order.

The latent cache encodes every training image once (and its mirror image with flip) and keeps the
VAE's latent distribution (mean and std, unscaled); each step draws a fresh sample
`(mean + std·ε) · scaling_factor`, as encoding the pixels every step would. The cache file is
`<cache_dir>/<sha256(key)[:16]>.safetensors` with the key in its metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from registry import Dataset

from ..errors import InputError, UsageError

AUGMENTS = ("flip", "crop", "color")
SPLITS = ("train", "val", "all")
CROP_ZOOM = 1.125  # "crop": the shorter side goes to R·U(1, 1.125), so square images get crops too
JITTER = 0.1  # "color": brightness, contrast and saturation each scaled by U(0.9, 1.1)
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Item:
    path: Path
    text: str
    split: str


def load_items(record: Dataset, home: Path, split: str = "train") -> list[Item]:
    """The images of a managed dataset version in captions.jsonl order; split "all" keeps both."""
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    folder = Path(home) / record.path
    hint = f"run `styler data verify {record.label}`"
    try:
        lines = (folder / "captions.jsonl").read_text("utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"the files of {record.label} are missing ({folder / 'captions.jsonl'}: "
                         f"{exc.strerror or exc}); {hint}") from None
    items: list[Item] = []
    missing: list[str] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            name, text, part = entry["file"], entry.get("text", ""), entry.get("split", "train")
            rel = Path(name)
            if not isinstance(name, str) or not isinstance(text, str) or rel.is_absolute() or ".." in rel.parts:
                raise ValueError("bad entry")
        except (ValueError, KeyError, TypeError):
            raise InputError(f"captions.jsonl of {record.label} is damaged at line {n}; {hint}") from None
        if split != "all" and part != split:
            continue
        path = folder / "images" / rel
        if not path.is_file():
            missing.append(name)
        items.append(Item(path, text, part))
    if missing:
        shown = ", ".join(missing[:5]) + (f", … ({len(missing)} in all)" if len(missing) > 5 else "")
        raise InputError(f"{len(missing)} image file(s) of {record.label} are missing from "
                         f"{folder / 'images'}: {shown}; {hint}")
    return items


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch, index)."""
    digest = hashlib.sha256(f"styler/{seed}/{epoch}/{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def open_rgb(path: Path) -> Image.Image:
    from ..data.images import BadImage, load_image

    try:
        return load_image(path).image
    except BadImage as exc:
        raise InputError(f"cannot read training image {path}: {exc}") from None


def resize_crop(image: Image.Image, resolution: int | tuple[int, int], *, g: torch.Generator | None = None,
                zoom: float = 1.0) -> Image.Image:
    """Scale the image to cover resolution·zoom (a side, or a (width, height) bucket), then crop to
    it: centred without g, else at random. Only the side that overshoots is cut."""
    tw, th = (resolution, resolution) if isinstance(resolution, int) else (int(resolution[0]), int(resolution[1]))
    w, h = image.size
    scale = max(tw / w, th / h) * zoom
    nw, nh = max(tw, round(w * scale)), max(th, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), Image.Resampling.LANCZOS)
    if g is None:
        left, top = (nw - tw) // 2, (nh - th) // 2
    else:
        left = int(torch.randint(0, nw - tw + 1, (), generator=g))
        top = int(torch.randint(0, nh - th + 1, (), generator=g))
    return image.crop((left, top, left + tw, top + th))


def color_jitter(arr: np.ndarray, g: torch.Generator) -> np.ndarray:
    """Brightness, contrast, saturation each ×U(0.9, 1.1) on an H×W×3 float array in [0, 255]."""
    b, c, s = (_uniform(g, 1 - JITTER, 1 + JITTER) for _ in range(3))
    arr = arr * b
    grey = arr @ np.array([0.299, 0.587, 0.114], dtype=arr.dtype)
    arr = (arr - grey.mean()) * c + grey.mean()
    grey = (arr @ np.array([0.299, 0.587, 0.114], dtype=arr.dtype))[..., None]
    arr = grey + (arr - grey) * s
    return np.clip(arr, 0.0, 255.0)


def to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """H×W×3 pixels in [0, 255] → a 3×H×W float32 tensor in [-1, 1]."""
    arr = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1) / 127.5 - 1.0


class ImageCaptionDataset(torch.utils.data.Dataset):
    """Items as dict(pixels=3×R×R float in [-1, 1], text=str, index=int); with `sizes` (one
    (width, height) bucket per item) item i is 3×height×width instead.

    augment: "flip" (mirror with p=0.5), "crop" (random crop of a slightly zoomed image instead of
    the centre crop), "color" (±10% brightness/contrast/saturation). Call set_epoch each epoch."""

    def __init__(self, items: Sequence[Item], resolution: int, augment: Iterable[str] = (), seed: int = 0,
                 sizes: Sequence[tuple[int, int]] | None = None):
        augment = set(augment)
        unknown = sorted(augment - set(AUGMENTS))
        if unknown:
            raise UsageError(f"unknown --augment {', '.join(unknown)}; use {', '.join(AUGMENTS)}")
        self.items = list(items)
        self.resolution = int(resolution)
        if sizes is not None and len(sizes) != len(self.items):
            raise ValueError(f"{len(sizes)} bucket sizes for {len(self.items)} images")
        self.sizes = [tuple(s) for s in sizes] if sizes is not None else None
        self.augment = frozenset(augment)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        g = item_generator(self.seed, self.epoch, i)
        image = open_rgb(item.path)
        target = self.sizes[i] if self.sizes is not None else self.resolution
        if "crop" in self.augment:
            image = resize_crop(image, target, g=g, zoom=_uniform(g, 1.0, CROP_ZOOM))
        else:
            image = resize_crop(image, target)
        if "flip" in self.augment and float(torch.rand((), generator=g)) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        arr = np.asarray(image, dtype=np.float32)
        if "color" in self.augment:
            arr = color_jitter(arr, g)
        return {"pixels": to_tensor(arr), "text": item.text, "index": i}


def _max_length(tokenizer) -> int:
    n = int(getattr(tokenizer, "model_max_length", 77) or 77)
    return 77 if n > 100_000 else n  # a tokenizer without model_max_length reports ~1e30


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    """B×model_max_length token ids (padded, truncated)."""
    return tokenizer(list(texts), padding="max_length", max_length=_max_length(tokenizer),
                     truncation=True, return_tensors="pt").input_ids


def truncated_prompts(tokenizer, texts: Iterable[str]) -> list[tuple[str, str]]:
    """(text, the part cut off) for every text longer than the tokenizer keeps; in order, once each."""
    budget = _max_length(tokenizer) - tokenizer.num_special_tokens_to_add()
    out: list[tuple[str, str]] = []
    for text in dict.fromkeys(texts):
        try:
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            offsets = enc["offset_mapping"]
        except (NotImplementedError, ValueError, TypeError):  # a slow tokenizer: decode instead
            enc, offsets = tokenizer(text, add_special_tokens=False, verbose=False), None
        ids = enc["input_ids"]
        if len(ids) > budget:
            cut = text[offsets[budget][0]:] if offsets else tokenizer.decode(ids[budget:])
            out.append((text, cut.strip()))
    return out


def check_cache_compatible(augment: Iterable[str], cache_latents: bool) -> None:
    bad = [a for a in ("crop", "color") if a in set(augment)]
    if cache_latents and bad:
        raise UsageError(f"--augment {'/'.join(bad)} changes pixels every epoch, so latents can't be "
                         "cached; add --no-cache-latents")


def cache_file(cache_dir: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return Path(cache_dir) / f"{digest[:16]}.safetensors"


class LatentCache:
    """mean/std: N×V×4×R/8×R/8 float32 on the CPU (N×V×4×H/8×W/8 for a W×H bucket); view 0 is the
    image, view 1 (with flip) its mirror.

    `status` says what build did: "built", "reused", or "rebuilt" (the file was corrupt or stale:
    warn the user). `latents(indices, generator, flips)` gives a B×4×R/8×R/8 batch already
    multiplied by the VAE's scaling factor; `noise=False` gives the scaled means."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, *, scaling_factor: float, shift_factor: float = 0.0,
                 path: Path | None = None, key: dict | None = None, status: str = "built"):
        self.mean, self.std = mean, std
        self.scaling_factor, self.shift_factor = float(scaling_factor), float(shift_factor)
        self.path, self.key, self.status = path, key, status

    @property
    def flip(self) -> bool:
        return self.mean.shape[1] == 2

    def __len__(self) -> int:
        return self.mean.shape[0]

    @classmethod
    def build(cls, vae, dataset_items: Sequence[Item], resolution: int | tuple[int, int], *, flip: bool,
              cache_dir: Path, key: dict, device="cpu", dtype=torch.float32, batch_size: int = 8,
              progress: Callable[[int, int], None] | None = None, write: bool = True) -> "LatentCache":
        """Reuse the cache file for this key, else encode (and, with write, save it). `resolution`
        is a square's side or a (width, height) bucket; the key holds it, so sizes never mix."""
        items = list(dataset_items)
        scaling = float(vae.config.scaling_factor)
        shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
        size = {"resolution": int(resolution)} if isinstance(resolution, int) else {
            "bucket": [int(resolution[0]), int(resolution[1])]}
        full_key = {**key, "cache": {"format": CACHE_FORMAT, **size, "flip": bool(flip),
                                     "dtype": str(dtype).replace("torch.", ""), "scaling_factor": scaling,
                                     "shift_factor": shift, "files": [it.path.name for it in items]}}
        path = cache_file(cache_dir, full_key)
        status = "built"
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        if path.exists():
            loaded = cls._load(path, full_key, len(items), 2 if flip else 1, resolution, factor)
            if loaded is not None:
                mean, std = loaded
                return cls(mean, std, scaling_factor=scaling, shift_factor=shift, path=path, key=full_key, status="reused")
            status = "rebuilt"
        mean, std = cls._encode(vae, items, resolution, flip, device, dtype, batch_size, progress)
        if write:
            cls._write(path, mean, std, full_key)
        return cls(mean, std, scaling_factor=scaling, shift_factor=shift, path=path, key=full_key, status=status)

    @staticmethod
    def _encode(vae, items, resolution, flip, device, dtype, batch_size, progress):
        means, stds = [], []
        total = len(items)
        for start in range(0, total, max(1, batch_size)):
            views = []
            for it in items[start:start + batch_size]:
                im = resize_crop(open_rgb(it.path), resolution)
                views.append(to_tensor(im))
                if flip:
                    views.append(to_tensor(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
            with torch.no_grad():
                dist = vae.encode(torch.stack(views).to(device=device, dtype=dtype)).latent_dist
                mean, std = dist.mean.float().cpu(), dist.std.float().cpu()
            v = 2 if flip else 1
            means.append(mean.reshape(-1, v, *mean.shape[1:]))
            stds.append(std.reshape(-1, v, *std.shape[1:]))
            if progress:
                progress(min(start + batch_size, total), total)
        if not means:
            raise InputError("no training images to cache latents for")
        return torch.cat(means).contiguous(), torch.cat(stds).contiguous()

    @staticmethod
    def _load(path: Path, key: dict, n: int, views: int, resolution: int | tuple[int, int], factor: int = 8):
        """(mean, std) when the file is whole and made for this key; None otherwise."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if json.loads(meta.get("styler_latent_cache", "null")) != json.loads(json.dumps(key)):
                    return None
                mean, std = f.get_tensor("mean"), f.get_tensor("std")
        except Exception:  # truncated, garbage, wrong header: rebuild
            return None
        w, h = (resolution, resolution) if isinstance(resolution, int) else resolution
        if mean.shape != (n, views, mean.shape[2], h // factor, w // factor) or std.shape != mean.shape:
            return None
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            return None
        return mean.float(), std.float()

    @staticmethod
    def _write(path: Path, mean: torch.Tensor, std: torch.Tensor, key: dict) -> None:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file({"mean": mean, "std": std}, tmp,
                      metadata={"styler_latent_cache": json.dumps(key, sort_keys=True, ensure_ascii=False)})
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def latents(self, indices: Sequence[int] | torch.Tensor, generator: torch.Generator | None = None,
                flips: Sequence[bool] | torch.Tensor | None = None, *, noise: bool = True) -> torch.Tensor:
        """B×4×R/8×R/8 scaled latents (CPU float32; move them to the device yourself)."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        view = torch.zeros_like(idx) if flips is None else torch.as_tensor(flips, dtype=torch.long).reshape(-1)
        if view.any() and not self.flip:
            raise ValueError("this latent cache was built without flip")
        mean = self.mean[idx, view]
        if noise:
            mean = mean + self.std[idx, view] * torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return (mean - self.shift_factor) * self.scaling_factor


class BucketLatents:
    """One LatentCache per bucket, behind LatentCache's `latents` (dataset indices in, one bucket
    per batch). Each bucket's file has the bucket's size in its key, so a cache of another size is
    never read for it."""

    def __init__(self, caches: dict[tuple[int, int], LatentCache], where: list[tuple[tuple[int, int], int]]):
        self.caches, self.where = caches, where  # where[i]: (bucket, index within the bucket's cache)

    @classmethod
    def build(cls, vae, dataset_items: Sequence[Item], sizes: Sequence[tuple[int, int]], **kwargs) -> "BucketLatents":
        """`sizes[i]` is item i's bucket; kwargs as LatentCache.build (flip, cache_dir, key, …)."""
        members: dict[tuple[int, int], list[int]] = {}
        for i, size in enumerate(sizes):
            members.setdefault(tuple(size), []).append(i)
        caches, where = {}, [None] * len(sizes)
        for size in sorted(members):
            caches[size] = LatentCache.build(vae, [dataset_items[i] for i in members[size]], size, **kwargs)
            for local, i in enumerate(members[size]):
                where[i] = (size, local)
        return cls(caches, where)

    @property
    def status(self) -> str:
        states = {c.status for c in self.caches.values()}
        return "rebuilt" if "rebuilt" in states else "reused" if states == {"reused"} else "built"

    @property
    def flip(self) -> bool:
        return all(c.flip for c in self.caches.values())

    def __len__(self) -> int:
        return len(self.where)

    def latents(self, indices, generator: torch.Generator | None = None, flips=None, *, noise: bool = True) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1).tolist()
        buckets = {self.where[i][0] for i in idx}
        if len(buckets) != 1:
            raise ValueError(f"a batch must hold one bucket, got {sorted(buckets)}")
        return self.caches[buckets.pop()].latents([self.where[i][1] for i in idx], generator, flips, noise=noise)
