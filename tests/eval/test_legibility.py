"""The legibility metric: RapidOCR (the `ocr` extra, in the test extra too) reads the characters
`data synth` renders with a CJK font (the `cjk` extra's Noto, when the system has none), and
`styler eval` scores, stores and refuses as it says."""

from __future__ import annotations

import pytest
from PIL import Image

from registry import Registry, Score
from styler.eval import legibility as L
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # an OCR model, and the tiny pipeline


def test_which_characters_count():
    assert L.target_characters("书法 山水") == {"山", "水"}  # the style word is not text to write
    assert L.target_characters("mifu, 书法 风月, ink", ignore=("mifu",)) == {"风", "月"}
    assert L.target_characters("a red circle on a blue background") == set()
    assert L.target_characters("书法 山山水") == {"山", "水"}  # distinct characters


def test_ocr_reads_the_synth_calligraphy_and_nothing_in_blank_paper(tmp_path):
    pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra is not installed")
    from styler.data.synth import find_cjk_font, synthesize

    if find_cjk_font() is None:
        pytest.skip("no CJK font (pip install 'styler[cjk]')")
    result = synthesize("calligraphy", tmp_path, n=3, seed=0, size=128)
    assert result.font_used
    images = sorted(tmp_path.glob("*.png"))
    captions = [p.with_suffix(".txt").read_text("utf-8").strip() for p in images]
    read = [set(L.read_text(Image.open(p))) for p in images]
    written = [L.target_characters(c) for c in captions]
    assert all(written), captions
    # measured: 飞 is not read, 画 and 秋 are, exactly (so 2 of 3)
    shares = [len(w & r) / len(w) for w, r in zip(written, read)]
    assert sum(shares) / len(shares) >= 0.6, list(zip(captions, read))
    for i, r in enumerate(read):  # nothing is read that another image was asked to show
        others = set().union(*(w for j, w in enumerate(written) if j != i)) - written[i]
        assert not others & r, (captions, read)
    blank = Image.new("RGB", (128, 128), (236, 228, 210))
    mean, counted = L.legibility([blank], ["书法 山水"])
    assert (mean, counted) == (0.0, 1)
    assert L.legibility([blank], ["a plain prompt"])[1] == 0


def test_eval_scores_legibility_with_the_ocr_in_its_protocol(tiny_home, tmp_path):
    pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra is not installed")
    prompts = tmp_path / "p.txt"
    prompts.write_text("书法 山水\n", "utf-8")
    r = run_cli("eval", "baseline", "--prompts", prompts, "--metrics", "legibility", "--n", "1", "--steps", "2",
                "--clip", "tiny")
    assert r.exit_code == 0, r.stderr
    assert "legibility" in r.stdout
    (score,) = [s for s in Registry().all(Score) if s.metric == "legibility"]
    assert 0.0 <= score.value <= 1.0  # the untrained-for-text base writes no characters: measured 0.0
    assert score.protocol["ocr"]["engine"].startswith("rapidocr-onnxruntime")


def test_without_the_ocr_extra_legibility_is_refused_or_suggested(tiny_home, tmp_path, monkeypatch):
    monkeypatch.setattr(L, "ocr_available", lambda: False)
    prompts = tmp_path / "p.txt"
    prompts.write_text("书法 山水\n", "utf-8")
    args = ("--prompts", prompts, "--n", "1", "--steps", "2", "--clip", "tiny")
    r = run_cli("eval", "baseline", *args, "--metrics", "legibility")
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines()[-1].endswith(
        "install the OCR extra: pip install 'styler[ocr]' (rapidocr-onnxruntime, which ships PP-OCR's models)")
    assert not Registry().all(Score)  # refused before anything rendered or was stored
    r = run_cli("eval", "baseline", *args, "--metrics", "clip_t")
    assert r.exit_code == 0 and "legibility" not in r.stderr  # not asked for, not by default either
    r = run_cli("eval", "baseline", *args)
    assert r.exit_code == 0, r.stderr
    assert r.stderr.count("pip install 'styler[ocr]'") == 1  # the default metrics suggest it once
    plain = tmp_path / "plain.txt"
    plain.write_text("a red circle on a blue background\n", "utf-8")
    r = run_cli("eval", "baseline", "--prompts", plain, "--n", "1", "--steps", "2", "--clip", "tiny",
                "--metrics", "clip_t,legibility")
    assert r.exit_code == 0 and "legibility is skipped: no prompt asks for Chinese characters" in r.stderr
