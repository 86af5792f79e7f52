"""Evaluation reports (``styler report NAME… --out FILE.png|.html``): sample images per subject and
one bar chart per metric, as a single PNG (drawn with PIL) or a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from styler.errors import UsageError
from styler.files import write_bytes_atomic
from styler.generate.grid import _ellipsize, _Face, cjk_font_for, make_grid

from .table import LOWER_IS_BETTER, _valid, best_per_metric, comparable_winners, lower_is_better  # noqa: F401  (one rule, kept in table)

TINY_NOTE = "scores from a CLIP with random weights are not meaningful"
MAX_IMAGES = 8
THUMB = 128

BG, TEXT, MUTED = (255, 255, 255), (32, 32, 32), (110, 110, 110)
BAR, BEST_BAR, AXIS = (150, 170, 200), (230, 120, 20), (160, 160, 160)
NOTE_BG, NOTE_EDGE, NOTE_TEXT = (255, 243, 205), (220, 170, 40), (110, 70, 0)


@dataclass
class SubjectReport:
    name: str
    images: list[Image.Image] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    meaningful: bool = True  # False when scored with a CLIP that has random weights
    clip_note: str = ""  # e.g. the built-in world's tiny CLIP: comparable only with its own scores
    baseline: bool = False  # the plain base's row: a reference, never "best"
    group: str = ""  # subjects with the same group were scored the same way (CLIP, reference set)
    delta: dict[str, float] = field(default_factory=dict)  # metric -> value minus its own baseline's


def winners(subjects: list[SubjectReport]) -> dict[str, set[str]]:
    """{metric: names} with the best value among comparable subjects (see table.comparable_winners)."""
    return comparable_winners([(s.name, s.group, s.baseline, s.scores) for s in subjects])


def _delta_text(s: SubjectReport, metric: str) -> str:
    d = s.delta.get(metric)
    return f" (Δ {d:+.3g})" if _valid(d) else ""


def _metrics(subjects: list[SubjectReport]) -> list[str]:
    return list(dict.fromkeys(m for s in subjects for m in s.scores))


def _fmt(value) -> str:
    if not _valid(value):
        return "n/a"
    v = float(value)
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.3g}"
    return f"{v:.4g}" if abs(v) < 100 else f"{v:.1f}"


def _metric_title(metric: str) -> str:
    return f"{metric}  ({'lower' if lower_is_better(metric) else 'higher'} is better)"


# ---------------------------------------------------------------- PNG

def _bar_span(values: list[float], x0: float, x1: float):
    lo, hi = min([0.0, *values]), max([0.0, *values])
    if hi == lo:
        hi = lo + 1.0
    return lambda v: x0 + (v - lo) / (hi - lo) * (x1 - x0)


def _chart(metric: str, subjects: list[SubjectReport], best: set[str], face: _Face, head: _Face,
           width: int) -> Image.Image:
    """One horizontal bar chart: a row per subject, its value at the bar's end, the best in orange."""
    lh, pad = face.line_height, 8
    row_h = lh + 6
    label_w = min(max(face.getlength(s.name + " *") for s in subjects) + pad, width * 0.35)
    value_w = max(face.getlength(_fmt(s.scores.get(metric)) + _delta_text(s, metric)) for s in subjects) \
        + face.getlength("  best ") + pad
    x_bar0, x_bar1 = pad + label_w, width - pad - value_w
    top = head.line_height + pad
    img = Image.new("RGB", (width, top + row_h * len(subjects) + pad), BG)
    draw = ImageDraw.Draw(img)
    title = _ellipsize(head, _metric_title(metric), width - 2 * pad)
    head.draw(draw, (pad + head.getlength(title) / 2, head.line_height / 2 + 2), title, TEXT)
    valid = [float(s.scores[metric]) for s in subjects if _valid(s.scores.get(metric))]
    xmap = _bar_span(valid, x_bar0, x_bar1)
    for i, s in enumerate(subjects):
        y0 = top + i * row_h
        cy = y0 + row_h / 2
        label = _ellipsize(face, s.name + ("" if s.meaningful else " *"), label_w - pad)
        face.draw(draw, (x_bar0 - pad / 2 - face.getlength(label) / 2, cy), label, TEXT)
        value = s.scores.get(metric)
        if not _valid(value):
            text, end = "n/a", x_bar0
            face.draw(draw, (end + 6 + face.getlength(text) / 2, cy), text, MUTED)
            continue
        a, b = sorted((xmap(0.0), xmap(float(value))))
        is_best = s.name in best
        draw.rectangle((round(a), y0 + 3, max(round(a) + 1, round(b)), y0 + row_h - 3),
                       fill=BEST_BAR if is_best else BAR)
        text = _fmt(value) + _delta_text(s, metric) + ("  best" if is_best else "")
        end = max(xmap(float(value)), xmap(0.0))
        face.draw(draw, (end + 6 + face.getlength(text) / 2, cy), text, BEST_BAR if is_best else TEXT)
    x = round(xmap(0.0))  # the zero axis
    draw.line((x, top, x, top + row_h * len(subjects)), fill=AXIS)
    return img


