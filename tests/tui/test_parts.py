"""The dashboard's pure parts: the metrics tail, payloads from forms and recipes, bars, labels."""

from __future__ import annotations

import json
import os

import pytest

from styler.tui.metrics import MetricsTail, RunStats
from styler.tui.provenance import adapters_text, fmt_time, matches
from styler.generate.jobs import parse_size
from styler.tui.queue_ops import FormError, eval_payload, mix_payload
from styler.tui.widgets import bar_chart


def test_tail_reads_only_new_complete_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.poll() == RunStats()  # no file yet
    path.write_text('{"step": 1, "loss": 1.0, "time": 10.0}\n{"step": 2, "lo')
    stats = tail.poll()
    assert (stats.rows_seen, stats.step) == (1, 1)
    offset = tail.offset
    with open(path, "a") as fh:
        fh.write('ss": 0.8, "time": 12.0, "lr": 0.001}\nnot json\n[1, 2]\n')
    stats = tail.poll()
    assert tail.offset > offset
    assert (stats.rows_seen, stats.step, stats.loss, stats.lr, stats.bad_lines) == (2, 2, 0.8, 0.001, 2)
    assert stats.it_per_s == pytest.approx(0.5)  # from timestamps: 1 step in 2 s
    assert tail.poll() == stats  # nothing new


def test_tail_starts_over_when_the_file_is_replaced(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 6)))
    tail = MetricsTail(path)
    assert tail.poll().step == 5
    tmp = tmp_path / "new.jsonl"
    tmp.write_text(json.dumps({"step": 1, "loss": 2.0, "step_s": 0.25}) + "\n")
    os.replace(tmp, path)  # a resumed or restarted run writes a new file
    stats = tail.poll()
    assert (stats.rows_seen, stats.step, stats.it_per_s) == (1, 1, 4.0)


def test_stats_keep_the_last_val_loss_and_skip_nan():
    rows = [{"step": 1, "loss": 1.0, "val_loss": 0.9}, {"step": 2, "loss": float("nan")}, {"step": 3, "loss": 0.5}]
    stats = RunStats.from_rows(rows)
    assert (stats.step, stats.loss, stats.val_loss, stats.losses) == (3, 0.5, 0.9, (1.0, 0.5))


def test_mix_payload_from_form_fields():
    p = mix_payload("a cat", [("anime@1", "0.5"), ("ink@2", "-0.25")], n="2", seed="", steps="20", size="64x32")
    assert p == {"prompt": "a cat", "negative": "", "adapters": [["anime@1", 0.5, None], ["ink@2", -0.25, None]],
                 "n": 2, "seed": None, "steps": 20, "guidance": 7.5, "scheduler": "ddim", "base": None,
                 "width": 64, "height": 32}
    assert "width" not in mix_payload("a cat", [], n="1", seed="3", steps="2")  # the base's own size
    for kwargs, message in [(dict(n="0"), "n must be at least 1"), (dict(seed="x"), "seed must be a whole number"),
                            (dict(size="60x64"), "multiples of 8")]:
        fields = {"n": "1", "seed": "", "steps": "2", **kwargs}
        with pytest.raises(FormError, match=message):
            mix_payload("a cat", [], **fields)
    with pytest.raises(FormError, match="weight of anime@1"):
        mix_payload("a cat", [("anime@1", "lots")], n="1", seed="", steps="2")
    with pytest.raises(FormError, match="prompt is empty"):
        mix_payload("  ", [], n="1", seed="", steps="2")
    for kwargs, message in [(dict(steps="5000"), "more than the 1000"), (dict(scheduler="warp"), "unknown --scheduler"),
                            (dict(size="big"), "use WIDTHxHEIGHT")]:  # what the CLI refuses, the form refuses
        fields = {"n": "1", "seed": "", "steps": "2", **kwargs}
        with pytest.raises(FormError, match=message):
            mix_payload("a cat", [], **fields)
    with pytest.raises(FormError, match="finite"):
        mix_payload("a cat", [("anime@1", "nan")], n="1", seed="", steps="2")
    assert parse_size("64") == (64, 64) and parse_size(" 64X32 ") == (64, 32) and parse_size("") is None


def test_eval_payload():
    assert eval_payload(" anime ", n="4", clip="", metrics="clip_t fid") == {
        "subject": "anime", "n": 4, "clip": None, "metrics": "clip_t,fid", "against": None}
    with pytest.raises(FormError, match="subject is empty"):
        eval_payload("", n="4", clip="")


def test_bar_chart_scales_to_the_compared_range_and_marks_the_best():
    text = bar_chart([("a", 2.0), ("b", 1.0), ("c", None)], width=8, best="a").plain.splitlines()
    assert text[0] == "a ████████ 2 ★"
    assert text[1] == "b █        1"  # the smallest value: one cell, not half the width
    assert text[2] == "c n/a"
    assert text[3] == "higher is better  ·  bars span 1 … 2, not from 0"
    assert "lower is better" in bar_chart([("a", 1.0)], lower_is_better=True).plain


def test_bar_chart_tells_close_scores_apart():
    """0.93 and 0.97 drawn from 0 differ by a cell or two; over their own range, by most of the width."""
    lines = bar_chart([("ours", 0.97), ("base", 0.93), ("mid", 0.95)], width=40).plain.splitlines()
    bars = {line.split()[0]: line.split()[1] for line in lines[:3]}
    assert (len(bars["ours"]), len(bars["base"])) == (40, 1)
    assert 19 <= len(bars["mid"]) <= 21
    assert bar_chart([("a", 0.5), ("b", 0.5)], width=4).plain.splitlines()[:2] == ["a ████ 0.5", "b ████ 0.5"]


def test_labels():
    assert adapters_text([]) == "base"
    assert adapters_text([{"name": "a", "version": 2, "weight": 0.5, "te_weight": 0.5},
                          {"name": "b", "weight": 1.0, "te_weight": 0.0}]) == "a@2×0.5 + b×1/te 0"
    assert fmt_time("2024-05-01T12:34:56.789+00:00") == "2024-05-01 12:34"
    assert fmt_time("2024-05-01T12:34:56.789+00:00", short=True) == "05-01 12:34"
    assert matches("INK", "calligraphy/ink@1") and matches("", None) and not matches("x", "abc", None)


def test_fit_widths_narrows_only_the_shrinkable_columns():
    from styler.tui.widgets import fit_widths

    # id 8, prompt 30, seed 10, with one cell of padding each side: 54 cells, to fit in 40
    assert fit_widths([8, 30, 10], 40, (1,)) == [8, 16, 10]
    assert fit_widths([8, 30, 10], 0, (1,)) == [8, 30, 10]  # no width known yet: untouched
    assert fit_widths([8, 30, 10], 100, (1,)) == [8, 30, 10]  # it fits already
    assert fit_widths([8, 30, 20], 40, (1, 2)) == [8, 13, 13]  # the widest gives first, then both
    assert fit_widths([8, 30, 10], 10, (1,)) == [8, 4, 10]  # never below 4, never the seed
