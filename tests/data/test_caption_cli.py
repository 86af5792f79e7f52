"""`styler data caption`: a dataset captioned by a tiny random BLIP or GIT through the real CLI
becomes a new version with a caption per image (trigger and prefix by data add's rule); the
version it came from stays byte for byte as it was; bad models and modes fail in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from registry import Dataset, Registry
from tests.helpers import make_images, run_cli, tree
from tests.models.test_resolve import fake_hf_repo

pytestmark = pytest.mark.slow  # loads transformers and two tiny models


def _captions(home: Path, label: str) -> list[str]:
    d = Registry().resolve(Dataset, label)
    return [json.loads(line)["text"] for line in (home / d.path / "captions.jsonl").read_text("utf-8").splitlines()]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _uncaptioned(home, tmp_path, name="multi/anime", n=3, trigger="anistyle"):
    """A version whose images have no captions of their own (only the trigger)."""
    make_images(tmp_path / "src", n, captions=False)
    r = run_cli("data", "add", name, tmp_path / "src", "--caption-from", "txt", "--trigger", trigger)
    assert r.exit_code == 0, r.stderr
    return Registry().resolve(Dataset, name)


def test_blip_captions_every_image_into_a_new_version(styler_home, tmp_path, tiny_blip):
    v1 = _uncaptioned(styler_home, tmp_path)
    assert _captions(styler_home, "multi/anime@1") == ["anistyle"] * 3
    before = _snapshot(styler_home / v1.path)

    r = run_cli("data", "caption", "multi/anime", "--with", tiny_blip, "--prefix", "pixel art", "--max-tokens", "3",
                "--batch", "2", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert "multi/anime@2" in r.stdout and "3 of 3" in r.stdout

    # trigger first (kept from @1), then the prefix, then what the model said
    assert _captions(styler_home, "multi/anime@2") == ["anistyle, pixel art ink ink ink"] * 3
    v2 = Registry().resolve(Dataset, "multi/anime@2")
    assert (v2.caption_from, v2.trigger, v2.prefix, v2.n_images) == ("blip:tiny-blip", "anistyle", "pixel art", 3)
    manifest = json.loads((styler_home / v2.path / "manifest.json").read_text("utf-8"))
    assert manifest["options"]["derived_from"]["label"] == "multi/anime@1"
    assert manifest["missing_captions"] == []
    assert [e["text"] for e in manifest["images"]] == _captions(styler_home, "multi/anime@2")
    # same images, same hashes; the old version untouched
    old = json.loads((styler_home / v1.path / "manifest.json").read_text("utf-8"))
    assert [e["sha256"] for e in manifest["images"]] == [e["sha256"] for e in old["images"]]
    assert _snapshot(styler_home / v1.path) == before
    assert run_cli("data", "verify").exit_code == 0
    assert not any(p.name.startswith(".tmp-") for p in (styler_home / "datasets").iterdir())


def test_git_from_the_hf_cache_only_missing_and_overwrite(styler_home, tmp_path, tiny_git):
    src = tmp_path / "src"
    make_images(src, 3, captions=False)
    (src / "img1.txt").write_text("a red fox", "utf-8")  # one image has a caption, two have none
    assert run_cli("data", "add", "mix", src, "--trigger", "wcstyle").exit_code == 0
    fake_hf_repo(Path(os.environ["HF_HUB_CACHE"]), "acme/tiny-git", tiny_git)

    # neither --overwrite nor --only-missing, and some images have captions: it asks, writes nothing
    r = run_cli("data", "caption", "mix", "--with", "acme/tiny-git")
    assert r.exit_code == 2
    assert "already has captions for 1 of 3 images" in r.stderr and "--overwrite" in r.stderr and "--only-missing" in r.stderr
    assert len(Registry().versions(Dataset, "mix")) == 1

    r = run_cli("data", "caption", "mix", "--with", "acme/tiny-git", "--only-missing", "--max-tokens", "2")
    assert r.exit_code == 0, r.stderr
    assert _captions(styler_home, "mix@2") == ["wcstyle, cat cat", "wcstyle, a red fox", "wcstyle, cat cat"]
    assert Registry().resolve(Dataset, "mix@2").caption_from == "git:acme/tiny-git"

    # --overwrite from @1, with a new trigger and no prefix: every caption is the model's
    r = run_cli("data", "caption", "mix@1", "--with", "acme/tiny-git", "--overwrite", "--trigger", "pix",
                "--prefix", "pixel", "--max-tokens", "1")
    assert r.exit_code == 0, r.stderr
    # "pix" inside "pixel" is not the trigger: it still goes first
    assert _captions(styler_home, "mix@3") == ["pix, pixel cat"] * 3
    assert _captions(styler_home, "mix@1") == ["wcstyle", "wcstyle, a red fox", "wcstyle"]


def test_florence2_captions_through_its_task_prompt(styler_home, tmp_path, tiny_florence2):
    _uncaptioned(styler_home, tmp_path, name="flo", n=2, trigger="")
    r = run_cli("data", "caption", "flo", "--with", tiny_florence2, "--max-tokens", "3", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["model"] == "florence2:tiny-florence2"
    assert _captions(styler_home, "flo@2") == ["fox fox"] * 2  # the last of 3 tokens is the forced end


def test_missing_or_unusable_models_fail_in_one_line(styler_home, tmp_path, tiny_blip):
    v1 = _uncaptioned(styler_home, tmp_path)
    before = tree(styler_home / "datasets")
    cache = os.environ["HF_HUB_CACHE"]

    r = run_cli("data", "caption", "multi/anime", "--with", "Salesforce/blip-image-captioning-base")
    assert r.exit_code == 2
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1
    assert cache in line and "hf download Salesforce/blip-image-captioning-base" in line

    r = run_cli("data", "caption", "multi/anime", "--with", tmp_path / "nowhere")
    assert r.exit_code == 2 and "not found" in r.stderr

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tiny_blip / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    r = run_cli("data", "caption", "multi/anime", "--with", pickled)
    assert r.exit_code == 2 and "pickled weights (pytorch_model.bin)" in r.stderr

    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "config.json").write_text('{"model_type": "clip"}')
    r = run_cli("data", "caption", "multi/anime", "--with", clip)
    assert r.exit_code == 2 and "BLIP, GIT or Florence-2" in r.stderr

    r = run_cli("data", "caption", "multi/anime", "--with", tiny_blip, "--overwrite", "--only-missing")
    assert r.exit_code == 2 and "exclude each other" in r.stderr

    r = run_cli("data", "caption", "multi/anime", "--with", tiny_blip, "--only-missing", "--device", "cuda:7")
    assert r.exit_code == 2 and "--device cuda:7" in r.stderr

    assert tree(styler_home / "datasets") == before
    assert [d.id for d in Registry().versions(Dataset, "multi/anime")] == [v1.id]
