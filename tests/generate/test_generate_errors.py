"""Failures that used to surface as `unexpected …` or left records behind: --out a file or an
unwritable folder, a damaged adapter blob, a regen recipe with missing fields or another base."""

from __future__ import annotations

import json

import pytest
from PIL import Image, PngImagePlugin

from registry import Adapter, BlobStore, Output, Registry
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline

FAST = ["--steps", "2", "--seed", "1"]


def one_line(r):
    return len(r.stderr.strip().splitlines()) == 1 and "unexpected" not in r.stderr


def test_out_must_be_a_folder(styled, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    for args in (["generate", "a cat"], ["mix", "anime=0.5", "ink=0.5", "a cat", "--sweep", "anime:ink"],
                 ["grid", "a cat", "--x", "seed=1,2"]):
        r = run_cli(*args, *FAST, "--out", f)
        assert r.exit_code == 2 and one_line(r), r.stderr
        assert f"--out {f} is a file; give a folder" in r.stderr
        r = run_cli(*args, *FAST, "--out", f / "sub")
        assert r.exit_code == 2 and "is a file, so the folder can't be made there" in r.stderr
    assert Registry().all(Output) == []


def test_a_failed_png_write_leaves_no_output_record(styled, tmp_path, monkeypatch):
    import styler.files
    from styler.errors import WriteError

    def fail(path, data, error=None):
        raise WriteError(f"{error}: No space left on device")

    monkeypatch.setattr(styler.files, "write_bytes_atomic", fail)
    r = run_cli("generate", "a cat", *FAST, "--out", tmp_path / "out")
    assert r.exit_code == 1 and one_line(r)
    assert "cannot write the PNG into --out" in r.stderr and "No space left" in r.stderr
    assert Registry().all(Output) == []


def test_a_damaged_adapter_blob_is_refused(styled):
    path = BlobStore(styled).path(Registry().resolve(Adapter, "anime").blob)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    r = run_cli("generate", "a cat", "--adapter", "anime=1", *FAST)
    assert r.exit_code == 2 and one_line(r)
    assert "the file of adapter anime@1 is missing or damaged" in r.stderr and "styler registry verify" in r.stderr
    assert Registry().all(Output) == []


def _png_with_recipe(path, recipe):
    info = PngImagePlugin.PngInfo()
    info.add_text("styler", json.dumps(recipe))
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    return path


def test_regen_names_missing_recipe_fields_and_another_base(styled, tmp_path):
    r = run_cli("generate", "a cat", *FAST, "--out", tmp_path, "--json")
    oid = json.loads(r.stdout)["outputs"][0]["id"]
    recipe = json.loads(Image.open(tmp_path / f"{oid}.png").info["styler"])
    broken = {k: v for k, v in recipe.items() if k not in ("prompt", "steps")}
    r = run_cli("regen", _png_with_recipe(tmp_path / "broken.png", broken))
    assert r.exit_code == 2 and one_line(r) and "its styler recipe lacks prompt, steps" in r.stderr
    other = {**recipe, "id": None, "base": {**recipe["base"], "hash": "0" * 64}}
    r = run_cli("regen", _png_with_recipe(tmp_path / "other.png", other))
    assert r.exit_code == 2 and one_line(r)
    assert "the image was made with base 'tiny' (sha256 000000000000…), but the base here is 'tiny'" in r.stderr
    assert len(Registry().all(Output)) == 1


def test_out_of_bounds_settings_are_refused(styled):
    for args, fragment in ((["--guidance", "nan"], "--guidance nan must be a finite number"),
                           (["--guidance", "inf"], "--guidance inf must be a finite number"),
                           (["--steps", "5000"], "--steps 5000 is more than the 1000"),
                           (["--size", "1024"], "--size 1024x1024 is beyond what this base supports (at most 256 per side")):
        r = run_cli("generate", "a cat", "--seed", "1", *(["--steps", "2"] if "--steps" not in args else []), *args)
        assert r.exit_code == 2 and one_line(r), (args, r.stderr)
        assert fragment in r.stderr, r.stderr
    assert Registry().all(Output) == []
