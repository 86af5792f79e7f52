"""Synthetic style datasets: files, captions, determinism, style statistics, font logic, errors."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from styler.data import synth
from styler.data.synth import CHARACTERS, FONT_ENV, WORDS, SynthResult, find_cjk_font, synthesize
from styler.data.synth import LEGACY_KINDS as KINDS  # the world-* kinds: tests/models/test_tiny_world.py
from styler.errors import UsageError, WriteError

CAPTION_START = {"calligraphy": "书法 ", "pixel": "pixel art, ", "watercolor": "watercolor painting of "}


@pytest.fixture(autouse=True)
def _no_font_env(monkeypatch):
    monkeypatch.delenv(FONT_ENV, raising=False)


def _make(kind: str, out: Path, **kw) -> SynthResult:
    if kind == "calligraphy":
        kw.setdefault("font", "")  # procedural: the same on every machine
    return synthesize(kind, out, **kw)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im, dtype=np.float64)


def _png_chunks(data: bytes) -> list[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, names = 8, []
    while pos < len(data):
        length, name = struct.unpack(">I4s", data[pos:pos + 8])
        names.append(name.decode("ascii"))
        pos += 12 + length
    return names


# ------------------------------------------------------------------ files, names, captions


@pytest.mark.parametrize("kind", KINDS)
def test_writes_numbered_images_and_utf8_captions(tmp_path, kind):
    res = _make(kind, tmp_path / "out", n=5, size=48, seed=1)
    assert isinstance(res, SynthResult)
    assert (res.kind, res.n, res.out_dir) == (kind, 5, tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [f"{i:04d}.{ext}" for i in range(1, 6) for ext in ("png", "txt")]
    assert len(res.captions) == 5
    for i, caption in enumerate(res.captions, start=1):
        text = (tmp_path / "out" / f"{i:04d}.txt").read_bytes().decode("utf-8")
        assert text == caption + "\n"
        assert caption.startswith(CAPTION_START[kind])
        assert "\n" not in caption and caption == caption.strip()
        with Image.open(tmp_path / "out" / f"{i:04d}.png") as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (48, 48)


def test_result_is_frozen(tmp_path):
    res = _make("pixel", tmp_path, n=1, size=16)
    with pytest.raises(AttributeError):
        res.n = 2  # type: ignore[misc]


def test_pixel_and_watercolor_captions_name_a_subject(tmp_path):
    pix = _make("pixel", tmp_path / "p", n=12, size=32).captions
    assert all(c.split()[-1] in {"house", "tree", "cat", "sword", "mushroom", "heart", "castle", "potion",
                                 "ghost", "flower", "monster"} for c in pix), pix
    wc = _make("watercolor", tmp_path / "w", n=12, size=32).captions
    assert all(c.split()[-1] in {"flower", "sun", "hills", "boat", "tree"} for c in wc), wc
    assert len(set(pix)) > 3 and len(set(wc)) > 3


def test_pngs_carry_no_metadata_chunks(tmp_path):
    for kind in KINDS:
        _make(kind, tmp_path / kind, n=2, size=32)
        for png in (tmp_path / kind).glob("*.png"):
            assert set(_png_chunks(png.read_bytes())) == {"IHDR", "IDAT", "IEND"}, png


def test_images_in_one_dataset_are_all_different(tmp_path):
    for kind in KINDS:
        files = _files(_make(kind, tmp_path / kind, n=24, size=32).out_dir)
        pngs = [b for name, b in files.items() if name.endswith(".png")]
        assert len(set(pngs)) == 24, kind


# ------------------------------------------------------------------ determinism


@pytest.mark.parametrize("kind", KINDS)
def test_same_arguments_give_identical_bytes(tmp_path, kind):
    a = _make(kind, tmp_path / "a", n=4, size=40, seed=7)
    b = _make(kind, tmp_path / "b", n=4, size=40, seed=7)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert a.captions == b.captions
    c = _make(kind, tmp_path / "c", n=4, size=40, seed=8)
    assert _files(tmp_path / "c") != _files(tmp_path / "a")
    assert c.n == 4


def test_fewer_images_are_a_prefix_of_more(tmp_path):
    for kind in KINDS:
        few = _files(_make(kind, tmp_path / f"{kind}3", n=3, size=32, seed=2).out_dir)
        many = _files(_make(kind, tmp_path / f"{kind}6", n=6, size=32, seed=2).out_dir)
        assert few == {k: v for k, v in many.items() if k in few}


def test_rerun_into_same_folder_overwrites_identically(tmp_path):
    _make("watercolor", tmp_path, n=3, size=32)
    first = _files(tmp_path)
    _make("watercolor", tmp_path, n=3, size=32)
    assert _files(tmp_path) == first


def test_negative_and_huge_seeds_work(tmp_path):
    _make("pixel", tmp_path / "neg", n=1, size=16, seed=-5)
    _make("pixel", tmp_path / "big", n=1, size=16, seed=2**70)
    assert (tmp_path / "neg" / "0001.png").exists() and (tmp_path / "big" / "0001.png").exists()


# ------------------------------------------------------------------ style statistics


def _features(img: np.ndarray) -> np.ndarray:
    lum = img @ np.array([0.299, 0.587, 0.114])
    sat = img.max(axis=2) - img.min(axis=2)
    colours = len(np.unique(img.reshape(-1, 3), axis=0))
    edges = np.abs(np.diff(lum, axis=0)).mean() + np.abs(np.diff(lum, axis=1)).mean()
    return np.array([lum.mean() / 255, (lum < 80).mean(), sat.mean() / 255, np.log(colours) / 10, edges / 50])


@pytest.fixture(scope="module")
def stats_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats")
    out = {}
    for kind in KINDS:
        res = _make(kind, root / kind, n=12, size=64, seed=3)
        out[kind] = [_rgb(res.out_dir / f"{i:04d}.png") for i in range(1, 13)]
    return out


def test_pixel_art_has_a_small_palette(stats_sets):
    for img in stats_sets["pixel"]:
        assert len(np.unique(img.reshape(-1, 3), axis=0)) <= 8


def test_calligraphy_is_light_paper_with_dark_ink(stats_sets):
    for img in stats_sets["calligraphy"]:
        lum = img @ np.array([0.299, 0.587, 0.114])
        assert lum.mean() > 150
        assert 0.02 < (lum < 80).mean() < 0.45
        assert np.median(img[..., 0] - img[..., 2]) > 5  # warm paper: more red than blue
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200


def test_watercolor_is_light_soft_and_colourful(stats_sets):
    cal_sat = np.mean([(i.max(axis=2) - i.min(axis=2)).mean() for i in stats_sets["calligraphy"]])
    wc_sat = np.mean([(i.max(axis=2) - i.min(axis=2)).mean() for i in stats_sets["watercolor"]])
    assert wc_sat > cal_sat
    for img in stats_sets["watercolor"]:
        lum = img @ np.array([0.299, 0.587, 0.114])
        assert lum.mean() > 140
        assert (lum < 50).mean() < 0.02  # washes, hardly any true blacks
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200


def test_each_dataset_is_most_like_itself(stats_sets):
    """Split every dataset in two halves: each half's mean features are nearest to the other half
    of the same kind (a dataset's style similarity to itself beats any other's)."""
    feats = {k: np.array([_features(i) for i in imgs]) for k, imgs in stats_sets.items()}
    even = {k: f[0::2].mean(axis=0) for k, f in feats.items()}
    odd = {k: f[1::2].mean(axis=0) for k, f in feats.items()}
    for kind in KINDS:
        own = np.linalg.norm(even[kind] - odd[kind])
        for other in KINDS:
            if other != kind:
                assert own < np.linalg.norm(even[kind] - odd[other]), (kind, other)


# ------------------------------------------------------------------ fonts


def test_forced_procedural_fallback(tmp_path):
    res = synthesize("calligraphy", tmp_path, n=3, size=48, font="")
    assert res.font_used is None
    assert res.captions == ["书法 笔画"] * 3


def test_env_can_force_procedural(tmp_path, monkeypatch):
    monkeypatch.setenv(FONT_ENV, "")
    res = synthesize("calligraphy", tmp_path / "a", n=2, size=32)
    assert res.font_used is None
    assert _files(tmp_path / "a") == _files(synthesize("calligraphy", tmp_path / "b", n=2, size=32, font="").out_dir)


def test_no_font_on_machine_falls_back(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "find_cjk_font", lambda: None)
    res = synthesize("calligraphy", tmp_path, n=2, size=32)
    assert res.font_used is None and res.captions == ["书法 笔画"] * 2


def test_other_kinds_ignore_the_font(tmp_path):
    assert _make("pixel", tmp_path, n=1, size=16).font_used is None


@pytest.fixture(scope="module")
def cjk_font() -> Path:
    font = find_cjk_font()
    if font is None:
        pytest.skip("no CJK font installed (e.g. apt-get install fonts-arphic-ukai)")
    return font


def test_font_rendering(tmp_path, cjk_font):
    a = synthesize("calligraphy", tmp_path / "a", n=6, size=64, seed=4, font=cjk_font)
    b = synthesize("calligraphy", tmp_path / "b", n=6, size=64, seed=4, font=str(cjk_font))
    assert a.font_used == str(cjk_font)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    for caption in a.captions:
        assert caption.startswith("书法 ")
        text = caption.removeprefix("书法 ")
        assert text in CHARACTERS or text in WORDS
    for i in range(1, 7):
        lum = _rgb(tmp_path / "a" / f"{i:04d}.png") @ np.array([0.299, 0.587, 0.114])
        assert lum.mean() > 140 and (lum < 80).mean() > 0.02


def test_auto_font_is_the_found_one(tmp_path, cjk_font):
    assert synthesize("calligraphy", tmp_path, n=1, size=32).font_used == str(cjk_font)


def test_env_font_path(tmp_path, monkeypatch, cjk_font):
    monkeypatch.setenv(FONT_ENV, str(cjk_font))
    assert synthesize("calligraphy", tmp_path, n=1, size=32).font_used == str(cjk_font)


def test_find_cjk_font_without_fc_list_or_fonts(monkeypatch):
    monkeypatch.setattr(synth.fonts, "KNOWN_CJK_FONTS", ())
    monkeypatch.setattr(synth.fonts, "_packaged_fonts", lambda: [])
    monkeypatch.setattr(synth.fonts.shutil, "which", lambda name: None)
    assert find_cjk_font() is None


def test_fc_list_that_hangs_or_fails_is_ignored(monkeypatch):
    monkeypatch.setattr(synth.fonts, "KNOWN_CJK_FONTS", ())
    monkeypatch.setattr(synth.fonts, "_packaged_fonts", lambda: [])
    monkeypatch.setattr(synth.fonts.shutil, "which", lambda name: "/usr/bin/fc-list")

    def hang(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], kwargs.get("timeout", 0))

    monkeypatch.setattr(synth.fonts.subprocess, "run", hang)
    assert find_cjk_font() is None

    def missing(*args, **kwargs):
        raise FileNotFoundError(2, "No such file")

    monkeypatch.setattr(synth.fonts.subprocess, "run", missing)
    assert find_cjk_font() is None


def test_fc_list_output_is_parsed_and_ranked(monkeypatch, tmp_path):
    monkeypatch.setattr(synth.fonts.shutil, "which", lambda name: "/usr/bin/fc-list")
    listing = "/x/NotoSansCJK-Regular.ttc: \n/x/ukai.ttc: \n/x/readme.txt: \n/x/uming.ttc:\n"
    monkeypatch.setattr(synth.fonts.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a[0], 0, listing.encode(), b""))
    assert synth.fonts._fc_list_fonts() == ["/x/ukai.ttc", "/x/uming.ttc", "/x/NotoSansCJK-Regular.ttc"]


# ------------------------------------------------------------------ errors


def test_unknown_kind_lists_the_kinds(tmp_path):
    with pytest.raises(UsageError) as info:
        synthesize("oil", tmp_path / "out")
    for kind in KINDS:
        assert kind in info.value.message
    assert "oil" in info.value.message
    assert info.value.exit_code == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("n", [0, -3])
def test_n_must_be_positive(tmp_path, n):
    with pytest.raises(UsageError, match="at least 1"):
        synthesize("pixel", tmp_path / "out", n=n)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("size", [15, 0, -64])
def test_size_must_be_at_least_16(tmp_path, size):
    with pytest.raises(UsageError, match="at least 16"):
        synthesize("watercolor", tmp_path / "out", size=size)


def test_size_16_is_allowed(tmp_path):
    for kind in KINDS:
        res = _make(kind, tmp_path / kind, n=2, size=16)
        with Image.open(res.out_dir / "0002.png") as im:
            assert im.size == (16, 16)


def test_missing_font_file(tmp_path):
    missing = tmp_path / "nope.ttf"
    with pytest.raises(UsageError, match="does not exist") as info:
        synthesize("calligraphy", tmp_path / "out", font=missing)
    assert "nope.ttf" in info.value.message
    assert not (tmp_path / "out").exists()


def test_font_that_is_a_folder(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        synthesize("calligraphy", tmp_path / "out", font=tmp_path)


def test_font_that_cannot_be_loaded(tmp_path):
    bad = tmp_path / "bad.ttf"
    bad.write_bytes(b"this is not a font" * 10)
    with pytest.raises(UsageError, match="cannot be loaded") as info:
        synthesize("calligraphy", tmp_path / "out", font=bad)
    assert "bad.ttf" in info.value.message


def test_font_without_chinese_glyphs(tmp_path):
    latin = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if not latin.is_file():
        pytest.skip("DejaVuSans not installed")
    with pytest.raises(UsageError, match="no glyphs for Chinese"):
        synthesize("calligraphy", tmp_path / "out", font=latin)


def test_bad_font_in_env(tmp_path, monkeypatch):
    monkeypatch.setenv(FONT_ENV, str(tmp_path / "gone.otf"))
    with pytest.raises(UsageError, match=FONT_ENV):
        synthesize("calligraphy", tmp_path / "out")


def test_out_dir_that_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(WriteError):
        synthesize("pixel", target, n=1, size=16)


def test_font_env_is_only_read_for_calligraphy(tmp_path, monkeypatch):
    monkeypatch.setenv(FONT_ENV, str(tmp_path / "gone.otf"))
    assert synthesize("pixel", tmp_path / "out", n=1, size=16).font_used is None


def test_the_cjk_extra_gives_a_font_when_the_system_has_none(monkeypatch):
    """`pip install 'styler[cjk]'` (mplfonts' Noto CJK, in the test extra too) is found by path."""
    pytest.importorskip("mplfonts", reason="the cjk extra is not installed")
    monkeypatch.setattr(synth.fonts, "KNOWN_CJK_FONTS", ())
    monkeypatch.setattr(synth.fonts, "_fc_list_fonts", lambda timeout=3.0: [])
    monkeypatch.delenv("STYLER_CJK_FONT", raising=False)
    font = find_cjk_font()
    assert font is not None and font.name == "NotoSerifCJKsc-Regular.otf"
    assert set(CHARACTERS) <= set(synth.fonts._FontGlyphs.load(font).chars)
