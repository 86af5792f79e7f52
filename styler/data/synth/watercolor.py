"""``watercolor``: translucent washes with darker wet rims, pigment granulation and paper texture
on white paper (bright, soft, colourful, no true darks)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .raster import _blur, _from_l, _smooth_noise, _smoothstep, _to_rgb

_WC_COLOURS = {
    "red": (0.86, 0.22, 0.24), "blue": (0.22, 0.44, 0.82), "green": (0.30, 0.62, 0.32),
    "yellow": (0.97, 0.80, 0.22), "purple": (0.55, 0.36, 0.72), "orange": (0.96, 0.56, 0.20),
    "pink": (0.93, 0.48, 0.64), "teal": (0.16, 0.60, 0.62), "ochre": (0.80, 0.60, 0.28),
}
_WC_SUBJECTS = {
    "flower": ("red", "blue", "purple", "pink", "yellow", "orange"),
    "sun": ("orange", "yellow", "red"),
    "hills": ("green", "blue", "purple", "teal", "ochre"),
    "boat": ("red", "blue", "yellow", "teal"),
    "tree": ("green", "orange", "teal", "ochre"),
}


class _Wash:
    """Accumulates translucent, subtractive watercolour layers on paper."""

    def __init__(self, rng: np.random.Generator, s: int):
        self.rng, self.s = rng, s
        warm = rng.uniform(-0.012, 0.012)
        self.img = np.ones((s, s, 3), np.float32) * np.array([0.985 + warm, 0.978, 0.955 - warm], np.float32)
        # paper tooth: mid and fine noise, also drives pigment granulation
        tooth = 0.55 * _smooth_noise(rng, s, s, (max(4, s // 3), max(4, s // 3))) + 0.45 * rng.random((s, s), dtype=np.float32)
        self.tooth = tooth
        self.wobble = _smooth_noise(rng, s, s, (7, 7)) - 0.5
        self.wobble2 = _smooth_noise(rng, s, s, (max(5, s // 6), max(5, s // 6))) - 0.5

    def layer(self, mask: Image.Image, colour: tuple[float, float, float], density: float,
              soft: float = 1.0, rim: float = 0.35) -> None:
        s = self.s
        m = _blur(_from_l(mask), s * 0.035 * soft + 0.5)
        field = m - 0.5 + 0.25 * self.wobble + 0.3 * self.wobble2
        alpha = _smoothstep(0.0, 0.06 * soft + 0.02, field)
        edge = _smoothstep(0.0, 0.03, field) * (1.0 - _smoothstep(0.03, 0.16, field))
        gran = 0.7 + 0.6 * self.tooth
        var = 0.85 + 0.3 * _smooth_noise(self.rng, s, s, (4, 4))
        d = np.clip((alpha * density * var + edge * rim * density) * gran, 0, 1)
        col = np.array(colour, np.float32)
        self.img *= 1.0 - d[..., None] * (1.0 - col[None, None, :])

    def finish(self) -> Image.Image:
        paper = 1.0 - 0.05 * (self.tooth - 0.5)
        return _to_rgb(np.clip(self.img * paper[..., None], 0, 1))


def _jit(rng: np.random.Generator, colour: tuple[float, float, float], k: float = 0.05) -> tuple[float, float, float]:
    c = np.clip(np.array(colour) + rng.normal(0, k, 3), 0.05, 1.0)
    return tuple(float(v) for v in c)  # type: ignore[return-value]


def _new_mask(s: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    m = Image.new("L", (s, s), 0)
    return m, ImageDraw.Draw(m)


def render(rng: np.random.Generator, s: int) -> tuple[Image.Image, str]:
    subject = list(_WC_SUBJECTS)[int(rng.integers(len(_WC_SUBJECTS)))]
    names = _WC_SUBJECTS[subject]
    cname = names[int(rng.integers(len(names)))]
    colour = _WC_COLOURS[cname]
    w = _Wash(rng, s)
    sky = _jit(rng, (0.62, 0.78, 0.95), 0.04)

    if rng.random() < 0.6 and subject != "hills":  # a pale background wash
        m, d = _new_mask(s)
        top = rng.uniform(0.45, 0.75) * s
        d.rectangle((-s, -s, 2 * s, top), fill=255)
        w.layer(m, sky, rng.uniform(0.25, 0.4), soft=2.5, rim=0.15)

    if subject == "flower":
        cx, cy = s * rng.uniform(0.4, 0.6), s * rng.uniform(0.32, 0.45)
        # stem and leaf first, petals over them
        m, d = _new_mask(s)
        d.line([(cx, cy), (cx + s * rng.normal(0, 0.05), s * 1.05)], fill=255, width=max(2, int(s * 0.04)))
        w.layer(m, _jit(rng, (0.32, 0.58, 0.28)), 0.7, soft=0.5)
        m, d = _new_mask(s)
        lx, ly = cx + s * 0.1 * (1 if rng.random() < 0.5 else -1), s * rng.uniform(0.68, 0.8)
        d.ellipse((lx - s * 0.1, ly - s * 0.045, lx + s * 0.1, ly + s * 0.045), fill=255)
        w.layer(m, _jit(rng, (0.36, 0.64, 0.3)), 0.6, soft=0.6)
        petals = int(rng.integers(5, 8))
        r_out = s * rng.uniform(0.2, 0.27)
        phase = rng.random() * 2 * math.pi
        for k in range(petals):
            m, d = _new_mask(s)
            ang = phase + 2 * math.pi * k / petals
            px, py = cx + math.cos(ang) * r_out * 0.55, cy + math.sin(ang) * r_out * 0.55
            pr = r_out * rng.uniform(0.42, 0.55)
            d.ellipse((px - pr, py - pr, px + pr, py + pr), fill=255)
            w.layer(m, _jit(rng, colour), rng.uniform(0.45, 0.65), soft=0.7, rim=0.45)
        m, d = _new_mask(s)
        cr = r_out * 0.28
        d.ellipse((cx - cr, cy - cr, cx + cr, cy + cr), fill=255)
        centre = (0.95, 0.78, 0.2) if cname != "yellow" else (0.6, 0.38, 0.18)
        w.layer(m, _jit(rng, centre), 0.7, soft=0.5)
    elif subject == "sun":
        horizon = s * rng.uniform(0.6, 0.75)
        m, d = _new_mask(s)
        d.rectangle((-s, -s, 2 * s, horizon), fill=255)
        w.layer(m, _jit(rng, (0.99, 0.86, 0.62)), 0.35, soft=3.0, rim=0.1)
        cx, cy, r = s * rng.uniform(0.35, 0.65), horizon - s * rng.uniform(0.1, 0.3), s * rng.uniform(0.14, 0.22)
        m, d = _new_mask(s)
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        w.layer(m, _jit(rng, colour), 0.8, soft=0.8, rim=0.5)
        m, d = _new_mask(s)
        d.rectangle((-s, horizon, 2 * s, 2 * s), fill=255)
        w.layer(m, _jit(rng, (0.3, 0.5, 0.75)), 0.55, soft=1.0)
        for _ in range(int(rng.integers(2, 5))):  # reflections
            m, d = _new_mask(s)
            y = horizon + s * rng.uniform(0.04, 0.22)
            hw = r * rng.uniform(0.4, 1.0)
            d.rectangle((cx - hw, y, cx + hw, y + s * 0.02), fill=255)
            w.layer(m, _jit(rng, colour), 0.5, soft=0.4)
    elif subject == "hills":
        m, d = _new_mask(s)
        d.rectangle((-s, -s, 2 * s, s * 0.7), fill=255)
        w.layer(m, sky, rng.uniform(0.3, 0.45), soft=3.0, rim=0.1)
        layers = int(rng.integers(2, 4))
        xs = np.linspace(-0.1, 1.1, 24) * s
        bases = [s * (0.42 + 0.17 * k + rng.uniform(-0.04, 0.04)) for k in range(layers)]
        amps = [s * rng.uniform(0.05, 0.13) for _ in range(layers)]
        for k in range(layers):
            base, amp = bases[k], amps[k]
            f1, f2 = rng.uniform(0.6, 1.6), rng.uniform(2.0, 4.0)
            ph1, ph2 = rng.random(2) * 2 * math.pi
            ys = base - amp * np.sin(xs / s * math.pi * f1 + ph1) - amp * 0.35 * np.sin(xs / s * math.pi * f2 + ph2)
            m, d = _new_mask(s)
            # far hills are a band reaching just under the next ridge, not a stack of glazes
            bottom = s * 1.2 if k == layers - 1 else bases[k + 1] + amps[k + 1] * 1.4 + s * 0.05
            d.polygon([(float(x), float(y)) for x, y in zip(xs, ys)] + [(s * 1.2, bottom), (-s * 0.2, bottom)], fill=255)
            far = (layers - 1 - k) / max(1, layers - 1)
            c = tuple(float(v) for v in np.array(colour) * (1 - 0.45 * far) + np.array(sky) * 0.45 * far)
            w.layer(m, _jit(rng, c, 0.03), 0.5 + 0.2 * (1 - far), soft=1.0, rim=0.45)
    elif subject == "boat":
        horizon = s * rng.uniform(0.58, 0.7)
        m, d = _new_mask(s)
        d.rectangle((-s, horizon, 2 * s, 2 * s), fill=255)
        w.layer(m, _jit(rng, (0.28, 0.52, 0.72)), 0.55, soft=1.2)
        cx = s * rng.uniform(0.38, 0.62)
        hw = s * rng.uniform(0.2, 0.28)
        top = horizon - s * 0.02
        bot = top + s * rng.uniform(0.09, 0.13)
        m, d = _new_mask(s)
        d.polygon([(cx - hw, top), (cx + hw, top), (cx + hw * 0.7, bot), (cx - hw * 0.7, bot)], fill=255)
        w.layer(m, _jit(rng, colour), 0.85, soft=0.5, rim=0.4)
        m, d = _new_mask(s)
        mast_top = top - s * rng.uniform(0.35, 0.45)
        d.polygon([(cx + s * 0.01, mast_top), (cx + s * 0.01, top - s * 0.04), (cx + hw * 0.85, top - s * 0.04)], fill=255)
        if rng.random() < 0.6:
            d.polygon([(cx - s * 0.02, mast_top + s * 0.06), (cx - s * 0.02, top - s * 0.04), (cx - hw * 0.6, top - s * 0.04)], fill=255)
        w.layer(m, _jit(rng, (0.93, 0.88, 0.74)), 0.45, soft=0.5, rim=0.6)
        m, d = _new_mask(s)
        d.line([(cx, mast_top), (cx, top)], fill=255, width=max(1, int(s * 0.018)))
        w.layer(m, _jit(rng, (0.4, 0.28, 0.2)), 0.8, soft=0.3)
        for _ in range(int(rng.integers(2, 5))):
            m, d = _new_mask(s)
            y = bot + s * rng.uniform(0.02, 0.2)
            x = cx + s * rng.normal(0, 0.15)
            d.rectangle((x - s * 0.1, y, x + s * 0.1, y + s * 0.015), fill=255)
            w.layer(m, _jit(rng, (0.2, 0.38, 0.6)), 0.5, soft=0.4)
    else:  # tree
        ground = s * rng.uniform(0.78, 0.86)
        m, d = _new_mask(s)
        d.ellipse((-s * 0.3, ground - s * 0.05, s * 1.3, ground + s * 0.4), fill=255)
        w.layer(m, _jit(rng, (0.55, 0.7, 0.35)), 0.45, soft=1.5)
        cx = s * rng.uniform(0.4, 0.6)
        m, d = _new_mask(s)
        tw = max(2, int(s * 0.05))
        d.line([(cx, ground), (cx + s * rng.normal(0, 0.02), s * 0.45)], fill=255, width=tw)
        w.layer(m, _jit(rng, (0.45, 0.3, 0.2)), 0.8, soft=0.4)
        cy = s * rng.uniform(0.33, 0.42)
        for _ in range(int(rng.integers(3, 6))):
            m, d = _new_mask(s)
            bx, by = cx + s * rng.normal(0, 0.1), cy + s * rng.normal(0, 0.07)
            br = s * rng.uniform(0.12, 0.2)
            d.ellipse((bx - br, by - br * 0.9, bx + br, by + br * 0.9), fill=255)
            w.layer(m, _jit(rng, colour, 0.06), rng.uniform(0.4, 0.6), soft=0.9, rim=0.45)

    if rng.random() < 0.5:  # a few splatters
        m, d = _new_mask(s)
        for _ in range(int(rng.integers(2, 7))):
            x, y = rng.random(2) * s
            r = s * rng.uniform(0.006, 0.02)
            d.ellipse((x - r, y - r, x + r, y + r), fill=255)
        w.layer(m, _jit(rng, colour), 0.5, soft=0.2, rim=0.3)

    article = "an" if cname[0] in "aeiou" else "a"
    what = f"{cname} hills" if subject == "hills" else f"{article} {cname} {subject}"
    return w.finish(), f"watercolor painting of {what}"
