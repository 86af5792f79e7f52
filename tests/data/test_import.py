"""`styler data add`: the happy path, options, and every kind of bad input — each with its
message, its exit code, and a check that nothing was left behind."""

import json
import struct
import zlib

import pytest
from PIL import Image

from registry import Dataset, Registry
from tests.helpers import make_images, run_cli, tree


def _datasets_state(home):
    """What a failed import must not change: records and the datasets folder."""
    recs = [d.id for d in Registry(home).all(Dataset)] if (home / "registry").exists() else []
    return recs, tree(home / "datasets")


def assert_refused(home, result, code, *fragments):
    assert result.exit_code == code, (result.stdout, result.stderr)
    line = result.stderr.strip()
    assert line.startswith("error:") and "\n" not in line, line
    for f in fragments:
        assert f in line, line
    assert "Traceback" not in result.stderr + result.stdout


def test_add_imports_captions_prefix_trigger_and_split(styler_home, tmp_path):
    make_images(tmp_path / "src", 6)
    r = run_cli("data", "add", "calligraphy/mifu", tmp_path / "src", "--prefix", "书法", "--trigger", "mifu",
                "--val-split", "0.34", "--size", "32")
    assert r.exit_code == 0, r.stderr
    assert "added calligraphy/mifu@1: 6 images (4 train, 2 val)" in r.stdout
    d = Registry().resolve(Dataset, "calligraphy/mifu")
    folder = styler_home / d.path
    rows = [json.loads(line) for line in (folder / "captions.jsonl").read_text("utf-8").splitlines()]
    assert [r_["text"] for r_ in rows] == [f"mifu, 书法 永 {i}" for i in range(6)]
    assert sorted(r_["split"] for r_ in rows) == ["train"] * 4 + ["val"] * 2
    for row in rows:
        assert Image.open(folder / "images" / row["file"]).size == (32, 32)
    manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    assert manifest["content_hash"] == d.content_hash and manifest["counts"]["kept"] == 6
    assert list((styler_home / "datasets").glob(".tmp-*")) == []


def test_adding_again_makes_the_next_version_and_notes_identical_content(styler_home, tmp_path):
    make_images(tmp_path / "src", 3)
    assert run_cli("data", "add", "anime", tmp_path / "src").exit_code == 0
    r = run_cli("data", "add", "anime", tmp_path / "src")
    assert r.exit_code == 0 and "anime@2" in r.stdout
    assert "identical to anime@1" in r.stderr
    assert [d.version for d in Registry().versions(Dataset, "anime")] == [1, 2]


def test_unprocessed_images_keep_their_original_bytes(styler_home, tmp_path):
    paths = make_images(tmp_path / "src", 2)
    assert run_cli("data", "add", "raw", tmp_path / "src").exit_code == 0
    d = Registry().resolve(Dataset, "raw")
    stored = sorted((styler_home / d.path / "images").iterdir())
    assert [p.read_bytes() for p in stored] == [p.read_bytes() for p in paths]


def test_center_crop_and_aspect_resize(styler_home, tmp_path):
    make_images(tmp_path / "src", 1, size=(80, 40))
    cropped = run_cli("data", "add", "crop", tmp_path / "src", "--size", "32", "--crop", "center")
    kept = run_cli("data", "add", "keep", tmp_path / "src", "--size", "32", "--crop", "none")
    reg = Registry()
    sizes = {n: Image.open(next((styler_home / reg.resolve(Dataset, n).path / "images").iterdir())).size for n in ("crop", "keep")}
    assert sizes == {"crop": (32, 32), "keep": (32, 16)}
    # said, not silent: the crop loses the image's edges, and says how to keep them
    assert "1 non-square image(s) were center-cropped to 32x32" in cropped.stderr and "--crop none" in cropped.stderr
    assert "center-cropped" not in kept.stderr and "upscaled" not in kept.stderr
    big = run_cli("data", "add", "big", tmp_path / "src", "--size", "128", "--crop", "none")
    assert big.exit_code == 0 and "1 image(s) were smaller than --size 128 and were upscaled" in big.stderr


