"""Aspect-ratio buckets: the bucket list and choice (as kohya sd-scripts makes them), --no-upscale,
single-bucket batches, the latent cache per bucket, and bad bucket options."""

from __future__ import annotations

import json
import random
import tomllib

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from registry import Dataset, Registry, Run
from styler.errors import InputError
from styler.train import buckets as bk
from tests.helpers import run_cli, tree

# kohya-ss/sd-scripts at 48d368fa557731ad0488c07304dfeba8c07910eb, library/model_util.py
# make_bucket_resolutions((512, 512), 256, 1024, 64): the list kohya users see for SD-1.5 at 512
# (printed by running kohya's own function; a scratch script that imported kohya's train_util compared
# BucketManager.select_bucket with choose_bucket on 2,856 image sizes in both modes at six budgets/steps
# and found no difference wherever kohya gives a bucket with no side of 0)
KOHYA_512 = [(256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640), (448, 576),
             (512, 512), (576, 448), (640, 384), (704, 320), (768, 320), (832, 256), (896, 256), (960, 256),
             (1024, 256)]


def _spec(resolution=512, step=64, no_upscale=False, **kw):
    return bk.resolve_spec(resolution, step=step, min_side=kw.get("min_side"), max_side=kw.get("max_side"),
                           no_upscale=no_upscale, vae_scale=8, default_step=step)


def test_bucket_list_and_choice_are_kohyas():
    spec = _spec()
    assert (spec.min_side, spec.max_side) == (256, 1024)  # kohya's defaults at 512
    assert bk.bucket_sizes(spec) == KOHYA_512
    assert all(w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0 for w, h in KOHYA_512)
    # nearest aspect ratio; kohya's BucketManager.select_bucket gives the same for these
    assert bk.choose_bucket(768, 512, spec) == (640, 384)
    assert bk.choose_bucket(512, 768, spec) == (384, 640)
    assert bk.choose_bucket(3000, 1000, spec) == (832, 256)
    assert bk.choose_bucket(640, 384, spec) == (640, 384)  # an image of a bucket's own size stays
    # --no-upscale at 1024 (kohya: scaled to 512×1951, then cropped to steps)
    assert bk.choose_bucket(529, 2016, _spec(1024, no_upscale=True)) == (512, 1920)
    # the step a base wants: VAE factor × UNet downsampling
    assert bk.base_step(8, 4) == 64 and bk.base_step(8, 3) == 32


def test_no_upscale_never_enlarges_and_crops_only_to_the_bucket():
    from styler.train.data import resize_crop

    rng = random.Random(0)
    for resolution, step in ((512, 64), (128, 32), (64, 32)):
        spec = _spec(resolution, step, no_upscale=True)
        for _ in range(400):
            w, h = rng.randint(step, 2500), rng.randint(step, 2500)
            bw, bh = bk.choose_bucket(w, h, spec)
            assert bw % step == 0 and bh % step == 0 and bw * bh <= max(spec.budget, step * step)
            assert bw <= w and bh <= h, (w, h, bw, bh)  # covering the bucket needs no enlarging
            assert max(bw / w, bh / h) <= 1.0
    with_scaling = _spec(128, 32)
    assert bk.choose_bucket(96, 64, with_scaling) == (160, 96)  # enlarged to fill the budget
    assert bk.choose_bucket(96, 64, _spec(128, 32, no_upscale=True)) == (96, 64)  # kept as it is
    # the resize that fills a bucket cuts only the side that overshoots
    im = Image.fromarray(np.zeros((100, 300, 3), np.uint8))
    assert resize_crop(im, (256, 64)).size == (256, 64)
    with pytest.raises(InputError) as err:
        bk.choose_bucket(24, 200, _spec(128, 32, no_upscale=True))
    assert "24×200" in err.value.message and "drop --no-upscale" in err.value.message


def test_batches_hold_one_bucket_and_every_image_comes_each_epoch():
    sizes = [(64, 64)] * 5 + [(96, 32)] * 2 + [(32, 96)]
    stream = bk.BucketStream(seed=3, assigned=sizes, batch=2)
    assert stream.batches_per_epoch == 3 + 1 + 1 and stream.epoch_len == 10
    orders = []
    for epoch in range(4):
        positions = stream.indices(epoch * stream.epoch_len, stream.epoch_len)
        assert {e for e, _ in positions} == {epoch}
        batches = [[i for _, i in positions[k:k + 2]] for k in range(0, len(positions), 2)]
        assert all(len({sizes[i] for i in b}) == 1 for b in batches)
        assert {i for b in batches for i in b} == set(range(len(sizes)))
        orders.append([i for _, i in positions])
    assert len({tuple(o) for o in orders}) == 4  # reshuffled every epoch
    again = bk.BucketStream(seed=3, assigned=sizes, batch=2)
    assert [again.indices(p, 1)[0] for p in range(25, 7, -1)] == [stream.indices(p, 1)[0] for p in range(25, 7, -1)]
    assert bk.BucketStream(seed=4, assigned=sizes, batch=2).indices(0, 40) != stream.indices(0, 40)


