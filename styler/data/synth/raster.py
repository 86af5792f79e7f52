"""Small numeric helpers shared by the painted kinds (calligraphy, watercolor): smooth noise,
blur, smoothstep and conversions between PIL images and float32 arrays in [0, 1] (unless said
otherwise)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
    """Low-frequency noise: a cells[0] x cells[1] random grid upscaled bicubically, in [0, 1]."""
    small = rng.random(cells, dtype=np.float32)
    big = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))
    return np.clip(big, 0.0, 1.0)


def _to_l(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8))


def _from_l(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32) / 255.0


def _blur(a: np.ndarray, radius: float) -> np.ndarray:
    if radius <= 0:
        return a
    return _from_l(_to_l(a).filter(ImageFilter.GaussianBlur(radius)))


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _to_rgb(a: np.ndarray) -> Image.Image:
    """float HxWx3 in [0, 1] → RGB image."""
    return Image.fromarray(np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8))
