"""Deterministic synthetic style datasets, so styler can be tried without downloading anything.

Three kinds, each made to be recognisable at 64-128 px and easy to tell apart by simple image
statistics:

* ``calligraphy`` - black ink Chinese characters on warm rice paper (grain, fibres, ink bleed,
  dry-brush streaks, a slight tilt). Characters come from a CJK font found on the machine; without
  one, a glyph is composed from procedural tapered brush strokes instead.
* ``pixel`` - pixel-art sprites on a 16x16 grid with a 4-8 colour palette, scaled up with nearest
  neighbour (hard edges, very few distinct colours).
* ``watercolor`` - translucent washes with darker wet rims, pigment granulation and paper texture
  on white paper (bright, soft, colourful, no true darks).

Everything is seeded per image from ``(seed, kind, index)``: the same arguments (and the same
font) give byte-identical PNG and caption files. PNGs carry no metadata chunks at all.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ..errors import UsageError, WriteError

KINDS = ("calligraphy", "pixel", "watercolor")

#: Environment variable read when ``font`` is None: a font path, or "" / "none" for the
#: procedural brush-stroke fallback (lets tests and CI pin the output regardless of the machine).
FONT_ENV = "STYLER_SYNTH_FONT"

MIN_SIZE = 16

_KIND_IDS = {k: i + 1 for i, k in enumerate(KINDS)}


@dataclass(frozen=True)
class SynthResult:
    kind: str
    n: int
    out_dir: Path
    font_used: str | None  # the CJK font file rendered with; None = procedural strokes / not calligraphy
    captions: list[str]


# --------------------------------------------------------------------------------------------
# public entry point


def synthesize(kind: str, out_dir: Path, *, n: int = 16, seed: int = 0, size: int = 128,
               font: str | Path | None = None) -> SynthResult:
    """Write ``n`` images ``0001.png``… plus caption sidecars ``0001.txt``… into ``out_dir``.

    ``font`` (calligraphy only): None = ``$STYLER_SYNTH_FONT`` if set, else the first CJK font
    :func:`find_cjk_font` finds, else procedural strokes; ``""`` = always procedural strokes;
    a path = that font (UsageError when it is missing, unloadable or has no CJK glyphs).
    """
    if kind not in KINDS:
        raise UsageError(f"unknown synthetic dataset kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"number of images must be at least 1 (got {n!r})")
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE:
        raise UsageError(f"image size must be at least {MIN_SIZE} pixels (got {size!r})")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UsageError(f"seed must be an integer (got {seed!r})")

    font_file = _resolve_font(font, need_glyphs=(kind == "calligraphy"))
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"cannot create {out_dir}: {exc.strerror or exc}") from None

    glyphs = _FontGlyphs.load(font_file) if (kind == "calligraphy" and font_file) else None
    captions: list[str] = []
    seen: set[bytes] = set()
    base_seed = seed % (1 << 64)
    for i in range(n):
        rng = np.random.default_rng([base_seed, _KIND_IDS[kind], i])
        for _attempt in range(20):  # importers drop exact duplicates: re-roll the (rare) repeat
            if kind == "calligraphy":
                img, caption = _calligraphy(rng, size, glyphs)
            elif kind == "pixel":
                img, caption = _pixel(rng, size)
            else:
                img, caption = _watercolor(rng, size)
            digest = hashlib.sha256(img.tobytes()).digest()
            if digest not in seen:
                break
        seen.add(digest)
        captions.append(caption)
        stem = f"{i + 1:04d}"
        try:
            img.save(out_dir / f"{stem}.png", format="PNG", optimize=False, compress_level=6)
            (out_dir / f"{stem}.txt").write_bytes((caption + "\n").encode("utf-8"))
        except OSError as exc:
            raise WriteError(f"cannot write {out_dir / stem}.png: {exc.strerror or exc}") from None
    return SynthResult(kind=kind, n=n, out_dir=out_dir,
                       font_used=str(font_file) if glyphs is not None else None, captions=captions)


# --------------------------------------------------------------------------------------------
# fonts

#: Well-known CJK font files, brush-like (kai) first, then serif (ming/song), then sans.
KNOWN_CJK_FONTS = (
    "/usr/share/fonts/truetype/arphic/ukai.ttc",
    "/usr/share/fonts/truetype/arphic-ukai/ukai.ttc",
    "/usr/share/fonts/arphic-ukai/ukai.ttc",
    "/usr/share/fonts/TTF/ukai.ttc",
    "C:/Windows/Fonts/simkai.ttf",
    "/System/Library/Fonts/Supplemental/Kaiti.ttc",
    "/Library/Fonts/Kaiti.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/usr/share/fonts/truetype/arphic-uming/uming.ttc",
    "/usr/share/fonts/arphic-uming/uming.ttc",
    "/usr/share/fonts/TTF/uming.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Bold.ttc",
    "/usr/share/fonts/noto-cjk/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-serif-cjk-fonts/NotoSerifCJK-Regular.ttc",
    "/System/Library/Fonts/Supplemental/Songti.ttc",
    "/Library/Fonts/Songti.ttc",
    "C:/Windows/Fonts/simsun.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-sans-cjk-fonts/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/wqy-zenhei/wqy-zenhei.ttc",
    "/usr/share/fonts/wqy-microhei/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/STHeiti Medium.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)

# preference of fc-list results by (lower-cased) file name: a brush look first
_FONT_PREFERENCE = ("kai", "ukai", "ming", "song", "serif", "fangsong", "hei", "sans")


def _font_rank(path: str) -> tuple[int, str]:
    name = Path(path).name.lower()
    for rank, word in enumerate(_FONT_PREFERENCE):
        if word in name:
            return rank, path
    return len(_FONT_PREFERENCE), path


def _fc_list_fonts(timeout: float = 3.0) -> list[str]:
    """Font files fontconfig says cover Chinese; [] when fc-list is missing, slow or fails."""
    exe = shutil.which("fc-list")
    if not exe:
        return []
    try:
        proc = subprocess.run([exe, ":lang=zh", "file"], capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    if proc.returncode != 0:
        return []
    files = set()
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        line = line.strip().rstrip(":").strip()
        if line.lower().endswith((".ttf", ".ttc", ".otf", ".otc")):
            files.add(line)
    return sorted(files, key=_font_rank)


def find_cjk_font() -> Path | None:
    """The first usable CJK font on this machine (known locations, then ``fc-list :lang=zh``),
    preferring brush (kai) faces; None when there is none. Never raises."""
    seen: set[str] = set()
    for candidate in (*KNOWN_CJK_FONTS, *_fc_list_fonts()):
        if candidate in seen:
            continue
        seen.add(candidate)
        path = Path(candidate)
        try:
            if not path.is_file():
                continue
            if _FontGlyphs.load(path).chars:
                return path
        except Exception:  # noqa: BLE001 - a probe: any broken font file is just skipped
            continue
    return None


def _resolve_font(font: str | Path | None, *, need_glyphs: bool) -> Path | None:
    """The font file to use, or None for procedural strokes; UsageError for a bad explicit font."""
    origin = "font"
    if font is None:
        env = os.environ.get(FONT_ENV)
        if not need_glyphs:  # only calligraphy reads the environment
            return None
        if env is None:
            return find_cjk_font()
        font, origin = env, f"${FONT_ENV}"
    text = str(font).strip()
    if text == "" or text.lower() in ("none", "procedural"):
        return None
    path = Path(text).expanduser()
    if not path.is_file():
        raise UsageError(f"{origin} {text!r} does not exist (give a .ttf/.ttc/.otf file, or '' for procedural strokes)")
    try:
        glyphs = _FontGlyphs.load(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{origin} {text!r} cannot be loaded as a font ({exc})") from None
    if need_glyphs and not glyphs.chars:
        raise UsageError(f"{origin} {text!r} has no glyphs for Chinese characters; give a CJK font")
    return path


# ~60 common characters, and a few two-character words (written top to bottom)
CHARACTERS = tuple(
    "永天地人山水风月花鸟龙福寿心道德春夏秋冬日云雨雪石木竹梅兰菊松海江河光明和静爱忍善美信义礼智仁勇志梦禅书画墨诗酒茶家安乐吉祥喜飞")
WORDS = ("山水", "风月", "春秋", "福寿", "天地", "日月", "花鸟", "道德", "书画", "吉祥",
         "松竹", "安乐", "明月", "江山", "静心", "和平", "飞龙", "梅花")


class _FontGlyphs:
    """A loaded font face plus which of our characters it really has (not the .notdef box)."""

    def __init__(self, path: Path, index: int, chars: tuple[str, ...], words: tuple[str, ...]):
        self.path, self.index, self.chars, self.words = path, index, chars, words

    @staticmethod
    @lru_cache(maxsize=8)
    def _load(path_text: str, mtime_ns: int) -> _FontGlyphs:
        path = Path(path_text)
        index = 0
        if path.suffix.lower() in (".ttc", ".otc"):  # collections: prefer the simplified-Chinese face
            for i in range(8):
                try:
                    family = ImageFont.truetype(path_text, 16, index=i).getname()[0] or ""
                except OSError:
                    break
                if any(tag in family for tag in (" CN", " SC", "GB", "Simplified")):
                    index = i
                    break
        face = ImageFont.truetype(path_text, 32, index=index)
        notdef = _glyph_pixels(face, "\uffff")
        have = tuple(c for c in CHARACTERS if _has_glyph(face, c, notdef))
        words = tuple(w for w in WORDS if all(_has_glyph(face, c, notdef) for c in w))
        return _FontGlyphs(path, index, have, words)

    @classmethod
    def load(cls, path: Path) -> _FontGlyphs:
        return cls._load(str(path), path.stat().st_mtime_ns)

    def face(self, px: int) -> ImageFont.FreeTypeFont:
        return _face(str(self.path), self.index, px)


def _glyph_pixels(face: ImageFont.FreeTypeFont, ch: str) -> bytes | None:
    """The rendered pixels of one character at 32 px; None when it draws nothing."""
    img = Image.new("L", (48, 48), 0)
    ImageDraw.Draw(img).text((4, 4), ch, font=face, fill=255)
    return img.tobytes() if img.getbbox() else None


def _has_glyph(face: ImageFont.FreeTypeFont, ch: str, notdef: bytes | None) -> bool:
    pixels = _glyph_pixels(face, ch)
    return pixels is not None and pixels != notdef


@lru_cache(maxsize=16)
def _face(path: str, index: int, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, px, index=index)


# --------------------------------------------------------------------------------------------
# small numeric helpers (float32 arrays in [0, 1] unless said otherwise)


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


# --------------------------------------------------------------------------------------------
# calligraphy

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


def _calligraphy(rng: np.random.Generator, s: int, glyphs: _FontGlyphs | None) -> tuple[Image.Image, str]:
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


# --------------------------------------------------------------------------------------------
# pixel art

# 16x16 sprites; '.' background, 'o' outline, a-e fill roles. Sprites given as 8-column halves
# are mirrored (symmetric); an 'o' outline is also added automatically around the silhouette.
_HALF = {
    "mushroom": [
        "........", ".....ooo", "...ooaaa", "..oaacca", ".oaaacca", ".oacaaaa", "oaccaaaa", "oaccaaac",
        "oaaaaaac", ".ooooooo", "....obbb", "....obbb", "....obbd", "....obbd", ".....ooo", "........"],
    "house": [
        "........", ".......o", "......oa", ".....oaa", "....oaaa", "...oaaaa", "..oaaaaa", ".ooooooo",
        "..obbbbb", "..obccbb", "..obccbb", "..obbbbd", "..obbbbd", "..obbbbd", "..oooooo", "........"],
    "tree": [
        "........", "......oo", "....ooaa", "...oaaca", "..oaacaa", "..oaaaaa", ".oaacaaa", ".oaaaaaa",
        ".oaaaaac", "..oaacaa", "...ooaaa", ".....oob", "......ob", "......ob", ".....obb", "........"],
    "cat": [
        "........", ".oo.....", ".obo....", ".obbo...", ".oaaaooo", ".oaaaaaa", "oaaaaaaa", "oaacoaaa",
        "oaacoaaa", "oaaaaaad", "oaaaaaoo", ".oaaaaaa", "..oaaaaa", "...ooooo", "........", "........"],
    "castle": [
        "...d....", "..ddd...", ".ddddd..", ".aaaaa..", ".aacaa..", ".aaaaa.a", ".aaaaaaa", ".aaaaaaa",
        ".aacaaaa", ".aaaeaaa", ".aaaaaaa", ".aaaaabb", ".aeaaabb", ".aaaaabb", ".aaaaabb", "........"],
    "potion": [
        "........", "......bb", "......bb", "......cc", "......cc", "....cccc", "...caaaa", "..caaaaa",
        "..cdaaaa", "..cdaaaa", "..caaaaa", "..caaaaa", "...caaaa", "....cccc", "........", "........"],
    "ghost": [
        "........", "........", ".....aaa", "...aaaaa", "..aaaaaa", "..aaaaaa", ".aabbaaa", ".aabbaaa",
        ".aaaaaaa", ".aaaaaaa", ".aaaaaaa", ".aaaaaaa", ".aaaaaaa", ".aa.aaa.", ".a...a..", "........"],
    "flower": [
        "........", ".....aaa", "....aaaa", "...aaaaa", "...aaaab", "....aabb", ".....abb", "......cc",
        "..dd..oc", "..ddd.oc", "...dddoc", "....ddoc", "......oc", "......oc", "........", "........"],
}
_FULL = {
    "heart": [
        "................", "..oooo....oooo..", ".oaaaao..oaaaao.", "oaccaaaooaaaaaao", "oaccaaaaaaaaaaao",
        "oacaaaaaaaaaaaao", "oaaaaaaaaaaaaaao", ".oaaaaaaaaaaaao.", "..oaaaaaaaaaao..", "...oaaaaaaaao...",
        "....oaaaaaao....", ".....oaaaao.....", "......oaao......", ".......oo.......", "................",
        "................"],
}

# name → RGB; the caption names the colour of each sprite's role 'a'
_COLOURS = {
    "red": (214, 48, 49), "blue": (52, 101, 214), "green": (46, 160, 67), "yellow": (247, 201, 40),
    "purple": (142, 68, 173), "orange": (240, 128, 32), "pink": (240, 120, 170), "teal": (22, 160, 150),
    "brown": (139, 90, 43), "white": (240, 240, 236), "grey": (128, 132, 140), "gold": (230, 180, 40),
}
_SUBJECTS = {
    # subject: (choices for role a, fixed colours for other roles, ground?)
    "mushroom": (("red", "blue", "purple", "orange", "brown"), {"b": (238, 222, 190), "c": (250, 250, 245), "d": (200, 180, 150)}, True),
    "house": (("red", "blue", "brown", "purple", "teal"), {"b": (236, 214, 160), "c": (120, 190, 240), "d": (120, 72, 36)}, True),
    "tree": (("green", "orange", "pink", "teal"), {"b": (120, 76, 40), "c": None}, True),
    "cat": (("orange", "grey", "white", "brown"), {"b": (240, 150, 170), "c": (90, 200, 90), "d": (230, 110, 140)}, False),
    "castle": (("grey", "brown", "white"), {"b": (90, 56, 30), "c": (40, 40, 60), "d": (200, 50, 60), "e": None}, True),
    "potion": (("red", "blue", "green", "purple", "pink"), {"b": (150, 100, 60), "c": (200, 230, 240), "d": (255, 255, 255)}, False),
    "ghost": (("white", "teal", "pink", "grey"), {"b": (30, 30, 40)}, False),
    "flower": (("red", "pink", "yellow", "purple", "blue", "orange"), {"b": (250, 220, 60), "c": (46, 140, 60), "d": (70, 180, 80)}, True),
    "heart": (("red", "pink", "purple"), {"c": (255, 255, 255)}, False),
    "sword": (("grey", "gold", "teal"), {"b": (120, 76, 40), "c": (200, 206, 216), "d": (250, 250, 255)}, False),
    "monster": (("green", "purple", "red", "blue", "orange", "teal"), {"b": (255, 255, 255)}, False),
}
_SKIES = ((160, 210, 245), (250, 240, 210), (40, 44, 80), (215, 235, 215), (230, 225, 245), (60, 30, 70), (255, 255, 255))
_GROUNDS = ((90, 170, 70), (200, 170, 110), (110, 110, 120), (70, 130, 60))


def _shade(rgb: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(round(c * f), 0, 255)) for c in rgb)  # type: ignore[return-value]


def _sprite(subject: str, rng: np.random.Generator) -> np.ndarray:
    """A 16x16 array of role characters."""
    if subject in _HALF:
        rows = [r + r[::-1] for r in _HALF[subject]]
    elif subject in _FULL:
        rows = list(_FULL[subject])
    elif subject == "sword":
        g = np.full((16, 16), ".")
        for r in range(1, 10):
            g[r, 15 - r] = "c"
            if 16 - r <= 15 and r >= 2:
                g[r, 16 - r] = "d"
        for c in range(3, 8):
            g[c + 5, c] = "a"
        for r, c in ((11, 4), (12, 3), (13, 2)):
            g[r, c] = "b"
        g[14, 1] = "a"
        rows = ["".join(r) for r in g]
    else:  # monster: a random symmetric space-invader-like creature
        half = (rng.random((9, 5)) < 0.55)
        half[2:5, 4] = True  # solid middle
        body = np.concatenate([half, half[:, ::-1][:, 1:]], axis=1)  # 9 x 9
        g = np.full((16, 16), ".")
        g[4:13, 3:12][body] = "a"
        eye = int(rng.integers(3, 6))
        g[eye + 1, 5] = g[eye + 1, 9] = "b"
        rows = ["".join(r) for r in g]
    g = np.array([list(r) for r in rows])
    assert g.shape == (16, 16), subject
    return g


def _outline(g: np.ndarray) -> np.ndarray:
    filled = g != "."
    pad = np.pad(filled, 1)
    near = pad[:-2, 1:-1] | pad[2:, 1:-1] | pad[1:-1, :-2] | pad[1:-1, 2:]
    out = g.copy()
    out[~filled & near] = "o"
    return out


def _pixel(rng: np.random.Generator, s: int) -> tuple[Image.Image, str]:
    subject = list(_SUBJECTS)[int(rng.integers(len(_SUBJECTS)))]
    choices, fixed, grounded = _SUBJECTS[subject]
    colour_name = choices[int(rng.integers(len(choices)))]
    g = _outline(_sprite(subject, rng))
    if subject in ("sword",) and rng.random() < 0.5:
        g = g[:, ::-1]
    # nudge by one cell where the border allows it
    filled_rows = np.where((g != ".").any(axis=1))[0]
    filled_cols = np.where((g != ".").any(axis=0))[0]
    dy = int(rng.integers(-1, 2))
    dx = int(rng.integers(-1, 2))
    if filled_rows.min() + dy < 0 or filled_rows.max() + dy > 15:
        dy = 0
    if filled_cols.min() + dx < 0 or filled_cols.max() + dx > 15:
        dx = 0
    g = np.roll(g, (dy, dx), axis=(0, 1))

    main = _COLOURS[colour_name]
    sky = _SKIES[int(rng.integers(len(_SKIES)))]
    if sky == main or (colour_name == "white" and sum(sky) > 600):
        sky = _SKIES[2]
    palette = {".": sky, "a": main}
    dark_bg = sum(sky) < 300
    palette["o"] = (20, 18, 28) if not dark_bg else (8, 6, 12)
    for role, rgb in fixed.items():
        if rgb is None:  # derived shade of the main colour
            rgb = _shade(main, 1.25 if role == "c" else 0.8)
        palette[role] = rgb
    grid = np.zeros((16, 16, 3), np.uint8)
    for role, rgb in palette.items():
        grid[g == role] = rgb
    if grounded and rng.random() < 0.75:
        ground = _GROUNDS[int(rng.integers(len(_GROUNDS)))]
        lowest = int(np.where((g != ".").any(axis=1))[0].max())
        gr = min(15, lowest)
        mask = (g == ".")
        mask[:gr, :] = False
        grid[mask] = ground
    elif rng.random() < 0.35:  # a few background stars/sparkles
        for _ in range(int(rng.integers(2, 6))):
            r, c = rng.integers(0, 16, 2)
            if g[r, c] == ".":
                grid[r, c] = _shade(sky, 0.8) if not dark_bg else (250, 240, 160)
    img = Image.fromarray(grid).resize((s, s), Image.Resampling.NEAREST)
    article = "an" if colour_name[0] in "aeiou" else "a"
    return img, f"pixel art, {article} {colour_name} {subject}"


# --------------------------------------------------------------------------------------------
# watercolour

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


def _watercolor(rng: np.random.Generator, s: int) -> tuple[Image.Image, str]:
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
