"""styler.train.data: items, the pixel dataset, tokenising, and the VAE latent cache."""

from __future__ import annotations

import pytest
import torch

from registry import Dataset, Registry
from styler.data.library import synth_dataset
from styler.errors import InputError, UsageError
from styler.train import data as td


@pytest.fixture
def dataset(styler_home):
    synth_dataset("test/pix", kind="pixel", n=8, size=64, val_split=0.25)
    reg = Registry()
    return reg.resolve(Dataset, "test/pix@1"), reg.home


@pytest.fixture
def pipe(tiny_home):
    from styler.models.load import load_pipeline
    from styler.models.resolve import resolve_base

    p = load_pipeline(resolve_base("tiny"))
    from styler.models.tiny import manifest

    assert p.vae.config.scaling_factor == pytest.approx(manifest()["configs"]["vae"]["scaling_factor"])
    return p


def test_items_have_captions_and_splits(dataset):
    record, home = dataset
    train = td.load_items(record, home)
    val = td.load_items(record, home, "val")
    everything = td.load_items(record, home, "all")
    assert (len(train), len(val), len(everything)) == (record.n_train, record.n_val, 8)
    assert record.n_val == 2
    assert {i.split for i in train} == {"train"} and {i.split for i in val} == {"val"}
    assert all(i.path.is_file() and i.text for i in everything)
    assert isinstance(train[0], td.Item)
    with pytest.raises(Exception):
        train[0].text = "x"  # frozen
    with pytest.raises(UsageError):
        td.load_items(record, home, "test")


def test_missing_image_names_dataset_and_verify(dataset):
    record, home = dataset
    items = td.load_items(record, home, "all")
    items[3].path.unlink()
    with pytest.raises(InputError) as err:
        td.load_items(record, home, "all")
    msg = err.value.message
    assert "test/pix@1" in msg and items[3].path.name in msg and "styler data verify test/pix@1" in msg


def test_pixels_shape_and_range(dataset):
    record, home = dataset
    ds = td.ImageCaptionDataset(td.load_items(record, home), 32, augment={"flip", "color"}, seed=1)
    x = ds[0]
    assert x["pixels"].shape == (3, 32, 32) and x["pixels"].dtype == torch.float32
    assert -1.0 <= x["pixels"].min() and x["pixels"].max() <= 1.0
    assert x["text"] == ds.items[0].text and x["index"] == 0
    with pytest.raises(UsageError):
        td.ImageCaptionDataset(ds.items, 32, augment={"rotate"})


def test_flip_is_reproducible_per_seed_and_epoch(dataset):
    record, home = dataset
    items = td.load_items(record, home)
    plain = td.ImageCaptionDataset(items, 32)
    a, b = td.ImageCaptionDataset(items, 32, {"flip"}, seed=3), td.ImageCaptionDataset(items, 32, {"flip"}, seed=3)

    def flips(ds, epoch):
        ds.set_epoch(epoch)
        out = []
        for i in range(len(ds)):
            p, q = ds[i]["pixels"], plain[i]["pixels"]
            assert torch.equal(p, q) or torch.equal(p, q.flip(-1))
            out.append(not torch.equal(p, q))
        return out

    pattern = [flips(a, e) for e in range(4)]
    assert pattern == [flips(b, e) for e in range(4)]  # same seed, same flips
    flat = sum(pattern, [])
    assert any(flat) and not all(flat)
    assert len({tuple(p) for p in pattern}) > 1  # epochs differ


def test_crop_varies_by_epoch_center_does_not(dataset):
    record, home = dataset
    items = td.load_items(record, home)
    center, crop = td.ImageCaptionDataset(items, 32), td.ImageCaptionDataset(items, 32, {"crop"})
    c0, r0 = center[0]["pixels"], crop[0]["pixels"]
    center.set_epoch(1), crop.set_epoch(1)
    assert torch.equal(c0, center[0]["pixels"])
    crops = [r0]
    for e in range(1, 4):
        crop.set_epoch(e)
        crops.append(crop[0]["pixels"])
    assert any(not torch.equal(crops[0], c) for c in crops[1:])
    crop.set_epoch(0)
    assert torch.equal(crop[0]["pixels"], r0)