def test_caption_sources_jsonl_csv_filename_template(styler_home, tmp_path):
    src = tmp_path / "src"
    make_images(src, 2, captions=False)
    (src / "metadata.jsonl").write_text('{"file_name": "img0.png", "text": "墨 from jsonl"}\n{"file_name": "img1.png", "text": "two"}\n', "utf-8")
    (src / "metadata.csv").write_text("file_name,text\nimg0.png,from csv\nimg1.png,b\n", "utf-8")
    cases = {"jsonl": "墨 from jsonl", "csv": "from csv", "filename": "img0", "template": "a sketch in zz style"}
    for how, want in cases.items():
        extra = ["--template", "a sketch in {trigger} style", "--trigger", "zz"] if how == "template" else []
        r = run_cli("data", "add", f"cap-{how}", src, "--caption-from", how, *extra)
        assert r.exit_code == 0, r.stderr
        d = Registry().resolve(Dataset, f"cap-{how}")
        first = json.loads((styler_home / d.path / "captions.jsonl").read_text("utf-8").splitlines()[0])
        assert first["text"] == want
    # auto picks jsonl when there are no sidecars
    assert Registry().resolve(Dataset, "cap-jsonl").caption_from == "jsonl"
    run_cli("data", "add", "cap-auto", src)
    assert Registry().resolve(Dataset, "cap-auto").caption_from == "jsonl"


def test_min_sharpness_drops_blurry_images(styler_home, tmp_path):
    src = tmp_path / "src"
    make_images(src, 2)
    Image.new("RGB", (48, 40), (120, 120, 120)).save(src / "flat.png")
    r = run_cli("data", "add", "sharp", src, "--min-sharpness", "100")
    assert r.exit_code == 0
    assert "dropped 1 blurry image(s)" in r.stderr and "flat.png" in r.stderr
    assert Registry().resolve(Dataset, "sharp").n_images == 2


# ---------------------------------------------------------------------------------------- bad input


def test_src_that_does_not_exist(styler_home, tmp_path):
    before = _datasets_state(styler_home)
    r = run_cli("data", "add", "x", tmp_path / "nope")
    assert_refused(styler_home, r, 2, "does not exist")
    assert _datasets_state(styler_home) == before