def _note(text: str, face: _Face, width: int) -> Image.Image:
    h = face.line_height + 12
    img = Image.new("RGB", (width, h), BG)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, width - 1, h - 1), fill=NOTE_BG, outline=NOTE_EDGE, width=2)
    face.draw(draw, (width / 2, h / 2), _ellipsize(face, text, width - 16), NOTE_TEXT)
    return img


def render_image(subjects: list[SubjectReport], title: str = "") -> Image.Image:
    """The report as one PIL image: contact sheet on top, then the note and the bar charts."""
    if not subjects:
        raise UsageError("nothing to report: no subjects")
    texts = [title, *(s.name for s in subjects), *_metrics(subjects)]
    cjk = cjk_font_for(texts)
    face, head = _Face(14, cjk), _Face(16, cjk)
    rows = [[im for im in s.images[:MAX_IMAGES]] or [None] for s in subjects]
    parts: list[Image.Image] = []
    if any(im is not None for r in rows for im in r):
        parts.append(make_grid(rows, row_labels=[s.name for s in subjects], title=title,
                               cell_size=(THUMB, THUMB)))
    elif title.strip():
        parts.append(make_grid([[Image.new("RGB", (1, 1), BG)]], title=title, cell_size=(1, 1)))
    metrics = _metrics(subjects)
    width = max([560, *(p.width for p in parts)])
    cols = max(1, min(len(metrics), width // 520)) if metrics else 1
    chart_w = (width - 16 - (cols - 1) * 16) // cols
    if any(not s.meaningful for s in subjects):
        parts.append(_note("* " + TINY_NOTE, head, width - 16))
    for text in sorted({s.clip_note for s in subjects if s.clip_note}):
        parts.append(_note(text, head, width - 16))
    best = winners(subjects)
    charts = [_chart(m, subjects, best.get(m, set()), face, head, chart_w) for m in metrics]
    for i in range(0, len(charts), cols):
        line = charts[i:i + cols]
        row = Image.new("RGB", (width - 16, max(c.height for c in line)), BG)
        for j, c in enumerate(line):
            row.paste(c, (j * (chart_w + 16), 0))
        parts.append(row)
    if not metrics:
        parts.append(_note("no scores for these subjects", head, width - 16))
    gap = 12
    out = Image.new("RGB", (width, sum(p.height for p in parts) + gap * (len(parts) + 1)), BG)
    y = gap
    for p in parts:
        out.paste(p, ((width - p.width) // 2, y))
        y += p.height + gap
    return out


def render_png(subjects: list[SubjectReport], path: str | os.PathLike, title: str = "") -> Path:
    buffer = io.BytesIO()
    render_image(subjects, title).save(buffer, format="PNG", optimize=True)
    return write_bytes_atomic(path, buffer.getvalue())


# ---------------------------------------------------------------- HTML

def _data_uri(image: Image.Image, size: int = 192) -> str:
    im = image.convert("RGBA" if "A" in image.getbands() or image.mode == "P" else "RGB")
    im.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    im.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _svg_chart(metric: str, subjects: list[SubjectReport], best: set[str]) -> str:
    e = html.escape
    row_h, label_w, bar_w, value_w = 24, 200, 320, 110
    valid = [float(s.scores[metric]) for s in subjects if _valid(s.scores.get(metric))]
    xmap = _bar_span(valid, label_w, label_w + bar_w)
    height = row_h * len(subjects) + 4
    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + value_w}" '
           f'height="{height}" role="img" aria-label="{e(metric)}">']
    for i, s in enumerate(subjects):
        y, cy = i * row_h + 2, i * row_h + 2 + row_h / 2
        name = s.name if len(s.name) <= 28 else s.name[:27] + "…"
        out.append(f'<text x="{label_w - 8}" y="{cy:.1f}" text-anchor="end" dominant-baseline="middle">'
                   f'<title>{e(s.name)}</title>{e(name)}{"" if s.meaningful else " *"}</text>')
        value = s.scores.get(metric)
        if not _valid(value):
            out.append(f'<text x="{label_w + 6}" y="{cy:.1f}" dominant-baseline="middle" fill="#888">n/a</text>')
            continue
        a, b = sorted((xmap(0.0), xmap(float(value))))
        cls = "bar best" if s.name in best else "bar"
        out.append(f'<rect class="{cls}" x="{a:.1f}" y="{y + 3}" width="{max(1.0, b - a):.1f}" '
                   f'height="{row_h - 6}"/>')
        end = max(xmap(float(value)), xmap(0.0))
        out.append(f'<text x="{end + 6:.1f}" y="{cy:.1f}" dominant-baseline="middle">'
                   f'{e(_fmt(value) + _delta_text(s, metric))}{" ★" if s.name in best else ""}</text>')
    x = xmap(0.0)
    out.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="#a0a0a0"/></svg>')
    return "".join(out)


_CSS = """body{font-family:system-ui,"DejaVu Sans","Noto Sans CJK SC",sans-serif;margin:24px;color:#202020}
h1{font-size:22px}h2{font-size:18px;margin:20px 0 6px}h3{font-size:15px;margin:14px 0 4px}
.note{background:#fff3cd;border:2px solid #dcaa28;color:#6e4600;padding:8px 12px;display:inline-block}
.thumbs img{width:128px;height:auto;margin:0 4px 4px 0;border:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}td.best{background:#fde2c8;font-weight:bold}
.bar{fill:#96aac8}.bar.best{fill:#e67814}svg text{font-size:13px;fill:#202020}
.charts{display:flex;flex-wrap:wrap;gap:12px 32px}"""


def render_html_text(subjects: list[SubjectReport], title: str = "") -> str:
    if not subjects:
        raise UsageError("nothing to report: no subjects")
    e = html.escape
    metrics = _metrics(subjects)
    best = winners(subjects)
    doc = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(title or 'styler report')}</title><style>{_CSS}</style></head><body>"]
    if title:
        doc.append(f"<h1>{e(title)}</h1>")
    if any(not s.meaningful for s in subjects):
        doc.append(f'<p class="note">* {e(TINY_NOTE)}</p>')
    for text in sorted({s.clip_note for s in subjects if s.clip_note}):
        doc.append(f'<p class="note">{e(text)}</p>')
    if metrics:
        doc.append("<h2>Scores</h2><table><thead><tr><th>subject</th>")
        doc += [f'<th>{e(m)} {"↓" if lower_is_better(m) else "↑"}</th>' for m in metrics]
        doc.append("</tr></thead><tbody>")
        for s in subjects:
            doc.append(f'<tr><td>{e(s.name)}{"" if s.meaningful else " *"}</td>')
            for m in metrics:
                cls = ' class="best"' if s.name in best.get(m, ()) and _valid(s.scores.get(m)) else ""
                delta = _delta_text(s, m)
                doc.append(f"<td{cls}>{e(_fmt(s.scores.get(m)))}" + (f"<small>{e(delta)}</small>" if delta else "") + "</td>")
            doc.append("</tr>")
        doc.append("</tbody></table><div class=\"charts\">")
        doc += [f"<figure><figcaption>{e(_metric_title(m))}</figcaption>{_svg_chart(m, subjects, best.get(m, set()))}"
                "</figure>" for m in metrics]
        doc.append("</div>")
    doc.append("<h2>Samples</h2>")
    for s in subjects:
        doc.append(f'<section><h3>{e(s.name)}</h3><div class="thumbs">')
        doc += [f'<img src="{_data_uri(im)}" alt="{e(s.name)} sample {i + 1}">'
                for i, im in enumerate(s.images[:MAX_IMAGES])]
        doc.append("</div></section>" if s.images else "<em>no images</em></div></section>")
    doc.append("</body></html>\n")
    return "\n".join(doc)


def render_html(subjects: list[SubjectReport], path: str | os.PathLike, title: str = "") -> Path:
    return write_bytes_atomic(path, render_html_text(subjects, title).encode("utf-8"))


def write_report(subjects: list[SubjectReport], path: str | os.PathLike, title: str = "") -> Path:
    """Dispatch on the suffix of ``path``: .png or .html/.htm."""
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        return render_png(subjects, path, title)
    if suffix in (".html", ".htm"):
        return render_html(subjects, path, title)
    raise UsageError(f"--out must end in .png or .html, not {Path(path).name!r}")
