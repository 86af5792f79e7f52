"""The built-in world: simple captioned scenes ("a red circle on a blue background") drawn in
several styles, deterministic from a seed.

A *scene* is content only: a shape (circle, square, triangle, cross), its colour, a background
colour (never the shape's), a position and a size. A *style* draws a scene:

* ``plain`` - flat colours, anti-aliased edges (what the tiny base is pretrained on);
* ``pixel`` - the scene on a 16x16 grid with a dark one-cell outline, a two-shade dithered
  background and a saturated retro palette, scaled up with nearest neighbour;
* ``watercolor`` - pale translucent washes of both colours on white paper, a wobbly edge with a
  darker wet rim, pigment granulation;
* ``calligraphy`` - the shape as a thick dry-brush outline in the shape's colour of ink on fibrous
  paper tinted by the background colour, with a vermilion seal in a corner;
* ``stripes`` - diagonal two-shade stripes over shape and background (a style nothing in the
  shipped world was trained on; benchmarks use it as an unseen style).

All of it is numpy on float32 rasters, vectorised per image (no PIL drawing), so thousands of
64 px images take seconds. ``render(scene, style, size, seed)`` is a pure function of its
arguments: the same call gives the same bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {  # name -> sRGB (0..1)
    "red": (0.86, 0.12, 0.12),
    "orange": (0.96, 0.55, 0.08),
    "yellow": (0.97, 0.90, 0.15),
    "green": (0.15, 0.68, 0.22),
    "blue": (0.13, 0.30, 0.88),
    "purple": (0.55, 0.18, 0.72),
    "white": (0.96, 0.96, 0.96),
    "black": (0.06, 0.06, 0.06),
}
COLOUR_NAMES = tuple(COLOURS)
STYLES = ("plain", "pixel", "watercolor", "calligraphy", "stripes")
WORLD_STYLES = STYLES[:4]  # what the tiny CLIP and VAE are trained on
STYLE_WORDS = {  # how captions name each style
    "plain": "flat colors",
    "pixel": "pixel art",
    "watercolor": "watercolor painting",
    "calligraphy": "书法 ink brush",
    "stripes": "striped pattern",
}


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    background: str
    x: float  # centre, fraction of the width
    y: float
    r: float  # half-size, fraction of the width

    def caption(self) -> str:
        return f"{_article(self.colour)} {self.colour} {self.shape} on {_article(self.background)} {self.background} background"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _rng(seed: int, *parts) -> np.random.Generator:
    digest = hashlib.sha256(repr((int(seed),) + tuple(parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def sample_scene(rng: np.random.Generator) -> Scene:
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
    others = [c for c in COLOUR_NAMES if c != colour]
    background = others[rng.integers(len(others))]
    r = float(rng.uniform(0.17, 0.30))
    x = float(rng.uniform(r + 0.04, 1 - r - 0.04))
    y = float(rng.uniform(r + 0.04, 1 - r - 0.04))
    return Scene(shape, colour, background, x, y, r)


def scenes(n: int, seed: int = 0) -> list[Scene]:
    """`n` scenes, the same for the same seed."""
    rng = _rng(seed, "scenes")
    return [sample_scene(rng) for _ in range(n)]


# ---------------------------------------------------------------- geometry


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(c, c)  # xs, ys in [0, 1]


def sdf(scene: Scene, size: int) -> np.ndarray:
    """Signed distance to the shape's edge in pixels (negative inside)."""
    xs, ys = _grid(size)
    dx, dy = xs - scene.x, ys - scene.y
    r = scene.r
    if scene.shape == "circle":
        d = np.hypot(dx, dy) - r
    elif scene.shape == "square":
        r = r * 0.86  # same visual area as the circle, about
        qx, qy = np.abs(dx) - r, np.abs(dy) - r
        d = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    elif scene.shape == "triangle":  # pointing up, centred on its centroid
        k = np.sqrt(3.0)
        s = r * 1.15
        px, py = np.abs(dx), -(dy) + s * 0.25
        # distance to an equilateral triangle of circumradius-ish s (Inigo Quilez's formula)
        px, py = px - s, py + s / k
        flip = px + k * py > 0
        px, py = np.where(flip, (px - k * py) / 2, px), np.where(flip, (-k * px - py) / 2, py)
        px = px - np.clip(px, -2 * s, 0)
        d = -np.hypot(px, py) * np.sign(py)
    elif scene.shape == "cross":
        w = r * 0.38
        ax, ay = np.abs(dx), np.abs(dy)

        def box(bx, by):
            qx, qy = ax - bx, ay - by
            return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)

        d = np.minimum(box(r, w), box(w, r))
    else:
        raise ValueError(f"unknown shape {scene.shape!r}")
    return (d * size).astype(np.float32)


