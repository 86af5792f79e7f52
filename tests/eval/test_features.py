"""CLIP resolution, the toy CLIP, embeddings and their per-model cache."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from styler.errors import InputError, ModelNotFound, UsageError
from styler.eval import features as F


@pytest.fixture(scope="session")
def tiny_clips(tmp_path_factory):
    """Two tiny CLIPs built once: the shipped pretrained one (what `tiny` builds) and one with
    random weights from seed 1 (a different model)."""
    root = tmp_path_factory.mktemp("clip")
    return F.build_tiny_clip(root / "shipped"), F.build_tiny_clip(root / "seed1", seed=1)


@pytest.fixture
def clip_home(styler_home, tiny_clips):
    """A home whose models/clip-tiny is the session's prebuilt toy CLIP (linked, not rebuilt)."""
    target = F.tiny_clip_dir(styler_home)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(tiny_clips[0], target)
    return styler_home


@pytest.fixture(scope="session")
def synth_images(tmp_path_factory):
    from styler.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth") / "pixel"
    synthesize("pixel", out, n=6, size=64, seed=0, font="")
    return sorted(out.glob("*.png"))


def _ref(folder, name="t"):
    return F.ClipRef(name, "folder", folder, F.clip_hash(folder), meaningful=False)


# ---------------------------------------------------------------- the toy CLIP and resolving


def test_tiny_clip_is_deterministic_and_loads(tmp_path, tiny_clips, styler_home):
    again = F.build_tiny_clip(tmp_path / "again")
    assert F.clip_hash(again) == F.clip_hash(tiny_clips[0])
    assert (again / "model.safetensors").read_bytes() == (tiny_clips[0] / "model.safetensors").read_bytes()
    assert F.clip_hash(tiny_clips[1]) != F.clip_hash(tiny_clips[0])

    ref = F.resolve_clip("tiny")  # built on first use inside the home
    assert ref.kind == "tiny" and ref.meaningful is True and ref.world is True
    assert ref.note == F.WORLD_NOTE and "not with published CLIP scores" in ref.note
    assert ref.path == F.tiny_clip_dir(styler_home) and ref.hash == F.clip_hash(tiny_clips[0])
    feats = F.ClipFeatures.open(ref)
    assert feats.settings["crop"] == (64, 64)
    assert feats.text_embeddings(["a cat"]).shape == (1, 64)


def test_nothing_configured_names_the_ways_out(styler_home, monkeypatch):
    monkeypatch.delenv(F.ENV_CLIP, raising=False)
    with pytest.raises(ModelNotFound) as exc:
        F.resolve_clip()
    msg = exc.value.message
    assert msg.startswith("no CLIP model configured for evaluation")
    assert "--clip openai/clip-vit-large-patch14" in msg and "--clip tiny" in msg
    assert str(styler_home / "config.toml") in msg and "\n" not in msg


def test_order_argument_env_settings(clip_home, tiny_clips, monkeypatch):
    from styler.config import Settings, save_settings

    save_settings(Settings(clip=str(tiny_clips[1])))
    assert F.resolve_clip().path == tiny_clips[1]
    monkeypatch.setenv(F.ENV_CLIP, "tiny")
    assert F.resolve_clip().kind == "tiny"
    ref = F.resolve_clip(str(tiny_clips[1]))
    assert ref.kind == "folder" and ref.path == tiny_clips[1]
    assert ref.meaningful is False  # a toy build is never meaningful, wherever it lives


def test_unknown_repo_and_missing_folder(styler_home):
    with pytest.raises(ModelNotFound, match="not in the local Hugging Face cache"):
        F.resolve_clip("openai/clip-vit-large-patch14")
    with pytest.raises(ModelNotFound, match="not found"):
        F.resolve_clip("./no/such/clip/folder")


def test_repo_id_found_in_hf_cache(styler_home, tiny_clips, tmp_path):
    repo = tmp_path / "hf-cache" / "models--acme--clip-small"
    snap = repo / "snapshots" / "abc123"
    shutil.copytree(tiny_clips[0], snap)
    (snap / F.TINY_MARKER).unlink()  # looks like a real model now
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    ref = F.resolve_clip("acme/clip-small")
    assert (ref.kind, ref.name, ref.path, ref.meaningful) == ("hf", "acme/clip-small", snap, True)
    assert ref.hash == F.clip_hash(tiny_clips[0])  # same config + weights, same identity


def test_pickle_only_and_non_clip_folders_are_refused(styler_home, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(UsageError) as exc:
        F.resolve_clip(str(folder))
    assert "pytorch_model.bin" in exc.value.message and "unpickle" in exc.value.message
    assert "\n" not in exc.value.message

    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelNotFound, match="not a CLIP model"):
        F.resolve_clip(str(other))
    with pytest.raises(ModelNotFound, match="no config.json"):
        F.resolve_clip(str(tmp_path))


# ---------------------------------------------------------------- embeddings


