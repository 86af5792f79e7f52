"""Evaluation reports: best-per-metric logic, the PNG (sheet + bar charts) and the HTML page."""

from __future__ import annotations

import html
import math
import re

import numpy as np
import pytest
from PIL import Image

from styler.errors import UsageError
from styler.eval.report import (LOWER_IS_BETTER, TINY_NOTE, SubjectReport, best_per_metric, render_html,
                                render_png, write_report)

PALETTE = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 180, 20), (150, 50, 180), (20, 170, 170)]
BEST_BAR = (230, 120, 20)
NOTE_BG = (255, 243, 205)


def squares(i: int, n: int, size=(48, 48)) -> list[Image.Image]:
    return [Image.new("RGB", size, PALETTE[(i + j) % len(PALETTE)]) for j in range(n)]


def subjects(n: int = 3, *, meaningful: bool = True, names=None) -> list[SubjectReport]:
    names = names or ["anime@1", "watercolor@2", "anime=0.5+watercolor=0.5", "baseline", "ink@1"][:n]
    return [SubjectReport(name, squares(i, 2 + i), {"fid": 40.0 + 3 * i, "kid": 0.05 - 0.01 * i,
                                                    "clip_score": 27.0 + i % 2, "style_prob": 0.5 + 0.1 * i},
                          meaningful)
            for i, name in enumerate(names)]


def count_colour(image: Image.Image, colour, box=None, tol=12) -> int:
    arr = np.asarray((image.crop(box) if box else image).convert("RGB")).astype(int)
    return int((np.abs(arr - np.array(colour)).sum(-1) < tol).sum())


def test_best_per_metric():
    rows = {"a": {"fid": 30.0, "clip": 0.2, "kid": float("nan"), "cmmd": None},
            "b": {"fid": 20.0, "clip": 0.3, "kid": 0.4, "cmmd": None},
            "c": {"fid": float("nan"), "clip": 0.1, "kid": 0.2}}
    assert LOWER_IS_BETTER == {"fid", "kid", "cmmd"}
    assert best_per_metric(rows) == {"fid": "b", "clip": "b", "kid": "c"}  # cmmd: nothing valid
    assert best_per_metric({"x": {"FID": 3.0}, "y": {"FID": 1.0}}) == {"FID": "y"}
    assert best_per_metric({"x": {"s": 1.0}, "y": {"s": 1.0}}) == {"s": "x"}  # ties: the first
    assert best_per_metric({"x": {"s": -2.0}, "y": {"s": math.inf}}) == {"s": "x"}
    assert best_per_metric({}) == {}


def test_png_grows_with_subjects_and_draws_charts(tmp_path):
    sizes = []
    for n in (1, 2, 4):
        out = render_png(subjects(n), tmp_path / f"r{n}.png", title="eval")
        image = Image.open(out)
        sizes.append(image.size)
        # the chart area (below the contact sheet) has ink: bars, labels, the best bar in orange
        sheet_bottom = max(np.nonzero(np.abs(np.asarray(image.convert("RGB")).astype(int)
                                             - np.array(PALETTE[0])).sum(-1) < 12)[0])
        charts = (0, sheet_bottom + 1, image.width, image.height)
        assert np.asarray(image.convert("L").crop(charts)).min() < 100
        if n == 1:  # one subject alone is nobody's best
            assert count_colour(image, BEST_BAR, charts) == 0
        else:
            assert count_colour(image, BEST_BAR, charts) > 50
    assert sizes[0][1] < sizes[1][1] < sizes[2][1]
    assert not list(tmp_path.glob(".*.tmp"))


def test_png_best_bar_follows_direction(tmp_path):
    """One metric, lower is better: the orange bar is the shortest one."""
    subs = [SubjectReport(n, squares(i, 1), {"fid": v}) for i, (n, v) in enumerate([("a", 50.0), ("b", 10.0),
                                                                                     ("c", 30.0)])]
    image = Image.open(render_png(subs, tmp_path / "fid.png"))
    arr = np.asarray(image.convert("RGB")).astype(int)
    ys, xs = np.nonzero(np.abs(arr - np.array(BEST_BAR)).sum(-1) < 12)
    bar_rows = np.nonzero(np.abs(arr - np.array((150, 170, 200))).sum(-1) < 12)
    assert len(xs) and len(bar_rows[1])
    assert xs.max() - xs.min() < bar_rows[1].max() - bar_rows[1].min()  # the best bar is the shortest
    assert count_colour(image, NOTE_BG) == 0  # all meaningful: no note