def _coverage(d: np.ndarray) -> np.ndarray:
    return np.clip(0.5 - d, 0.0, 1.0)


def _blur(a: np.ndarray, passes: int = 2) -> np.ndarray:
    out = a
    for _ in range(passes):
        out = (np.roll(out, 1, 0) + np.roll(out, -1, 0) + np.roll(out, 1, 1) + np.roll(out, -1, 1) + 2 * out) / 6
    return out


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise in [-1, 1] with about `cells` features across."""
    cells = max(2, cells)
    g = rng.uniform(-1, 1, (cells + 1, cells + 1)).astype(np.float32)
    t = np.linspace(0, cells, size, endpoint=False, dtype=np.float32)
    i = t.astype(int)
    f = t - i
    f = f * f * (3 - 2 * f)
    a = g[i][:, i] * (1 - f)[None, :] + g[i][:, i + 1] * f[None, :]
    b = g[i + 1][:, i] * (1 - f)[None, :] + g[i + 1][:, i + 1] * f[None, :]
    return a * (1 - f)[:, None] + b * f[:, None]


def _rgb(name: str) -> np.ndarray:
    return np.array(COLOURS[name], dtype=np.float32)


# ---------------------------------------------------------------- styles


def _plain(scene: Scene, size: int, rng) -> np.ndarray:
    m = _coverage(sdf(scene, size))[..., None]
    return _rgb(scene.colour) * m + _rgb(scene.background) * (1 - m)


_RETRO = np.array([  # a saturated 16-colour palette the pixel style snaps to
    (0.0, 0.0, 0.0), (0.98, 0.98, 0.98), (0.85, 0.05, 0.15), (1.0, 0.45, 0.0), (1.0, 0.85, 0.0),
    (0.0, 0.75, 0.25), (0.0, 0.45, 0.15), (0.05, 0.35, 1.0), (0.0, 0.15, 0.55), (0.6, 0.1, 0.85),
    (0.35, 0.0, 0.45), (0.55, 0.0, 0.05), (0.6, 0.3, 0.0), (0.4, 0.4, 0.45), (0.7, 0.7, 0.75),
    (0.2, 0.2, 0.25)], dtype=np.float32)


def _snap(rgb: np.ndarray) -> np.ndarray:
    d = ((rgb.reshape(-1, 1, 3) - _RETRO[None]) ** 2).sum(-1)
    return _RETRO[d.argmin(1)].reshape(rgb.shape)


def _pixel(scene: Scene, size: int, rng) -> np.ndarray:
    g = 16
    inside = sdf(scene, g * 4).reshape(g, 4, g, 4).mean(axis=(1, 3)) < 0
    ring = np.zeros_like(inside)
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        ring |= np.roll(inside, (dy, dx), (0, 1))
    ring &= ~inside
    fg = _snap(_rgb(scene.colour)[None])[0]
    bg = _snap(_rgb(scene.background)[None])[0]
    bg2 = _snap(np.clip(_rgb(scene.background) * 0.72 + 0.04, 0, 1)[None])[0]
    if np.allclose(bg2, bg):
        bg2 = np.clip(bg * 0.7 + 0.05, 0, 1)
    yy, xx = np.mgrid[0:g, 0:g]
    checker = ((yy + xx) % 2 == 0)[..., None]
    img = np.where(checker, bg, bg2)
    highlight = np.clip(fg * 1.25 + 0.12, 0, 1)
    hl = inside & np.roll(~inside, (1, 1), (0, 1)) & ~ring
    img = np.where(inside[..., None], fg, img)
    img = np.where(hl[..., None], highlight, img)
    outline = np.array((0.08, 0.06, 0.1), np.float32) if scene.colour != "black" else np.array((0.9, 0.9, 0.9), np.float32)
    img = np.where(ring[..., None], outline, img)
    k = size // g
    img = np.repeat(np.repeat(img, k, 0), k, 1)
    if img.shape[0] != size:  # size not a multiple of 16: nearest-neighbour to size
        idx = (np.arange(size) * img.shape[0] // size)
        img = img[idx][:, idx]
    return img


def _watercolor(scene: Scene, size: int, rng) -> np.ndarray:
    paper = np.float32(0.97) + 0.02 * _noise(rng, size, size // 3)[..., None]
    wobble = 1.8 * _noise(rng, size, 6) * size / 64
    d = sdf(scene, size) + wobble
    m = np.clip(0.5 - d / 1.5, 0, 1)
    rim = np.exp(-((d + 1.5) / 1.6) ** 2)
    gran = 0.5 + 0.5 * _noise(rng, size, size // 2)
    bg_amt = (0.38 + 0.12 * _noise(rng, size, 4))[..., None]
    fg_amt = (0.62 + 0.15 * _noise(rng, size, 5) + 0.08 * gran)[..., None]

    def wash(base, colour, amount):  # subtractive-ish glaze: multiply toward the pigment
        return base * (1 - amount * (1 - colour))

    img = wash(paper, _rgb(scene.background), bg_amt)
    fg = _rgb(scene.colour)
    glazed = wash(img, fg, np.clip(fg_amt + 0.35 * rim[..., None], 0, 1))
    if scene.colour == "white":  # white pigment on paper: lift the background wash instead
        glazed = img + (paper - img) * 0.85
    img = glazed * m[..., None] + img * (1 - m[..., None])
    return np.clip(img, 0, 1)


def _calligraphy(scene: Scene, size: int, rng) -> np.ndarray:
    bgc = _rgb(scene.background)
    paper_tone = 0.55 * bgc + 0.45 * np.array((0.93, 0.86, 0.72), np.float32)
    fibres = 0.05 * _noise(rng, size, size // 2) + 0.03 * np.abs(_noise(rng, size, size // 5))
    paper = paper_tone + fibres[..., None]
    d = sdf(scene, size)
    width = (0.075 + 0.03 * _noise(rng, size, 3)) * size
    stroke = np.clip(0.6 - (np.abs(d + width * 0.5) - width * 0.5) / 1.2, 0, 1)
    streak = np.clip(1.0 - 0.9 * np.clip(_noise(rng, size, size // 2) * 2.2 - 1.1, 0, 1), 0, 1)  # dry brush gaps
    ink = stroke * streak
    inkc = _rgb(scene.colour) * 0.85
    if scene.colour == "white":
        inkc = np.array((0.99, 0.99, 0.97), np.float32)
    img = paper * (1 - ink[..., None]) + inkc * ink[..., None]
    # the seal: a small vermilion square with a pale mark, bottom right (or left when the shape is there)
    s = max(3, size // 10)
    sx = size - s - max(2, size // 16) if scene.x < 0.55 else max(2, size // 16)
    sy = size - s - max(2, size // 16)
    seal = np.array((0.80, 0.16, 0.10), np.float32) if scene.background != "red" else np.array((0.45, 0.05, 0.05), np.float32)
    img[sy:sy + s, sx:sx + s] = seal
    c = s // 2
    img[sy + 1:sy + s - 1, sx + c:sx + c + max(1, s // 5)] = (0.95, 0.85, 0.8)
    return np.clip(img, 0, 1)


def _stripes(scene: Scene, size: int, rng) -> np.ndarray:
    base = _plain(scene, size, rng)
    xs, ys = _grid(size)
    band = ((xs + ys) * size / 6).astype(int) % 2 == 0
    shade = np.where(band[..., None], base, base * 0.55 + 0.45 * (1 - base))
    return shade


_RENDER = {"plain": _plain, "pixel": _pixel, "watercolor": _watercolor, "calligraphy": _calligraphy,
           "stripes": _stripes}


def render(scene: Scene, style: str, size: int = 64, seed: int = 0) -> np.ndarray:
    """One image, uint8 [size, size, 3]. The same arguments give the same bytes."""
    if style not in _RENDER:
        raise ValueError(f"unknown world style {style!r}; choose one of: {', '.join(STYLES)}")
    rng = _rng(seed, style, scene)
    img = _RENDER[style](scene, size, rng)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def caption(scene: Scene, style: str, trigger: str | None = None) -> str:
    """The full caption: the scene, the style's words (plain names no style), then the optional
    trigger. The trigger goes last, not first as kohya's captions have it: the tiny text encoder is
    causal and never saw a made-up word, so one in front changes every token after it and the base
    loses the prompted colours (benchmarks/README.md, "the trigger's position"); at the end it
    leaves the scene's tokens as the base learnt them."""
    parts = [scene.caption()]
    if style != "plain":
        parts.append(STYLE_WORDS[style])
    if trigger:
        parts.append(trigger)
    return ", ".join(parts)


def batch(n: int, style: str, *, size: int = 64, seed: int = 0) -> tuple[np.ndarray, list[Scene]]:
    """`n` scenes drawn in `style`: uint8 [n, size, size, 3] and the scenes."""
    sc = scenes(n, seed)
    return np.stack([render(s, style, size, seed) for s in sc]), sc