@pytest.mark.slow
def test_tokenize_and_truncation_report(pipe):
    tok = pipe.tokenizer
    long = " ".join(f"word{i}" for i in range(100))
    ids = td.tokenize(tok, ["书法 永", long])
    assert ids.shape == (2, 77) and ids.dtype == torch.long
    report = td.truncated_prompts(tok, ["书法 永", long, long])
    assert len(report) == 1 and report[0][0] == long
    assert report[0][1] and long.endswith(report[0][1]) and "word99" in report[0][1]


def _build(pipe, items, tmp_path, key=None, flip=True):
    return td.LatentCache.build(pipe.vae, items, 64, flip=flip, cache_dir=tmp_path / "cache",
                                key=key or {"dataset": "abc", "base": "def", "resolution": 64, "crop": "center", "flip": flip},
                                batch_size=3)


@pytest.mark.slow
def test_latent_cache_matches_vae_and_is_reused(dataset, pipe, tmp_path, monkeypatch):
    record, home = dataset
    items = td.load_items(record, home)
    calls = []
    cache = td.LatentCache.build(pipe.vae, items, 64, flip=True, cache_dir=tmp_path / "cache",
                                 key={"dataset": record.content_hash}, batch_size=4,
                                 progress=lambda d, t: calls.append((d, t)))
    assert cache.status == "built" and cache.path.is_file() and calls[-1] == (6, 6)
    lat = cache.latents([0, 2, 5], torch.Generator().manual_seed(0), [False, True, False])
    assert lat.shape == (3, 4, 8, 8)

    pixels = td.ImageCaptionDataset(items, 64)
    with torch.no_grad():
        x = torch.stack([pixels[2]["pixels"], pixels[2]["pixels"].flip(-1)])
        want = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
    got = cache.latents([2, 2], flips=[False, True], noise=False)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # sampled latents scatter around the means by the cached std
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(cache.latents([2], g1), cache.latents([2], g2))
    assert not torch.equal(cache.latents([2]), got[:1])

    def fail(*a, **k):
        raise AssertionError("encoded again")

    monkeypatch.setattr(pipe.vae, "encode", fail)
    again = td.LatentCache.build(pipe.vae, items, 64, flip=True, cache_dir=tmp_path / "cache",
                                 key={"dataset": record.content_hash})
    assert again.status == "reused" and again.path == cache.path
    assert torch.equal(again.mean, cache.mean) and torch.equal(again.std, cache.std)


@pytest.mark.slow
def test_latent_cache_key_and_corruption(dataset, pipe, tmp_path):
    record, home = dataset
    items = td.load_items(record, home)[:2]
    a = _build(pipe, items, tmp_path)
    b = _build(pipe, items, tmp_path, key={"dataset": "other"})
    c = _build(pipe, items, tmp_path, flip=False)
    assert len({a.path, b.path, c.path}) == 3
    assert c.mean.shape == (2, 1, 4, 8, 8) and a.mean.shape == (2, 2, 4, 8, 8)
    with pytest.raises(ValueError):
        c.latents([0], flips=[True])

    a.path.write_bytes(a.path.read_bytes()[:100])  # truncated
    d = _build(pipe, items, tmp_path)
    assert d.status == "rebuilt" and torch.allclose(d.mean, a.mean)
    assert _build(pipe, items, tmp_path).status == "reused"
    assert not [p for p in a.path.parent.iterdir() if p.suffix == ".tmp"]


def test_check_cache_compatible():
    td.check_cache_compatible({"flip"}, True)
    td.check_cache_compatible({"crop", "color"}, False)
    with pytest.raises(UsageError) as err:
        td.check_cache_compatible(["crop", "color"], True)
    assert err.value.message == ("--augment crop/color changes pixels every epoch, so latents can't be cached; "
                                 "add --no-cache-latents")
    with pytest.raises(UsageError, match="--augment color changes"):
        td.check_cache_compatible({"color"}, True)