def test_empty_folder(styler_home, tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_cli("data", "add", "x", tmp_path / "empty")
    assert_refused(styler_home, r, 2, "is empty")
    assert _datasets_state(styler_home) == ([], [])


def test_folder_with_no_images(styler_home, tmp_path):
    src = tmp_path / "docs"
    src.mkdir()
    (src / "notes.txt").write_text("hi")
    (src / "readme.md").write_text("hi")
    r = run_cli("data", "add", "x", src)
    assert_refused(styler_home, r, 2, "no images in", ".png", "notes.txt")
    assert _datasets_state(styler_home) == ([], [])


def _truncated_and_fake(src):
    good = make_images(src, 3)
    data = good[0].read_bytes()
    (src / "broken.png").write_bytes(data[: len(data) // 2])
    (src / "notes.jpg").write_text("this is text, not a JPEG")


def test_truncated_png_and_fake_jpg_are_skipped_with_a_warning(styler_home, tmp_path):
    src = tmp_path / "src"
    _truncated_and_fake(src)
    r = run_cli("data", "add", "mixed", src)
    assert r.exit_code == 0
    assert "skipped 2 file(s)" in r.stderr and "broken.png" in r.stderr and "notes.jpg" in r.stderr
    d = Registry().resolve(Dataset, "mixed")
    assert (d.n_images, d.n_dropped) == (3, 2)
    manifest = json.loads((styler_home / d.path / "manifest.json").read_text("utf-8"))
    assert {x["file"] for x in manifest["dropped"]} == {"broken.png", "notes.jpg"}


def test_strict_refuses_bad_files(styler_home, tmp_path):
    src = tmp_path / "src"
    _truncated_and_fake(src)
    r = run_cli("data", "add", "mixed", src, "--strict")
    assert_refused(styler_home, r, 2, "--strict", "broken.png", "notes.jpg")
    assert _datasets_state(styler_home) == ([], [])


def _png_header_only(path, width, height):
    """A tiny file whose header claims a huge image: what a decompression bomb looks like."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def test_decompression_bomb_is_skipped_without_decoding(styler_home, tmp_path):
    src = tmp_path / "src"
    make_images(src, 2)
    _png_header_only(src / "bomb.png", 30000, 30000)
    r = run_cli("data", "add", "bombed", src)
    assert r.exit_code == 0
    assert "bomb.png" in r.stderr and "decompression bomb" in r.stderr
    assert Registry().resolve(Dataset, "bombed").n_images == 2


def test_non_utf8_caption_file(styler_home, tmp_path):
    src = tmp_path / "src"
    make_images(src, 3)
    (src / "img1.txt").write_bytes("书法 永".encode("gb18030"))
    r = run_cli("data", "add", "enc", src)
    assert r.exit_code == 0
    assert "img1.png" in r.stderr and "not UTF-8" in r.stderr and "iconv" in r.stderr
    assert Registry().resolve(Dataset, "enc").n_images == 2
    r = run_cli("data", "add", "enc2", src, "--strict")
    assert_refused(styler_home, r, 2, "not UTF-8")


def test_non_utf8_metadata_file_refuses_the_import(styler_home, tmp_path):
    src = tmp_path / "src"
    make_images(src, 2, captions=False)
    (src / "metadata.jsonl").write_bytes('{"file_name": "img0.png", "text": "书法"}\n'.encode("gb18030"))
    before = _datasets_state(styler_home)
    r = run_cli("data", "add", "meta", src)
    assert_refused(styler_home, r, 2, "metadata.jsonl", "not UTF-8")
    assert _datasets_state(styler_home) == before


def test_captions_for_missing_images(styler_home, tmp_path):
    src = tmp_path / "src"
    make_images(src, 2)
    (src / "ghost.txt").write_text("a caption without an image", "utf-8")
    r = run_cli("data", "add", "orph", src)
    assert r.exit_code == 0 and "ghost.txt" in r.stderr and "not there" in r.stderr
    assert_refused(styler_home, run_cli("data", "add", "orph2", src, "--strict"), 2, "ghost.txt")


def test_images_without_captions(styler_home, tmp_path):
    src = tmp_path / "src"
    make_images(src, 2)
    make_images(src, 1, captions=False, seed=5, prefix="bare")
    r = run_cli("data", "add", "nocap", src, "--prefix", "书法")
    assert r.exit_code == 0 and "bare0.png" in r.stderr and "no caption" in r.stderr
    d = Registry().resolve(Dataset, "nocap")
    texts = [json.loads(l)["text"] for l in (styler_home / d.path / "captions.jsonl").read_text("utf-8").splitlines()]
    assert "书法" in texts  # the bare image keeps the prefix as its caption
    assert_refused(styler_home, run_cli("data", "add", "nocap2", src, "--strict"), 2, "bare0.png (no caption)")


def test_duplicate_images_are_dropped(styler_home, tmp_path):
    src = tmp_path / "src"
    paths = make_images(src, 2)
    (src / "copy.png").write_bytes(paths[1].read_bytes())
    Image.open(paths[0]).save(src / "reencoded.bmp")  # same pixels, other format
    r = run_cli("data", "add", "dups", src)
    assert r.exit_code == 0
    d = Registry().resolve(Dataset, "dups")
    assert d.n_images == 2 and d.n_dropped == 2
    assert "duplicate of" in r.stderr


@pytest.mark.parametrize("name", ["../escape", "a/b/c", "Bad Name", "", "con", "x@2"])
def test_invalid_names(styler_home, tmp_path, name):
    make_images(tmp_path / "src", 1)
    r = run_cli("data", "add", name, tmp_path / "src")
    assert_refused(styler_home, r, 2, "invalid")
    assert _datasets_state(styler_home) == ([], [])


@pytest.mark.parametrize(
    "opts, fragment",
    [(["--size", "30"], "multiple of 8"), (["--crop", "weird"], "--crop"), (["--val-split", "1.5"], "--val-split"),
     (["--caption-from", "magic"], "--caption-from"), (["--caption-from", "template"], "--template"),
     (["--caption-from", "csv"], "no metadata.csv")],
)
def test_bad_options(styler_home, tmp_path, opts, fragment):
    make_images(tmp_path / "src", 1)
    r = run_cli("data", "add", "x", tmp_path / "src", *opts)
    assert_refused(styler_home, r, 2, fragment)
    assert _datasets_state(styler_home) == ([], [])


def test_write_failure_midway_leaves_nothing(styler_home, tmp_path, monkeypatch):
    import errno

    from styler.data import importer

    make_images(tmp_path / "src", 5)
    run_cli("data", "add", "keep", tmp_path / "src")  # an existing dataset must survive untouched
    before = _datasets_state(styler_home)
    calls = {"n": 0}
    real = importer.save_image

    def failing(image, path):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(image, path)

    monkeypatch.setattr(importer, "save_image", failing)
    r = run_cli("data", "add", "full", tmp_path / "src", "--size", "32")
    assert_refused(styler_home, r, 1, "No space left on device", "nothing was registered")
    assert _datasets_state(styler_home) == before
    assert not (styler_home / "datasets" / "full").exists()


def test_failure_while_recording_removes_the_renamed_folder(styler_home, tmp_path, monkeypatch):
    make_images(tmp_path / "src", 2)
    monkeypatch.setattr(Registry, "insert", lambda self, rec: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    r = run_cli("data", "add", "late", tmp_path / "src")
    assert r.exit_code == 1 and "nothing was registered" in r.stderr
    assert tree(styler_home / "datasets") == []


def test_corrupt_registry_file_is_named_not_a_traceback(styler_home, tmp_path):
    make_images(tmp_path / "src", 1)
    assert run_cli("data", "add", "ok", tmp_path / "src").exit_code == 0
    (styler_home / "registry" / "datasets.json").write_text("{ broken")
    folders = tree(styler_home / "datasets")
    for args in (["data", "ls"], ["data", "add", "again", tmp_path / "src"], ["registry", "ls"]):
        r = run_cli(*args)
        assert_refused(styler_home, r, 1, "datasets.json", "corrupt")
    assert tree(styler_home / "datasets") == folders  # the failed add left nothing
    r = run_cli("registry", "verify")
    assert r.exit_code == 1 and "corrupt-table" in r.stdout


def test_16_bit_greyscale_pngs_keep_their_tones():
    """PIL's convert("RGB") clips 16-bit values at 255 (a gradient became 99.6 % white)."""
    import numpy as np
    from PIL import Image

    from styler.data.images import load_image

    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp())
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "g16.png")
    a = np.asarray(load_image(folder / "g16.png").image)
    assert a.shape == (64, 64, 3) and a.min() == 0 and a.max() == 255
    assert abs(a.mean() - 127.5) < 1.5 and (a == 255).mean() < 0.01
    # 32-bit "I" images holding 8-bit values stay as they are
    from styler.data.images import _to_8bit

    eight = np.asarray(_to_8bit(Image.fromarray((ramp // 257).astype(np.int32), mode="I")))
    assert eight.min() == 0 and eight.max() == 255 and abs(eight.mean() - 127.5) < 1.5
