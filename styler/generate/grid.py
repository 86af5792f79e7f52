"""Labelled contact sheets: a grid of images with column labels on top, row labels on the left, an
optional title and axis names; Chinese labels use a CJK font when the machine has one."""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from styler.data.synth.fonts import find_cjk_font

BACKGROUND = (255, 255, 255)
TEXT = (32, 32, 32)
AXIS_TEXT = (90, 90, 90)
PLACEHOLDER = (236, 236, 236)
ELLIPSIS = "…"

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

_CJK = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef"
_RE_CJK = re.compile(f"[{_CJK}]")
_RE_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+|\s+")  # wrap units: a CJK character, a word, spaces
_RE_RUN = re.compile(rf"[{_CJK}]+|[^{_CJK}]+")  # font runs


def needs_cjk(text: str) -> bool:
    return _RE_CJK.search(text) is not None


_warned_no_cjk = False


def cjk_font_for(texts) -> "Path | None":
    """The CJK font to draw `texts` with, when any of them needs one. With none on the machine the
    text would come out as boxes: say so once per process, with the fix, and return None."""
    global _warned_no_cjk
    from ..data.synth.fonts import CJK_FONT_HINT

    if not any(needs_cjk(t) for t in texts):
        return None
    path = find_cjk_font()
    if path is None and not _warned_no_cjk:
        _warned_no_cjk = True
        import sys

        print(f"warning: no CJK font found, so Chinese text in sheets and reports is drawn as boxes; {CJK_FONT_HINT}",
              file=sys.stderr)
    return path


@lru_cache(maxsize=32)
def _latin_font(px: int) -> Font:
    for name in ("DejaVuSans.ttf", "Arial.ttf", "arial.ttf"):
        try:
            return ImageFont.truetype(name, px)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1: a fixed-size bitmap font
        return ImageFont.load_default()


@lru_cache(maxsize=32)
def _cjk_face(path: str, px: int) -> Font:
    index = 0
    if path.lower().endswith((".ttc", ".otc")):  # a collection: prefer the simplified-Chinese face
        for i in range(8):
            try:
                family = ImageFont.truetype(path, px, index=i).getname()[0] or ""
            except OSError:
                break
            if any(tag in family for tag in (" CN", " SC", "GB", "Simplified")):
                index = i
                break
    return ImageFont.truetype(path, px, index=index)


class _Face:
    """Text at one size: Latin runs in the Latin face, CJK runs in the CJK face when there is one
    (so "书法 0.5" gets proper Chinese glyphs and ordinary digits)."""

    def __init__(self, px: int, cjk_path: Path | None):
        self.latin = _latin_font(px)
        self.cjk = None
        if cjk_path is not None:
            try:
                self.cjk = _cjk_face(str(cjk_path), round(px * 1.12))  # CJK faces run small
            except OSError:
                self.cjk = None
        fonts = [self.latin] + ([self.cjk] if self.cjk else [])
        metrics = [f.getmetrics() if hasattr(f, "getmetrics") else (f.getbbox("Ag")[3], 2) for f in fonts]
        self.ascent, descent = max(m[0] for m in metrics), max(m[1] for m in metrics)
        self.line_height = round((self.ascent + descent) * 1.15)
        self._lead = (self.line_height - self.ascent - descent) / 2

    def runs(self, text: str) -> list[tuple[str, Font]]:
        if self.cjk is None:
            return [(text, self.latin)] if text else []
        return [(run, self.cjk if needs_cjk(run[0]) else self.latin) for run in _RE_RUN.findall(text)]

    def getlength(self, text: str) -> float:
        return sum(font.getlength(run) for run, font in self.runs(text))

    def draw(self, draw: ImageDraw.ImageDraw, centre: tuple[float, float], text: str, fill) -> None:
        """One line centred on ``centre``, all runs on one baseline."""
        x = centre[0] - self.getlength(text) / 2
        baseline = centre[1] - self.line_height / 2 + self._lead + self.ascent
        for run, font in self.runs(text):
            if isinstance(font, ImageFont.FreeTypeFont):
                draw.text((x, baseline), run, font=font, fill=fill, anchor="ls")
            else:  # a bitmap font takes no anchor
                draw.text((x, baseline - self.ascent), run, font=font, fill=fill)
            x += font.getlength(run)


