"""``calligraphy``: black ink Chinese characters on warm rice paper (grain, fibres, ink bleed,
dry-brush streaks, a slight tilt). Characters come from a CJK font (see :mod:`.fonts`); without
one, a glyph is composed from procedural tapered brush strokes instead."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .fonts import _FontGlyphs
from .raster import _blur, _from_l, _smooth_noise, _smoothstep, _to_l, _to_rgb

_PAPERS = ((238, 226, 200), (242, 233, 212), (231, 215, 184), (236, 222, 190), (244, 238, 222))
_INKS = ((18, 16, 18), (24, 22, 26), (14, 14, 20), (30, 24, 20))


def _rice_paper(rng: np.random.Generator, s: int) -> np.ndarray:
    base = np.array(_PAPERS[rng.integers(len(_PAPERS))], np.float32) / 255.0
    base = base + rng.normal(0, 0.012, 3).astype(np.float32)
    mottle = _smooth_noise(rng, s, s, (5, 5)) - 0.5
    grain = rng.normal(0.0, 1.0, (s, s)).astype(np.float32)
    grain = 0.6 * grain + 0.4 * _blur(grain * 0.15 + 0.5, 0.8) * 6.0 - 1.2
    shade = 1.0 + 0.06 * mottle + 0.018 * grain
    paper = base[None, None, :] * shade[..., None]
    # a few long, faint fibres
    fib = Image.new("L", (s, s), 0)
    d = ImageDraw.Draw(fib)
    for _ in range(int(rng.integers(6, 14))):
        x, y = rng.random(2) * s
        ang = rng.random() * math.pi
        pts = []
        for _k in range(5):
            pts.append((float(x), float(y)))
            ang += rng.normal(0, 0.5)
            step = s * (0.04 + 0.05 * rng.random())
            x, y = x + math.cos(ang) * step, y + math.sin(ang) * step
        d.line(pts, fill=int(rng.integers(40, 110)), width=1)
    fib_a = _from_l(fib.filter(ImageFilter.GaussianBlur(0.4)))
    sign = -1.0 if rng.random() < 0.7 else 1.0
    paper = paper * (1.0 + sign * 0.07 * fib_a[..., None])
    # slightly darker, aged edges
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / (s - 1) * 2 - 1
    vign = 1.0 - 0.05 * np.clip(np.maximum(np.abs(xx), np.abs(yy)) ** 4, 0, 1)
    return np.clip(paper * vign[..., None], 0, 1)


def _render_text_mask(glyphs: _FontGlyphs, text: str, rng: np.random.Generator, s2: int) -> np.ndarray:
    """Ink coverage (s2 x s2) of text set top-to-bottom with the font, tilted and jittered."""
    n = len(text)
    cell = s2 * (0.74 if n == 1 else 0.43) * (0.9 + 0.16 * rng.random())
    face = glyphs.face(max(8, int(round(cell * 1.15))))
    canvas = Image.new("L", (s2, s2), 0)
    total_h = 0.0
    crops = []
    for ch in text:
        tmp = Image.new("L", (int(cell * 2), int(cell * 2)), 0)
        ImageDraw.Draw(tmp).text((cell * 0.3, cell * 0.3), ch, font=face, fill=255)
        box = tmp.getbbox()
        if box is None:
            continue
        g = tmp.crop(box)
        scale = cell / max(g.width, g.height)
        g = g.resize((max(1, round(g.width * scale)), max(1, round(g.height * scale))), Image.Resampling.LANCZOS)
        crops.append(g)
        total_h += g.height
    gap = cell * 0.12
    total_h += gap * (len(crops) - 1)
    y = (s2 - total_h) / 2 + rng.normal(0, s2 * 0.025)
    xc = s2 / 2 + rng.normal(0, s2 * 0.03)
    for g in crops:
        canvas.paste(255, (int(round(xc - g.width / 2 + rng.normal(0, s2 * 0.01))), int(round(y))), g)
        y += g.height + gap
    weight = rng.random()
    if weight < 0.7 or s2 < 128:  # a heavier brush than the font's (always when tiny)
        canvas = canvas.filter(ImageFilter.MaxFilter(3 if weight < 0.4 else 5))
    canvas = canvas.rotate(float(rng.normal(0, 4.0)), resample=Image.Resampling.BICUBIC, center=(s2 / 2, s2 / 2))
    return _from_l(canvas)


# A procedural glyph is a few components, each a few strokes; a stroke is a polyline of key
# points (in a unit box), a width profile over its length and how it ends.
_Stroke = tuple  # (points: list[(x, y)], profile: str)


def _comp_cross(rng: np.random.Generator) -> list[_Stroke]:
    """十 / 木 / 丰-like: horizontals crossed by a vertical, maybe with falling strokes."""
    out: list[_Stroke] = []
    cx = 0.5 + rng.normal(0, 0.04)
    n_h = int(rng.integers(1, 4))
    ys = np.sort(rng.uniform(0.12, 0.7, n_h)) if n_h > 1 else np.array([rng.uniform(0.3, 0.5)])
    for k, y in enumerate(ys):
        half = rng.uniform(0.28, 0.46) if k == n_h - 1 else rng.uniform(0.2, 0.36)
        out.append(([(cx - half, y + 0.02), (cx + half, y - 0.03)], "heng"))
    hook = rng.random() < 0.35
    pts = [(cx, rng.uniform(0.02, 0.1)), (cx + rng.normal(0, 0.01), rng.uniform(0.85, 0.98))]
    if hook:
        pts.append((pts[-1][0] - 0.1, pts[-1][1] - 0.08))
    out.append((pts, "shugou" if hook else rng.choice(["shu", "shu_needle"])))
    if rng.random() < 0.6:
        y0 = float(ys[-1]) + 0.04
        out.append(([(cx - 0.02, y0), (cx - 0.2, y0 + 0.2), (cx - 0.42, y0 + 0.3)], "pie"))
        out.append(([(cx + 0.03, y0), (cx + 0.2, y0 + 0.17), (cx + 0.44, y0 + 0.3)], "na"))
    return out


def _comp_frame(rng: np.random.Generator) -> list[_Stroke]:
    """口 / 日 / 田-like: an enclosure with inner horizontals."""
    x0, x1 = rng.uniform(0.08, 0.2), rng.uniform(0.8, 0.92)
    y0, y1 = rng.uniform(0.06, 0.2), rng.uniform(0.8, 0.95)
    out: list[_Stroke] = [
        ([(x0, y0), (x0 + 0.01, y1)], "shu"),
        ([(x0, y0), (x1, y0 - 0.02), (x1 - 0.02, y1 + 0.01)], "hengzhe"),
        ([(x0, y1), (x1 - 0.02, y1 - 0.01)], "heng_thin"),
    ]
    for k in range(int(rng.integers(0, 3))):
        y = y0 + (y1 - y0) * (k + 1) / 3 + rng.normal(0, 0.02)
        out.append(([(x0 + 0.02, y), (x1 - 0.04, y - 0.015)], "heng_thin"))
    if rng.random() < 0.3:
        xm = (x0 + x1) / 2
        out.append(([(xm, y0 + 0.02), (xm, y1 - 0.02)], "shu"))
    return out


def _comp_person(rng: np.random.Generator) -> list[_Stroke]:
    """人 / 八 / 大-like: a left-falling and a right-falling sweep."""
    top = rng.uniform(0.05, 0.2)
    x = rng.uniform(0.45, 0.55)
    out: list[_Stroke] = []
    if rng.random() < 0.5:
        out.append(([(0.12, top + 0.25), (0.88, top + 0.22)], "heng"))
    out.append(([(x, top), (x - 0.08, top + 0.4), (0.1, rng.uniform(0.85, 0.95))], "pie"))
    out.append(([(x - 0.02, top + 0.3), (x + 0.15, top + 0.55), (0.92, rng.uniform(0.85, 0.95))], "na"))
    return out


def _comp_water(rng: np.random.Generator) -> list[_Stroke]:
    """氵/ 冫-like: dots stacked over a rising tick."""
    out: list[_Stroke] = [([(0.3, 0.08), (0.62, 0.22)], "dian"), ([(0.22, 0.38), (0.55, 0.5)], "dian")]
    if rng.random() < 0.7:
        out.append(([(0.2, 0.9), (0.72, 0.6)], "ti"))
    return out


def _comp_roof(rng: np.random.Generator) -> list[_Stroke]:
    """亠 / 宀-like: a dot over a long horizontal."""
    out: list[_Stroke] = [([(0.45, 0.05), (0.58, 0.35)], "dian"), ([(0.05, 0.7), (0.95, 0.64)], "heng")]
    if rng.random() < 0.5:
        out.append(([(0.1, 0.55), (0.13, 0.95)], "dian"))
    return out


def _comp_stack_fn(rng: np.random.Generator) -> list[_Stroke]:
    """三 / 王 / 工-like: stacked horizontals joined by a vertical."""
    n_h = int(rng.integers(2, 4))
    ys = np.linspace(rng.uniform(0.08, 0.2), rng.uniform(0.8, 0.94), n_h)
    out: list[_Stroke] = []
    for k, y in enumerate(ys):
        half = 0.44 if k == n_h - 1 else rng.uniform(0.26, 0.38)
        out.append(([(0.5 - half, y + 0.02), (0.5 + half, y - 0.02)], "heng" if k == n_h - 1 else "heng_thin"))
    if rng.random() < 0.75:
        out.append(([(0.5, ys[0]), (0.5, ys[-1])], "shu"))
    return out


_COMPONENTS = (_comp_cross, _comp_frame, _comp_person, _comp_stack_fn)


def _glyph_strokes(rng: np.random.Generator) -> list[tuple[np.ndarray, str]]:
    """Strokes of a character-like glyph in unit coordinates: one component, or two side by
    side (a radical plus a component) or stacked."""
    layout = rng.choice(["single", "left-right", "top-bottom"], p=[0.4, 0.35, 0.25])
    placed: list[tuple[list[_Stroke], tuple[float, float, float, float]]] = []
    pick = lambda: _COMPONENTS[int(rng.integers(len(_COMPONENTS)))](rng)  # noqa: E731
    if layout == "single":
        placed.append((pick(), (0.0, 0.0, 1.0, 1.0)))
    elif layout == "left-right":
        split = rng.uniform(0.3, 0.42)
        left = _comp_water(rng) if rng.random() < 0.5 else pick()
        placed.append((left, (0.0, 0.05, split - 0.03, 0.95)))
        placed.append((pick(), (split + 0.03, 0.0, 1.0, 1.0)))
    else:
        split = rng.uniform(0.3, 0.45)
        top = _comp_roof(rng) if rng.random() < 0.5 else pick()
        placed.append((top, (0.05, 0.0, 0.95, split - 0.02)))
        placed.append((pick(), (0.0, split + 0.02, 1.0, 1.0)))
    strokes = []
    for comp, (bx0, by0, bx1, by1) in placed:
        for pts, profile in comp:
            p = np.array(pts, np.float64)
            p = np.stack([bx0 + p[:, 0] * (bx1 - bx0), by0 + p[:, 1] * (by1 - by0)], axis=1)
            strokes.append((p + rng.normal(0, 0.012, p.shape), str(profile)))
    return strokes


def _stroke_path(pts: np.ndarray, rng: np.random.Generator, step: float) -> np.ndarray:
    """Points along the key points, each segment gently bowed (a quadratic Bezier), ~step apart."""
    out = [pts[:1]]
    for a, b in zip(pts[:-1], pts[1:]):
        d = b - a
        length = float(np.hypot(*d))
        normal = np.array([-d[1], d[0]])
        ctrl = (a + b) / 2 + normal * rng.normal(0, 0.06)
        t = np.linspace(0, 1, max(3, int(length / step)))[1:, None]
        out.append((1 - t) ** 2 * a + 2 * (1 - t) * t * ctrl + t ** 2 * b)
    return np.concatenate(out)


def _profile(name: str, t: np.ndarray) -> np.ndarray:
    """Relative brush width along a stroke (t in [0, 1])."""
    press = np.exp(-((t / 0.07) ** 2))  # the brush pressed down at the start
    end = np.exp(-(((0.93 - t) / 0.07) ** 2)) - 0.5 * np.clip((t - 0.93) / 0.07, 0, 1)  # press, lift
    taper = np.clip((1 - t) / 0.4, 0.06, 1.0) ** 0.8
    if name == "heng":
        return 0.75 + 0.5 * press + 0.4 * end
    if name == "heng_thin":
        return 0.6 + 0.45 * press + 0.35 * end
    if name == "shu":
        return 0.95 + 0.45 * press + 0.2 * end
    if name == "shu_needle":
        return (0.95 + 0.45 * press) * taper
    if name == "shugou":
        return np.where(t < 0.82, 1.0 + 0.4 * press, 1.25 * np.clip((1 - t) / 0.18, 0.06, 1.0))
    if name == "hengzhe":
        corner = np.exp(-(((t - 0.5) / 0.05) ** 2))
        return np.where(t < 0.5, 0.7 + 0.5 * press, 1.0) + 0.6 * corner + 0.2 * end
    if name == "pie":
        return (1.2 - 0.3 * t) * taper + 0.3 * press
    if name == "na":
        return np.where(t < 0.8, 0.45 + 1.05 * t, 1.3 * np.clip((1 - t) / 0.2, 0.05, 1.0) ** 0.6) + 0.2 * press
    if name == "ti":
        return 1.3 * taper + 0.2 * press
    return 1.6 * np.sin(np.pi * np.clip(0.15 + 0.85 * t, 0, 1)) ** 0.5 + 0.3  # dian


def _procedural_glyph(rng: np.random.Generator, s2: int) -> np.ndarray:
    """A character-like glyph from tapered brush strokes (s2 x s2 coverage in [0, 1])."""
    margin = s2 * (0.16 + 0.05 * rng.random())
    span = s2 - 2 * margin
    off = rng.normal(0, s2 * 0.015, 2)
    base_w = max(4.0, s2 * (0.045 + 0.025 * rng.random()))  # full brush width
    nib = math.radians(rng.uniform(5, 30))  # a held brush: horizontals come out thinner
    canvas = Image.new("L", (s2, s2), 0)
    draw = ImageDraw.Draw(canvas)
    for pts, name in _glyph_strokes(rng):
        pts = margin + off + pts * span
        path = _stroke_path(pts, rng, step=max(1.0, base_w * 0.2))
        t = np.linspace(0, 1, len(path))
        heading = np.arctan2(*np.gradient(path, axis=0)[:, ::-1].T)
        nib_factor = 0.55 + 0.45 * np.abs(np.sin(heading - nib))
        wobble = 1.0 + 0.06 * np.sin(t * rng.uniform(3, 9) + rng.random() * 6)
        half = 0.5 * base_w * _profile(name, t) * nib_factor * wobble * rng.uniform(0.85, 1.15)
        half = np.maximum(half, 0.6)
        tangent = np.gradient(path, axis=0)
        tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-6)
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
        left, right = path + normal * half[:, None], path - normal * half[:, None]
        for i in range(len(path) - 1):
            draw.polygon([tuple(left[i]), tuple(left[i + 1]), tuple(right[i + 1]), tuple(right[i])], fill=255)
        # a rounded, slanted entry where the brush first touched
        r0 = float(half[0]) * 1.05
        ex, ey = path[0] + tangent[0] * r0 * 0.3
        ang = np.linspace(0, 2 * np.pi, 14, endpoint=False)
        ca, sa = math.cos(math.pi / 4), math.sin(math.pi / 4)
        px, py = np.cos(ang) * r0 * 1.15, np.sin(ang) * r0 * 0.8
        draw.polygon([(float(ex + x * ca - y * sa), float(ey + x * sa + y * ca)) for x, y in zip(px, py)], fill=255)
        if half[-1] > 0.4 * half.max():  # blunt ends get a rounded press
            r1 = float(half[-1])
            x, y = path[-1]
            draw.ellipse((x - r1, y - r1, x + r1, y + r1), fill=255)
    canvas = canvas.rotate(float(rng.normal(0, 3.0)), resample=Image.Resampling.BICUBIC, center=(s2 / 2, s2 / 2))
    return _from_l(canvas)


def _box_blur(a: np.ndarray, r: int) -> np.ndarray:
    """Float box blur of radius r (edges clamped), separable, via cumulative sums."""
    if r < 1:
        return a
    out = a
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r + 1, r)
        c = np.cumsum(np.pad(out, pad, mode="edge"), axis=axis, dtype=np.float64)
        hi = np.take(c, np.arange(2 * r + 1, c.shape[axis]), axis=axis)
        lo = np.take(c, np.arange(0, c.shape[axis] - 2 * r - 1), axis=axis)
        out = ((hi - lo) / (2 * r + 1)).astype(np.float32)
    return out


def _flying_white(rng: np.random.Generator, ink: np.ndarray) -> np.ndarray:
    """Dry-brush (飞白) streaks running along the strokes, where a random gradient says the
    brush ran dry; returns how much ink to remove (0..1) per pixel of ``ink``."""
    s = ink.shape[0]
    # the stroke direction at each pixel, from the structure tensor (worked out at half size)
    lo = max(16, s // 2)
    small = np.asarray(_to_l(ink).resize((lo, lo), Image.Resampling.BOX), np.float32) / 255.0
    gy, gx = np.gradient(small)
    r = max(1, lo // 24)
    tensor = [_box_blur(_box_blur(g, r), r) for g in (gx * gx, gy * gy, gx * gy)]
    jxx, jyy, jxy = (np.asarray(Image.fromarray(t).resize((s, s), Image.Resampling.BILINEAR)) for t in tensor)
    across = 0.5 * np.arctan2(2 * jxy, jxx - jyy)
    coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2) / np.maximum(jxx + jyy, 1e-9)
    tx, ty = -np.sin(across), np.cos(across)
    # smear white noise along that direction: bristle streaks
    noise = rng.random((s, s), dtype=np.float32)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    reach = max(3, s // 16)
    acc = np.zeros((s, s), np.float32)
    for k in range(-reach, reach + 1):
        iy = np.clip(np.rint(yy + k * ty), 0, s - 1).astype(np.intp)
        ix = np.clip(np.rint(xx + k * tx), 0, s - 1).astype(np.intp)
        acc += noise[iy, ix]
    acc = (acc / (2 * reach + 1) - 0.5) * math.sqrt(12 * (2 * reach + 1))  # ~ unit variance
    streak = _smoothstep(0.4, 1.2, acc)
    along = _smooth_noise(rng, s, s, (6, 6))
    gdir = rng.normal(0, 1, 2)
    grad = np.clip(0.5 + ((xx / s - 0.5) * gdir[0] + (yy / s - 0.5) * gdir[1]) * 1.5, 0, 1)
    where = _smoothstep(0.45, 0.8, along * 0.5 + grad * 0.7) * _smoothstep(0.4, 0.8, coherence)
    return (streak * where * rng.uniform(0.4, 1.0)).astype(np.float32)


def _ink_on_paper(rng: np.random.Generator, coverage: np.ndarray, paper: np.ndarray, s: int) -> np.ndarray:
    """Dry-brush streaks, bleed and ink tone; coverage is at 2x resolution."""
    small = np.asarray(_to_l(coverage).resize((s, s), Image.Resampling.LANCZOS), np.float32) / 255.0
    small = small * (1.0 - _flying_white(rng, small))
    # bleed: a soft halo into the paper, broken up by the paper's fibres
    bleed_r = s * (0.005 + 0.008 * rng.random())
    core = _blur(small, bleed_r * 0.4)
    halo = _blur(small, bleed_r * 2.5 + 0.5)
    fibre = _smooth_noise(rng, s, s, (max(4, s // 4), max(4, s // 4)))
    alpha = np.maximum(core, halo * (0.2 + 0.3 * fibre))
    alpha = np.clip(alpha * (0.92 + 0.1 * _smooth_noise(rng, s, s, (6, 6))) * 1.12, 0, 1)
    ink_col = np.array(_INKS[rng.integers(len(_INKS))], np.float32) / 255.0
    return paper * (1 - alpha[..., None]) + ink_col[None, None, :] * alpha[..., None]


def _seal(rng: np.random.Generator, img: np.ndarray, s: int) -> np.ndarray:
    """A small red seal (印) near a lower corner."""
    k = max(3, int(round(s * (0.08 + 0.03 * rng.random()))))
    x = int(s - k - s * (0.05 + 0.04 * rng.random())) if rng.random() < 0.7 else int(s * 0.06)
    y = int(s - k - s * (0.05 + 0.06 * rng.random()))
    m = Image.new("L", (s, s), 0)
    d = ImageDraw.Draw(m)
    d.rectangle((x, y, x + k, y + k), fill=230)
    inner = max(1, k // 5)
    for r in range(2):  # carved-out lines inside the seal
        for c in range(2):
            if rng.random() < 0.75:
                cx0 = x + inner + c * (k - 2 * inner) // 2 + 1
                cy0 = y + inner + r * (k - 2 * inner) // 2 + 1
                d.rectangle((cx0, cy0, cx0 + max(1, (k - 2 * inner) // 2 - 2), cy0 + max(0, k // 10)), fill=40)
    a = _blur(_from_l(m), 0.4) * (0.75 + 0.25 * rng.random((s, s)).astype(np.float32))
    red = np.array((178, 34, 30), np.float32) / 255.0
    return img * (1 - a[..., None]) + red * a[..., None]


def render(rng: np.random.Generator, s: int, glyphs: _FontGlyphs | None) -> tuple[Image.Image, str]:
    s2 = s * 2
    text = None
    if glyphs is not None and glyphs.chars:  # choose before anything size-dependent draws numbers
        if glyphs.words and rng.random() < 0.25:
            text = glyphs.words[int(rng.integers(len(glyphs.words)))]
        else:
            text = glyphs.chars[int(rng.integers(len(glyphs.chars)))]
    paper = _rice_paper(rng, s)
    if text is not None:
        coverage = _render_text_mask(glyphs, text, rng, s2)
        caption = f"书法 {text}"
    else:
        coverage = _procedural_glyph(rng, s2)
        caption = "书法 笔画"
    out = _ink_on_paper(rng, coverage, paper, s)
    if rng.random() < 0.4:
        out = _seal(rng, out, s)
    return _to_rgb(out), caption
