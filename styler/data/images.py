"""Opening user images safely, measuring sharpness, and resizing/cropping for training."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_PIXELS = 64_000_000  # above this an image is treated as a decompression bomb (8000×8000)


class BadImage(Exception):
    """An image that cannot be used; the message says why (it goes into the manifest)."""


@dataclass(frozen=True)
class LoadedImage:
    image: Image.Image  # RGB, EXIF orientation applied
    width: int
    height: int
    format: str
    unchanged: bool  # decoded pixels equal the file's own (RGB, no rotation): bytes may be copied


def load_image(path: Path) -> LoadedImage:
    """Open, fully decode and convert to RGB; BadImage for anything truncated, fake or huge."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                fmt = im.format or "?"
                if im.width * im.height > MAX_PIXELS:
                    raise BadImage(f"{im.width}x{im.height} pixels is over the {MAX_PIXELS // 1_000_000} MP limit (decompression bomb?)")
                im.load()
                unchanged = im.mode == "RGB" and im.getexif().get(0x0112, 1) == 1
                im = ImageOps.exif_transpose(im)
                if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    im = _to_8bit(im)
                if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(bg, rgba).convert("RGB")
                else:
                    im = im.convert("RGB")
        except BadImage:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadImage(f"decompression bomb: {exc}") from None
        except Image.UnidentifiedImageError:
            raise BadImage("not an image (unrecognised content)") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise BadImage(f"unreadable image ({exc})") from None
    if im.width < 8 or im.height < 8:
        raise BadImage(f"too small ({im.width}x{im.height}; at least 8x8)")
    return LoadedImage(im, im.width, im.height, fmt, unchanged)


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale ("I;16", "I", "F") as 8-bit "L". PIL's own convert clips
    values above 255, which turns a 16-bit image almost all white; scale by the type's range."""
    arr = np.asarray(im)
    if im.mode == "F":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scaled = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    else:
        peak = float(arr.max())
        top = 65535.0 if im.mode.startswith("I;16") else 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
        scaled = arr.astype(np.float64) / top
    return Image.fromarray(np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8), mode="L")


def laplacian_variance(image: Image.Image) -> float:
    """Variance of the 4-neighbour Laplacian of the grey image (blur detector; sharp > ~100)."""
    g = np.asarray(image.convert("L"), dtype=np.float64)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def prepare(image: Image.Image, size: int | None, crop: str) -> Image.Image:
    """Resize for training: `center` → shorter side to size then a centred size×size crop;
    `none` → longer side to size, aspect kept. size None keeps the image as it is."""
    if not size:
        return image
    w, h = image.size
    if crop == "center":
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = image.resize((nw, nh), Image.Resampling.LANCZOS)
        left, top = (nw - size) // 2, (nh - size) // 2
        return im.crop((left, top, left + size, top + size))
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    return image.resize((nw, nh), Image.Resampling.LANCZOS)


def fit_within(image: Image.Image, size: int | None) -> Image.Image:
    """For bucketed training: the whole picture, scaled down (aspect kept) to at most size×size
    pixels in area when it is larger; never enlarged, never cropped. size None keeps it as it is."""
    w, h = image.size
    if not size or w * h <= size * size:
        return image
    scale = (size * size / (w * h)) ** 0.5
    return image.resize((max(8, int(w * scale)), max(8, int(h * scale))), Image.Resampling.LANCZOS)