def _ellipsize(font: _Face | Font, text: str, max_w: float) -> str:
    if font.getlength(text) <= max_w:
        return text
    while text and font.getlength(text.rstrip() + ELLIPSIS) > max_w:
        text = text[:-1]
    return text.rstrip() + ELLIPSIS


def wrap_text(text: str, font: _Face | Font, max_w: float, max_lines: int) -> list[str]:
    """Greedy word wrap (CJK breaks between any characters, over-long words between letters);
    past ``max_lines`` the last kept line ends in an ellipsis."""
    max_lines = max(1, max_lines)
    lines: list[str] = []
    for para in str(text).split("\n"):
        line = ""
        for token in _RE_TOKEN.findall(para):
            if token.isspace():
                line += token if line else ""
                continue
            if font.getlength(line + token) <= max_w:
                line += token
                continue
            if line.strip():
                lines.append(line.rstrip())
            while font.getlength(token) > max_w and len(token) > 1:  # split an over-long word
                cut = len(token) - 1
                while cut > 1 and font.getlength(token[:cut]) > max_w:
                    cut -= 1
                lines.append(token[:cut])
                token = token[cut:]
            line = token
        lines.append(line.rstrip())
    if len(lines) > max_lines:
        rest = " ".join(lines[max_lines - 1:])
        lines = lines[:max_lines - 1] + [_ellipsize(font, rest + ELLIPSIS, max_w)]
    return lines