def test_png_tiny_clip_note_and_chinese_names(tmp_path):
    subs = subjects(3, meaningful=False, names=["水彩@1", "书法=0.5+水墨=0.5", "baseline"])
    subs[1].scores["kid"] = float("nan")  # a missing value is drawn as n/a, not a crash
    subs[2].images = []  # a subject without images gets a placeholder row
    image = Image.open(render_png(subs, tmp_path / "zh.png", title="风格 report"))
    assert count_colour(image, NOTE_BG) > 1000


def test_png_without_images_or_scores(tmp_path):
    image = Image.open(render_png([SubjectReport("baseline", [], {"fid": 1.0})], tmp_path / "a.png"))
    assert image.width >= 400
    render_png([SubjectReport("baseline", squares(0, 1), {})], tmp_path / "b.png")
    with pytest.raises(UsageError):
        render_png([], tmp_path / "c.png")


def test_html_escapes_embeds_and_highlights(tmp_path):
    evil, zh = "<script>alert(1)</script>", "水彩 & 墨"
    subs = [SubjectReport(evil, squares(0, 3), {"fid": 30.0, "clip_score": 0.2}, meaningful=False),
            SubjectReport(zh, squares(1, 2), {"fid": 20.0, "clip_score": 0.1}),
            SubjectReport("baseline", [], {"fid": float("nan"), "clip_score": 0.15})]
    path = render_html(subs, tmp_path / "r.html", title="<b>title</b>")
    text = path.read_text("utf-8")
    assert "<script>" not in text and "<b>title</b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "&lt;b&gt;title&lt;/b&gt;" in text
    assert "水彩 &amp; 墨" in text
    assert text.count("data:image/png;base64,") == 5
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # self-contained
    assert text.count("<svg") == 2
    assert TINY_NOTE in text
    rows = re.findall(r"<tr><td>(.*?)</td>(.*?)</tr>", text, re.S)
    cells = {html.unescape(name).rstrip(" *"): re.findall(r"<td( class=\"best\")?>([^<]*)</td>", rest) for name, rest in rows}
    assert cells[zh][0] == (' class="best"', "20")  # fid: lowest wins
    assert cells[evil][1] == (' class="best"', "0.2")  # clip_score: highest wins
    assert cells["baseline"][0] == ("", "n/a")
    assert sum(c[0] != "" for row in cells.values() for c in row) == 2


def test_write_report_dispatches_on_suffix(tmp_path):
    assert write_report(subjects(2), tmp_path / "r.PNG").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_report(subjects(2), tmp_path / "r.html").read_text("utf-8").startswith("<!DOCTYPE html>")
    with pytest.raises(UsageError, match=r"\.png or \.html"):
        write_report(subjects(2), tmp_path / "r.pdf")


def test_the_world_clip_note_appears_once_without_stars(tmp_path):
    from styler.eval.features import WORLD_NOTE

    subs = [SubjectReport(s.name, s.images, s.scores, True, clip_note=WORLD_NOTE) for s in subjects(3)]
    page = render_html(subs, tmp_path / "r.html").read_text("utf-8")
    assert page.count(html.escape(WORLD_NOTE)) == 1 and " *</td>" not in page
    image = Image.open(render_png(subs, tmp_path / "r.png"))
    assert count_colour(image, NOTE_BG) > 0  # the note box is drawn


def test_only_comparable_rows_compete_and_each_shows_its_delta_vs_its_own_baseline(tmp_path):
    from styler.eval.report import winners

    rows = [  # two adapters scored against dataset A, one against B, and their baselines
        SubjectReport("anime@1", scores={"style_sim": 0.50, "fid": 30.0}, group="c|A", delta={"style_sim": 0.04}),
        SubjectReport("ink@1", scores={"style_sim": 0.45, "fid": 20.0}, group="c|A", delta={"style_sim": -0.01}),
        SubjectReport("watercolor@1", scores={"style_sim": 0.90, "fid": 5.0}, group="c|B", delta={"style_sim": 0.02}),
        SubjectReport("baseline vs A", scores={"style_sim": 0.99, "fid": 1.0}, group="c|A", baseline=True),
    ]
    best = winners(rows)
    # watercolor (another reference set) and the baseline (a reference) are never "best"
    assert best == {"style_sim": {"anime@1"}, "fid": {"ink@1"}}
    text = render_html(rows, tmp_path / "r.html").read_text("utf-8")
    assert "(Δ +0.04)" in text and "(Δ -0.01)" in text and "(Δ +0.02)" in text
    cells = re.findall(r'<td class="best">([^<]*)', text)
    assert cells == ["0.5", "20"]  # anime's style_sim, ink's fid; nothing of the baseline's or watercolor's
    png = render_png(rows, tmp_path / "r.png")
    assert count_colour(Image.open(png), BEST_BAR) > 0
