"""Deterministic synthetic style datasets, so styler can be tried without downloading anything.

The ``world-*`` kinds are the built-in world's scenes ("a red circle on a blue background") drawn in
one of its styles (:mod:`.world`; the tiny base and tiny CLIP were pretrained on that world). The
three older kinds draw their own content, each made to be recognisable at 64-128 px and easy to
tell apart by simple image statistics:

* ``calligraphy`` - black ink Chinese characters on warm rice paper (grain, fibres, ink bleed,
  dry-brush streaks, a slight tilt). Characters come from a CJK font found on the machine; without
  one, a glyph is composed from procedural tapered brush strokes instead.
* ``pixel`` - pixel-art sprites on a 16x16 grid with a 4-8 colour palette, scaled up with nearest
  neighbour (hard edges, very few distinct colours).
* ``watercolor`` - translucent washes with darker wet rims, pigment granulation and paper texture
  on white paper (bright, soft, colourful, no true darks).

Everything is seeded per image from ``(seed, kind, index)``: the same arguments (and the same
font) give byte-identical PNG and caption files. PNGs carry no metadata chunks at all.

This module holds the public API, argument checks and the per-image loop; each kind is drawn by
its own module (:mod:`.calligraphy`, :mod:`.pixel`, :mod:`.watercolor`), CJK font discovery is in
:mod:`.fonts` and the float-raster helpers the painted kinds share are in :mod:`.raster`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import UsageError, WriteError
from . import calligraphy, pixel, watercolor, world
from .fonts import CHARACTERS, KNOWN_CJK_FONTS, WORDS, _FontGlyphs, find_cjk_font

__all__ = ["CHARACTERS", "FONT_ENV", "KINDS", "LEGACY_KINDS", "WORLD_KINDS", "KNOWN_CJK_FONTS", "MIN_SIZE", "WORDS", "SynthResult",
           "find_cjk_font", "synthesize"]

LEGACY_KINDS = ("calligraphy", "pixel", "watercolor")
#: the built-in world's scenes ("a red circle on a blue background") in one of its styles
WORLD_KINDS = tuple(f"world-{s}" for s in world.STYLES)
KINDS = LEGACY_KINDS + WORLD_KINDS

#: Environment variable read when ``font`` is None: a font path, or "" / "none" for the
#: procedural brush-stroke fallback (lets tests and CI pin the output regardless of the machine).
FONT_ENV = "STYLER_SYNTH_FONT"

MIN_SIZE = 16

_KIND_IDS = {k: i + 1 for i, k in enumerate(LEGACY_KINDS)}


@dataclass(frozen=True)
class SynthResult:
    kind: str
    n: int
    out_dir: Path
    font_used: str | None  # the CJK font file rendered with; None = procedural strokes / not calligraphy
    captions: list[str]


def synthesize(kind: str, out_dir: Path, *, n: int = 16, seed: int = 0, size: int = 128,
               font: str | Path | None = None, trigger: str = "") -> SynthResult:
    """Write ``n`` images ``0001.png``… plus caption sidecars ``0001.txt``… into ``out_dir``.

    ``font`` (calligraphy only): None = ``$STYLER_SYNTH_FONT`` if set, else the first CJK font
    :func:`find_cjk_font` finds, else procedural strokes; ``""`` = always procedural strokes;
    a path = that font (UsageError when it is missing, unloadable or has no CJK glyphs).
    ``trigger`` (world kinds only): written at the end of each caption (see ``world.caption``);
    the other kinds leave it to the importer, which puts it in front as kohya does.
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
    if kind in WORLD_KINDS:
        return _world(kind, out_dir, n, seed, size, trigger)

    glyphs = _FontGlyphs.load(font_file) if (kind == "calligraphy" and font_file) else None
    captions: list[str] = []
    seen: set[bytes] = set()
    base_seed = seed % (1 << 64)
    for i in range(n):
        rng = np.random.default_rng([base_seed, _KIND_IDS[kind], i])
        for _attempt in range(20):  # importers drop exact duplicates: re-roll the (rare) repeat
            if kind == "calligraphy":
                img, caption = calligraphy.render(rng, size, glyphs)
            elif kind == "pixel":
                img, caption = pixel.render(rng, size)
            else:
                img, caption = watercolor.render(rng, size)
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


def _world(kind: str, out_dir: Path, n: int, seed: int, size: int, trigger: str = "") -> SynthResult:
    from PIL import Image

    style = kind[len("world-"):]
    captions = []
    for i, scene in enumerate(world.scenes(n, seed)):
        caption = world.caption(scene, style, trigger)
        stem = f"{i + 1:04d}"
        try:
            Image.fromarray(world.render(scene, style, size, seed)).save(out_dir / f"{stem}.png", format="PNG",
                                                                         compress_level=6)
            (out_dir / f"{stem}.txt").write_bytes((caption + "\n").encode("utf-8"))
        except OSError as exc:
            raise WriteError(f"cannot write {out_dir / stem}.png: {exc.strerror or exc}") from None
        captions.append(caption)
    return SynthResult(kind=kind, n=n, out_dir=out_dir, font_used=None, captions=captions)


# Here rather than in .fonts: it is part of checking synthesize()'s arguments (FONT_ENV, the
# UsageError wording), and patching styler.data.synth.find_cjk_font (as the tests do) reaches it.
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