def test_preprocess_resizes_shorter_side_and_center_crops(tiny_clips):
    import numpy as np
    from PIL import Image

    settings = {"resize": 64, "crop": (64, 64), "mean": F.CLIP_MEAN, "std": F.CLIP_STD}
    wide = Image.fromarray(np.full((50, 200, 3), 255, np.uint8))
    arr = F.preprocess(wide, settings)
    assert arr.shape == (3, 64, 64) and arr.dtype == np.float32
    expected = (1.0 - np.array(F.CLIP_MEAN)) / np.array(F.CLIP_STD)
    assert np.allclose(arr[:, 32, 32], expected, atol=1e-5)


def test_embeddings_normalised_and_deterministic(styler_home, tiny_clips, synth_images):
    import torch
    from PIL import Image

    feats = F.ClipFeatures.open(_ref(tiny_clips[0]), batch_size=4)  # several batches
    a = feats.image_embeddings(synth_images)
    assert a.shape == (6, 64)
    assert torch.allclose(a.norm(dim=-1), torch.ones(6), atol=1e-5)
    b = F.ClipFeatures.open(_ref(tiny_clips[0])).image_embeddings([Image.open(p) for p in synth_images])
    assert torch.allclose(a, b, atol=1e-6)  # paths and PIL images, any batch size: same numbers

    t = feats.text_embeddings(["pixel art", "书法 永", "a very long prompt " * 60])
    assert t.shape == (3, 64)
    assert torch.allclose(t.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert feats.image_embeddings([]).shape == (0, 64)


def test_cache_serves_repeats_without_the_model(styler_home, tiny_clips, synth_images, monkeypatch):
    import torch

    feats = F.ClipFeatures.open(_ref(tiny_clips[0]))
    keys = [f"k{i}" for i in range(len(synth_images))]
    first = feats.image_embeddings(synth_images[:4], keys=keys[:4])
    assert (feats.cache_dir / "index.json").is_file()
    assert feats.cache_dir.name == feats.ref.hash[:16]

    real = feats._encode_images
    seen = []

    def watch(pixels):
        seen.append(pixels.shape[0])
        return real(pixels)

    monkeypatch.setattr(feats, "_encode_images", watch)
    again = feats.image_embeddings(synth_images[:4], keys=keys[:4])
    assert seen == [] and torch.equal(first, again)
    # a mix: only the two new keys reach the model (and a repeated key is computed once)
    mixed = feats.image_embeddings(synth_images + synth_images[5:], keys=keys + keys[5:])
    assert seen == [2] and mixed.shape == (7, 64)
    assert torch.allclose(mixed[:4], first) and torch.equal(mixed[5], mixed[6])
    # a fresh ClipFeatures (another process, say) reads the same cache
    fresh = F.ClipFeatures.open(feats.ref)
    monkeypatch.setattr(fresh, "_encode_images", lambda pixels: pytest.fail("should come from the cache"))
    assert torch.allclose(fresh.image_embeddings(synth_images, keys=keys), mixed[:6])


def test_cache_is_keyed_by_model(styler_home, tiny_clips, synth_images, monkeypatch):
    import torch

    one = F.ClipFeatures.open(_ref(tiny_clips[0]))
    two = F.ClipFeatures.open(_ref(tiny_clips[1]))
    keys = ["same-bytes-1", "same-bytes-2"]
    a = one.image_embeddings(synth_images[:2], keys=keys)
    calls = []
    real = two._encode_images
    monkeypatch.setattr(two, "_encode_images", lambda px: calls.append(1) or real(px))
    b = two.image_embeddings(synth_images[:2], keys=keys)
    assert calls == [1]  # the other model's cached rows were not reused
    assert one.cache_dir != two.cache_dir
    assert not torch.allclose(a, b, atol=1e-3)


def test_nan_features_are_an_input_error_and_not_cached(styler_home, tiny_clips, synth_images, monkeypatch):
    feats = F.ClipFeatures.open(_ref(tiny_clips[0]))
    real = feats._encode_images

    def broken(pixels):
        out = real(pixels).clone()
        out[1] = float("nan")
        return out

    monkeypatch.setattr(feats, "_encode_images", broken)
    with pytest.raises(InputError) as exc:
        feats.image_embeddings(synth_images[:3], keys=["a", "b", "c"])
    assert "CLIP features contain NaN for 1 image(s)" in exc.value.message
    assert "the model or the images are broken" in exc.value.message
    assert not (feats.cache_dir / "index.json").exists()
    with pytest.raises(InputError, match="NaN"):
        feats.image_embeddings(synth_images[:3])


def test_unreadable_image_is_an_input_error(styler_home, tiny_clips, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    feats = F.ClipFeatures.open(_ref(tiny_clips[0]))
    with pytest.raises(InputError, match="cannot read image"):
        feats.image_embeddings([bad])
    with pytest.raises(UsageError, match="cache keys"):
        feats.image_embeddings([bad], keys=["a", "b"])


def test_an_earlier_tiny_clip_is_retired_when_the_new_one_is_built(styler_home):
    old = styler_home / "models" / "clip-tiny" / "1"
    old.mkdir(parents=True)
    (old / F.TINY_MARKER).write_text('{"name": "clip-tiny", "version": "1"}')
    (old / "config.json").write_text("{}")
    ref = F.resolve_clip("tiny")
    assert ref.path.name == F.TINY_CLIP_VERSION and not old.exists()
