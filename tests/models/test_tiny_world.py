"""The built-in world: its scenes and styles, the shipped weights (by hash), the pretraining code,
and how homes of the random-weights tiny move to the pretrained one."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from styler.data.synth import world
from styler.models import tiny


def test_world_is_deterministic_and_captioned():
    a, scenes = world.batch(6, "watercolor", seed=5)
    b, again = world.batch(6, "watercolor", seed=5)
    assert a.dtype == np.uint8 and a.shape == (6, 64, 64, 3)
    assert np.array_equal(a, b) and scenes == again
    assert not np.array_equal(a, world.batch(6, "watercolor", seed=6)[0])
    s = scenes[0]
    assert s.colour != s.background
    assert world.caption(s, "pixel", "pxl") == f"{s.caption()}, pixel art, pxl"  # the trigger last: see caption()
    assert world.caption(s, "plain") == s.caption()
    assert world.Scene("circle", "orange", "blue", .5, .5, .2).caption() == "an orange circle on a blue background"


def test_a_world_dataset_carries_its_trigger_once_at_the_end(styler_home):
    """The importer puts a trigger in front unless the caption has it; a world dataset's captions
    have it at the end, so it stays there (and is not added twice)."""
    from registry import Dataset, Registry
    from styler.data.library import dataset_view, synth_dataset

    synth_dataset("w/pix", kind="world-pixel", n=3, size=32, trigger="pxl")
    texts = [x["text"] for x in dataset_view("w/pix", samples=3)["samples"]]
    assert len(texts) == 3
    for t in texts:
        assert t.endswith(", pixel art, pxl") and t.count("pxl") == 1, t
    assert Registry().resolve(Dataset, "w/pix").trigger == "pxl"
    synth_dataset("leg/pix", kind="pixel", n=2, size=32, trigger="pxl")  # the other kinds: kohya's order
    assert all(x["text"].startswith("pxl, ") for x in dataset_view("leg/pix", samples=2)["samples"])


def test_each_style_draws_the_same_scene_differently():
    scene = world.Scene("square", "red", "blue", 0.5, 0.5, 0.25)
    images = {st: world.render(scene, st).astype(float) for st in world.STYLES}
    for i, x in enumerate(world.STYLES):
        for y in world.STYLES[i + 1:]:
            assert np.abs(images[x] - images[y]).mean() > 8, (x, y)
    # the content survives every style: inside the shape reads red (at least where the brush went),
    # outside reads blue
    inside = world.sdf(scene, 64) < 0
    for st, img in images.items():
        redness = img[..., 0] - img[..., 2]
        assert np.percentile(redness[inside], 75) > np.median(redness[~inside]) + 40, st
    with pytest.raises(ValueError, match="unknown world style"):
        world.render(scene, "cubism")


def test_shipped_weights_match_their_manifest_and_fit_the_budget():
    m = tiny.manifest()
    assert set(m["files"]) == {"clip", "vae", "unet"}
    total = 0
    for entry in m["files"].values():
        data = (tiny.WEIGHTS / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        total += len(data)
    assert total <= 25 * 2 ** 20
    assert m["configs"]["unet"]["block_out_channels"] == list(tiny.UNET_CONFIG["block_out_channels"])
    # and were trained on the world the code draws today: a change to any style's pixels or words
    # fails here until the weights are retrained (pretrain --reuse then retrains what it must)
    from styler.models.pretrain import world_fingerprint

    assert m["world_fingerprint"] == world_fingerprint()


def test_a_damaged_install_is_refused_with_one_line(tmp_path, monkeypatch, styler_home):
    from styler.cli.main import main

    copy = tmp_path / "tiny_world"
    shutil.copytree(tiny.WEIGHTS, copy)
    blob = bytearray((copy / "unet.safetensors").read_bytes())
    blob[-10] ^= 0xFF
    (copy / "unet.safetensors").write_bytes(bytes(blob))
    monkeypatch.setattr(tiny, "WEIGHTS", copy)
    code, err = _main(main, ["generate", "a red circle", "--base", "tiny", "--out", str(tmp_path / "out")])
    assert code == 2
    assert err.count("\n") == 1 and "unet.safetensors is damaged" in err and "reinstall styler" in err
    assert not tiny.is_built(tiny.tiny_dir(styler_home)) and not (tmp_path / "out").exists()


def _main(main, argv):
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue()


@pytest.mark.slow
def test_pretraining_code_runs_and_its_weights_build_a_working_base(tmp_path, monkeypatch):
    import torch

    from styler.models.pretrain import Recipe, pretrain, world_fingerprint

    logs = []
    m = pretrain(tmp_path / "w", Recipe.quick(), log=logs.append, figures_n=4)
    assert {"clip", "vae", "unet"} == set(m["files"]) and m["figures"]["vae_scaling_factor"] > 0
    assert any(line.startswith("unet ") for line in logs)
    for entry in m["files"].values():
        assert hashlib.sha256((tmp_path / "w" / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    # a second run with reuse trains nothing again
    logs.clear()
    pretrain(tmp_path / "w", Recipe.quick(), log=logs.append, reuse=True, figures_n=4)
    assert {"clip: reused", "vae: reused", "unet: reused"} <= set(logs)
    # the CLIP's robustness part trains its vision tower alone: changing it retrains the CLIP, but the
    # text tower (the base's text encoder) stays the same bit for bit, so the UNet is reused
    from dataclasses import replace

    logs.clear()
    again = pretrain(tmp_path / "w", replace(Recipe.quick(), clip_robust_steps=4), log=logs.append, reuse=True,
                     figures_n=4)
    assert "clip: reused" not in logs and {"vae: reused", "unet: reused"} <= set(logs), logs
    assert any(line.startswith("clip robust ") for line in logs)
    assert again["files"]["clip"]["sha256"] != m["files"]["clip"]["sha256"]
    assert again["files"]["clip"]["text_sha256"] == m["files"]["clip"]["text_sha256"]
    assert set(again["figures"]["clip_zero_shot_softened"]) == {"colour", "shape", "style"}
    # a change to the contrastive part changes the text tower: the UNet is trained again on it
    logs.clear()
    pretrain(tmp_path / "w", replace(Recipe.quick(), clip_steps=4), log=logs.append, reuse=True, figures_n=4)
    assert "vae: reused" in logs and not {"clip: reused", "unet: reused"} & set(logs), logs
    # a CLIP trained without the robustness part (as tiny v4's was) keeps its contrastive part: only
    # the robustness part trains, and the UNet stays
    bare = pretrain(tmp_path / "w", replace(Recipe.quick(), clip_robust_steps=0), log=logs.append, reuse=True,
                    figures_n=4)
    logs.clear()
    robust = pretrain(tmp_path / "w", Recipe.quick(), log=logs.append, reuse=True, figures_n=4)
    assert "clip: contrastive part reused; training its robustness part" in logs, logs
    assert {"vae: reused", "unet: reused"} <= set(logs)
    assert robust["files"]["clip"]["text_sha256"] == bare["files"]["clip"]["text_sha256"]
    assert robust["files"]["clip"]["sha256"] != bare["files"]["clip"]["sha256"]
    # stages trained on another world's pictures are not reused (the recipe alone would match)
    manifest_path = tmp_path / "w" / "manifest.json"
    other = json.loads(manifest_path.read_text("utf-8"))
    assert other["world_fingerprint"] == world_fingerprint()
    manifest_path.write_text(json.dumps({**other, "world_fingerprint": "0" * 64}), "utf-8")
    logs.clear()
    m = pretrain(tmp_path / "w", Recipe.quick(), log=logs.append, reuse=True, figures_n=4)
    assert not any(line.endswith(": reused") for line in logs), logs
    assert any("draws or names things otherwise" in line for line in logs)
    assert m["world_fingerprint"] == other["world_fingerprint"]
    # the same recipe at another UNet width retrains the UNet alone, and the manifest keeps the width
    narrow = (32, 64, 128)
    with monkeypatch.context() as mp:
        mp.setitem(tiny.UNET_CONFIG, "block_out_channels", narrow)
        logs.clear()
        m = pretrain(tmp_path / "w", Recipe.quick(), log=logs.append, reuse=True, figures_n=4)
    assert {"clip: reused", "vae: reused"} <= set(logs) and "unet: reused" not in logs, logs
    m = json.loads(manifest_path.read_text("utf-8"))
    assert m["configs"]["unet"]["block_out_channels"] == list(narrow)
    assert m["files"]["unet"]["dtype"] == "float16" and m["files"]["vae"]["dtype"] == "float32"
    from safetensors import safe_open

    with safe_open(str(tmp_path / "w" / "unet.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}

    monkeypatch.setattr(tiny, "WEIGHTS", tmp_path / "w")
    folder = tiny.build_tiny(tmp_path / "base")
    marker = json.loads((folder / tiny.MARKER).read_text())
    assert marker["weights"] == "pretrained"
    assert marker["manifest_sha256"]["unet"] == m["files"]["unet"]["sha256"]
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(folder))
    # built at the width its manifest records, not the code's current UNET_CONFIG; float32 to compute
    assert tuple(pipe.unet.config.block_out_channels) == narrow != tuple(tiny.UNET_CONFIG["block_out_channels"])
    assert pipe.unet.dtype == torch.float32
    assert pipe.vae.config.scaling_factor == m["figures"]["vae_scaling_factor"]
    img = pipe("a red circle", num_inference_steps=2, height=64, width=64,
               generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert img.shape == (64, 64, 3) and np.isfinite(img).all()


def test_older_tiny_builds_are_retired_and_their_adapters_refused_with_the_fix(tiny_home):
    from registry import Adapter, Registry
    from styler.generate.engine import Session
    from styler.errors import InputError

    old = tiny_home / "models" / "tiny" / "1"
    old.mkdir(parents=True)
    (old / tiny.MARKER).write_text('{"name": "tiny", "version": "1"}')
    (old / "model_index.json").write_text("{}")
    assert tiny.retire_old_versions(tiny_home) == ["1"]
    assert not old.exists() and tiny.is_built(tiny.tiny_dir(tiny_home))

    session = Session(base=None, identity={"name": "tiny", "kind": "tiny", "hash": "new"})
    record = Adapter(name="demo/pixel", version=1, method="lora", blob="0" * 64,
                     base={"name": "tiny", "kind": "tiny", "hash": "old"})
    with pytest.raises(InputError, match=r"earlier built-in tiny base.*retrain it: styler demo --fresh"):
        session.adapter_data(record, Registry())


def test_the_shipped_tiny_clip_reads_colour_shape_and_style(styler_home):
    # held-out world images (another seed than its training); benchmarks/tiny_world.py measures 256
    # per style: colour 99.6 %, shape 88.4 %, style 99.9 % (issue 11: >= 90 / 80 / 95)
    from transformers import CLIPTokenizer

    from styler.eval.features import ClipFeatures, resolve_clip
    from styler.models.pretrain import zero_shot

    ref = resolve_clip("tiny")
    model, tokenizer = ClipFeatures.open(ref).model, CLIPTokenizer.from_pretrained(str(ref.path))
    zs = zero_shot(model, tokenizer, n_per_style=32)
    assert zs.colour >= 0.9 and zs.shape >= 0.75 and zs.style >= 0.95, zs
    # it reads style through the softening generated pictures have (blur, resampling, noise), thanks to
    # the recipe's robustness part; tiny CLIP v3, trained without it, read 83 % of these styles
    soft = zero_shot(model, tokenizer, n_per_style=32, softened=True)
    assert soft.style >= 0.95 and soft.colour >= 0.9, soft


def test_pretraining_writes_the_same_bytes_for_the_same_weights(tmp_path):
    # the manifest's sha256 is a claim about the weights: the same tensors must give the same file
    # (safetensors writes its metadata map in no fixed order, so more than one key made it vary)
    import torch

    from styler.models.pretrain import _save

    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2)
    digests = {_save(module, tmp_path / f"w{i}.safetensors")["sha256"] for i in range(8)}
    assert len(digests) == 1