def _fit(image: Image.Image | None, size: tuple[int, int]) -> Image.Image:
    """``image`` scaled to fit ``size`` keeping its aspect, centred on a white cell."""
    cell = Image.new("RGB", size, BACKGROUND if image is not None else PLACEHOLDER)
    if image is None:
        return cell
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() or image.mode == "P" else "RGB")
    scale = min(size[0] / image.width, size[1] / image.height)
    new = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if new != image.size:
        image = image.resize(new, Image.Resampling.LANCZOS)
    offset = ((size[0] - new[0]) // 2, (size[1] - new[1]) // 2)
    cell.paste(image, offset, image if image.mode == "RGBA" else None)
    return cell


def _draw_lines(draw: ImageDraw.ImageDraw, lines: list[str], face: _Face, box: tuple[int, int, int, int],
                fill=TEXT) -> None:
    """Lines centred horizontally and vertically in box (x0, y0, x1, y1)."""
    lh = face.line_height
    x_mid = (box[0] + box[2]) / 2
    y = box[1] + (box[3] - box[1] - lh * len(lines)) / 2
    for line in lines:
        face.draw(draw, (x_mid, y + lh / 2), line, fill)
        y += lh


def make_grid(images: list[list[Image.Image | None]], *, row_labels: list[str] | None = None,
              col_labels: list[str] | None = None, title: str = "", x_name: str = "", y_name: str = "",
              cell_size: tuple[int, int] | None = None) -> Image.Image:
    """A rows x cols contact sheet. Column labels form a header row, row labels a left column
    (either may be empty/None to leave it out); ``x_name``/``y_name`` name the axes; a ``None``
    image is a grey placeholder. Cells are ``cell_size`` or the largest image's width and height;
    each image is fitted into its cell keeping its aspect."""
    rows = [list(r) for r in images]
    if not rows or not any(rows):
        raise ValueError("make_grid needs at least one image")
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    rows = [r + [None] * (n_cols - len(r)) for r in rows]
    row_labels, col_labels = list(row_labels or []), list(col_labels or [])
    if row_labels and len(row_labels) != n_rows:
        raise ValueError(f"{len(row_labels)} row labels for {n_rows} rows")
    if col_labels and len(col_labels) != n_cols:
        raise ValueError(f"{len(col_labels)} column labels for {n_cols} columns")
    present = [im for r in rows for im in r if im is not None]
    if cell_size is None:
        cell_size = (max((im.width for im in present), default=256),
                     max((im.height for im in present), default=256))
    cw, ch = cell_size
    side = min(cw, ch)
    px = max(12, min(40, round(side * 0.06)))
    gap = max(2, round(side / 128))
    pad = max(4, px // 3)
    all_text = [title, x_name, y_name, *map(str, row_labels), *map(str, col_labels)]
    cjk_path = cjk_font_for(all_text)  # only looked for when needed
    face = _Face(px, cjk_path)
    lh = face.line_height

    # left label column: as wide as the longest label needs, within reason
    label_w = 0
    if any(str(t).strip() for t in row_labels):
        natural = max(face.getlength(line) for t in row_labels for line in str(t).split("\n"))
        label_w = math.ceil(min(max(natural, 3 * px), max(0.5 * cw, 7 * px))) + 1 + 2 * pad
    row_lines = [wrap_text(str(t), face, label_w - 2 * pad, (ch - 2 * pad) // lh) if label_w else []
                 for t in row_labels]
    col_lines = [wrap_text(str(t), face, cw - 2 * pad, 3) for t in col_labels]
    header_h = max((len(c) for c in col_lines if any(c)), default=0) * lh
    header_h = header_h + 2 * pad if header_h else 0
    y_band = lh + 2 * pad if y_name.strip() else 0
    x_band = lh + pad if x_name.strip() else 0

    margin = pad
    grid_w = n_cols * cw + (n_cols - 1) * gap
    grid_h = n_rows * ch + (n_rows - 1) * gap
    left = margin + y_band + (label_w + gap if label_w else 0)
    width = left + grid_w + margin
    title_face = _Face(round(px * 1.3), cjk_path)
    title_lines = wrap_text(title, title_face, width - 2 * pad, 2) if title.strip() else []
    title_h = len(title_lines) * title_face.line_height + pad if title_lines else 0
    top = margin + title_h + x_band + header_h
    height = top + grid_h + margin

    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title_lines:
        _draw_lines(draw, title_lines, title_face, (0, margin, width, margin + title_h - pad))
    if x_band:
        y0 = margin + title_h
        _draw_lines(draw, [_ellipsize(face, x_name, grid_w)], face, (left, y0, left + grid_w, y0 + x_band),
                    fill=AXIS_TEXT)
    if y_band:
        strip = Image.new("RGB", (grid_h, y_band), BACKGROUND)
        _draw_lines(ImageDraw.Draw(strip), [_ellipsize(face, y_name, grid_h)], face, (0, 0, grid_h, y_band),
                    fill=AXIS_TEXT)
        sheet.paste(strip.rotate(90, expand=True), (margin, top))
    for c, lines in enumerate(col_lines):
        x0 = left + c * (cw + gap)
        _draw_lines(draw, lines, face, (x0, top - header_h, x0 + cw, top))
    for r, row in enumerate(rows):
        y0 = top + r * (ch + gap)
        if label_w and row_lines[r]:
            x0 = margin + y_band
            _draw_lines(draw, row_lines[r], face, (x0, y0, x0 + label_w, y0 + ch))
        for c, image in enumerate(row):
            sheet.paste(_fit(image, (cw, ch)), (left + c * (cw + gap), y0))
    return sheet


def make_strip(images: list[Image.Image | None], labels: list[str] | None = None, title: str = "", *,
               cell_size: tuple[int, int] | None = None) -> Image.Image:
    """A one-row sweep (e.g. an interpolation series) with a label over each image."""
    return make_grid([list(images)], row_labels=None, col_labels=labels, title=title, cell_size=cell_size)