def _shapes_folder(folder, sizes, captions=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
        (folder / f"im{i}.txt").write_text(captions[i] if captions else f"ink, tag{i}, paper", encoding="utf-8")
    return folder


SHAPES = [(96, 64), (64, 96), (64, 64)]


@pytest.mark.slow
def test_non_square_images_get_their_buckets_and_no_upscale_keeps_their_size(tiny_home, tmp_path):
    from styler.train.config import build_config
    from styler.train.plan import make_plan

    r = run_cli("data", "add", "shapes", _shapes_folder(tmp_path / "src", SHAPES), "--buckets")
    assert r.exit_code == 0, r.stderr
    assert "styler train shapes --buckets" in r.stderr
    r = run_cli("train", "shapes", "--base", "tiny", "--buckets", "--resolution", "128", "--dry-run")
    assert r.exit_code == 0, r.stderr
    lines = [line.strip() for line in r.stdout.splitlines()]
    assert "buckets within 128² px, steps of 32, sides 64–256 (width×height → images):" in lines
    assert {"96×160   → 1", "128×128   → 1", "160×96    → 1"} <= set(lines)  # each enlarged to fill the budget
    plan = make_plan(build_config(dataset="shapes", base="tiny", buckets=True, resolution=128, no_upscale=True),
                     Registry(), check_device=False)
    assert plan.as_dict()["buckets"] == [{"width": 64, "height": 64, "images": 1}, {"width": 64, "height": 96, "images": 1},
                                         {"width": 96, "height": 64, "images": 1}]  # each kept at its own size
    # the tiny UNet downsamples latents 4×: steps of 8 × 4, sides resolution/2 .. resolution×2, pinned
    assert (plan.cfg.bucket_reso_steps, plan.cfg.min_bucket_reso, plan.cfg.max_bucket_reso) == (32, 64, 256)
    # a whole optimizer step is one bucket, so batch 1 × accum 2 sees what batch 2 sees
    two, accum = (make_plan(build_config(dataset="shapes", base="tiny", buckets=True, **kw), Registry(),
                            check_device=False) for kw in ({"batch": 2}, {"batch": 1, "accum": 2}))
    assert two.stream.indices(0, 24) == accum.stream.indices(0, 24)
    steps = [two.stream.indices(p, 2) for p in range(0, 24, 2)]
    assert all(len({two.train_sizes[i] for _, i in s}) == 1 for s in steps)
    assert Registry().all(Run) == []


@pytest.mark.slow
def test_bucketed_training_caches_latents_per_bucket_and_its_config_reruns_it(tiny_home, tmp_path, monkeypatch):
    from styler.train import trainer as tr

    sizes = [(96, 64), (96, 64), (64, 96), (64, 64)]
    run_cli("data", "add", "shapes", _shapes_folder(tmp_path / "src", sizes), "--buckets")
    seen = []  # (latent shape, captions) of every forward pass
    real = tr.Trainer._diffusion_loss

    def spy(self, latents, texts, gens, reduce=True):
        seen.append((tuple(latents.shape), list(texts)))
        return real(self, latents, texts, gens, reduce)

    monkeypatch.setattr(tr.Trainer, "_diffusion_loss", spy)
    args = ["--base", "tiny", "--buckets", "--resolution", "128", "--steps", "3", "--batch", "2", "--rank", "2",
            "--lr", "1e-3", "--shuffle-caption", "--keep-tokens", "1", "--caption-dropout", "0.2"]
    r = run_cli("train", "shapes", *args)
    assert r.exit_code == 0, r.stderr
    assert "160×96" in r.stderr and "latents of 3 bucket(s): 3 built" in r.stderr
    # one bucket per batch: latents are 2×4×H/8×W/8 of a bucket, never a mix
    assert {s for s, _ in seen} <= {(2, 4, 12, 20), (2, 4, 20, 12), (2, 4, 16, 16)}
    assert len({s for s, _ in seen}) >= 2
    assert all(t == "" or t.startswith("ink, ") for _, texts in seen for t in texts)

    cache_dir = tiny_home / "cache" / "latents"
    files = sorted(cache_dir.glob("*.safetensors"))
    assert len(files) == 3
    found = {}
    for f in files:
        with safe_open(str(f), "pt") as fh:
            key = json.loads(fh.metadata()["styler_latent_cache"])
            found[tuple(key["cache"]["bucket"])] = tuple(fh.get_tensor("mean").shape)
    assert found == {(160, 96): (2, 1, 4, 12, 20), (96, 160): (1, 1, 4, 20, 12), (128, 128): (1, 1, 4, 16, 16)}
    stamps = {f: f.stat().st_mtime_ns for f in files}

    run = Registry().all(Run)[0]
    saved = tomllib.loads((tiny_home / "runs" / run.id / "config.toml").read_text("utf-8"))
    assert {k: saved[k] for k in ("buckets", "no_upscale", "bucket_reso_steps", "min_bucket_reso", "max_bucket_reso",
                                  "shuffle_caption", "keep_tokens", "caption_dropout")} == {
        "buckets": True, "no_upscale": False, "bucket_reso_steps": 32, "min_bucket_reso": 64, "max_bucket_reso": 256,
        "shuffle_caption": True, "keep_tokens": 1, "caption_dropout": 0.2}
    first = list(seen)
    seen.clear()
    r = run_cli("train", "--config", tiny_home / "runs" / run.id / "config.toml", "--name", "again")
    assert r.exit_code == 0, r.stderr
    assert "latents of 3 bucket(s): 3 reused" in r.stderr
    assert {f: f.stat().st_mtime_ns for f in sorted(cache_dir.glob("*.safetensors"))} == stamps
    assert seen == first  # same buckets, same shuffled and dropped captions, step by step
    # the uncached path loads bucket-sized pixels in a worker and encodes them every step: the same
    # latents as the cache's, so the same losses
    r = run_cli("train", "shapes", *args, "--no-cache-latents", "--loader-workers", "1", "--name", "loaded")
    assert r.exit_code == 0, r.stderr
    assert seen[len(first):] == first
    losses = {r_.config["name"]: [json.loads(x)["loss"] for x in (tiny_home / "runs" / r_.id / "metrics.jsonl")
                                  .read_text().splitlines()] for r_ in Registry().all(Run)}
    assert losses["again"] == losses[""]
    assert losses["loaded"] == pytest.approx(losses[""], rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("args, fragment", [
    (["--bucket-reso-steps", "4"], "--bucket-reso-steps 4 must be a multiple of 8"),
    (["--min-bucket-reso", "40"], "--min-bucket-reso 40 must be a multiple of --bucket-reso-steps 32"),
    (["--max-bucket-reso", "32"], "--max-bucket-reso 32 is smaller than --resolution 64"),
    (["--bucket-reso-steps", "128"], "use --resolution 128 or more"),
    (["--keep-tokens", "-1"], "--keep-tokens must be >= 0"),
    (["--caption-dropout", "1.5"], "--caption-dropout must be between 0 and 1"),
    (["--caption-dropout", "-0.1"], "--caption-dropout must be between 0 and 1"),
])
def test_bad_bucket_and_caption_options(tiny_home, tmp_path, args, fragment):
    run_cli("data", "add", "shapes", _shapes_folder(tmp_path / "src", SHAPES), "--buckets")
    before = tree(tiny_home / "runs")
    r = run_cli("train", "shapes", "--base", "tiny", "--buckets", "--steps", "1", *args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("error:") and fragment in r.stderr and "\n" not in r.stderr.strip()
    assert Registry().all(Run) == [] and tree(tiny_home / "runs") == before


@pytest.mark.slow
def test_buckets_refuse_cropped_datasets_tiny_images_and_strays(tiny_home, tmp_path):
    src = _shapes_folder(tmp_path / "src", SHAPES)
    run_cli("data", "add", "square", src, "--size", "64")  # center-cropped: the shapes are gone
    r = run_cli("train", "square", "--base", "tiny", "--buckets", "--steps", "1")
    assert r.exit_code == 2 and "center-cropped to 64×64" in r.stderr and "--buckets" in r.stderr
    assert "\n" not in r.stderr.strip()
    thin = _shapes_folder(tmp_path / "thin", [(24, 96), (64, 64)])
    run_cli("data", "add", "thin", thin, "--buckets")
    r = run_cli("train", "thin", "--base", "tiny", "--buckets", "--no-upscale", "--steps", "1")
    assert r.exit_code == 2 and "24×96" in r.stderr and "drop --no-upscale" in r.stderr
    r = run_cli("train", "thin", "--base", "tiny", "--no-upscale", "--steps", "1")
    assert r.exit_code == 2 and "--no-upscale only applies to --buckets" in r.stderr
    assert Registry().all(Run) == []


def test_data_add_buckets_keeps_pictures_whole_and_bounds_their_area(styler_home, tmp_path):
    src = _shapes_folder(tmp_path / "src", [(300, 100), (60, 90), (128, 128)])
    r = run_cli("data", "add", "whole", src, "--buckets", "--size", "128")
    assert r.exit_code == 0, r.stderr
    assert "center-cropped" not in r.stderr and "upscaled" not in r.stderr
    reg = Registry()
    d = reg.resolve(Dataset, "whole")
    manifest = json.loads((reg.home / d.path / "manifest.json").read_text("utf-8"))
    got = {e["source"]: (e["width"], e["height"]) for e in manifest["images"]}
    w, h = got["im0.png"]
    assert w * h <= 128 * 128 and abs(w / h - 3) < 0.05  # scaled down, shape kept
    assert got["im1.png"] == (60, 90) and got["im2.png"] == (128, 128)  # never enlarged
    assert (reg.home / d.path / "images" / "00002.png").read_bytes() == (src / "im1.png").read_bytes()
    assert d.options["buckets"] is True
