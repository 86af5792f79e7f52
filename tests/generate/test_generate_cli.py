"""generate, mix (exact, sweep), transfer, grid, regen on the tiny base; every bad input."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from registry import Adapter, BlobStore, Output, Registry
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline

FAST = ["--steps", "3", "--seed", "7"]


def pixels(home, output_id):
    o = Registry().get(Output, output_id)
    with BlobStore(home).open(o.blob) as fh:
        return np.asarray(Image.open(io.BytesIO(fh.read())).convert("RGB")).astype(np.int16)


def ids(result):
    assert result.exit_code == 0, result.stderr
    return [o["id"] for o in json.loads(result.stdout)["outputs"]]


def test_baseline_generate_records_everything_and_writes_a1111_png(styled, tmp_path):
    r = run_cli("generate", "书法 永, a cat", "--negative", "blurry", "--n", "2", *FAST, "--out", tmp_path, "--json")
    a, b = ids(r)
    o = Registry().get(Output, a)
    assert (o.kind, o.seed, o.steps, o.guidance, o.width, o.scheduler, o.adapters) == ("txt2img", 7, 3, 7.5, 64, "ddim", [])
    assert Registry().get(Output, b).seed == 8
    assert o.base["name"] == "tiny" and len(o.base["hash"]) == 64
    png = Image.open(tmp_path / f"{a}.png")
    assert png.info["parameters"].startswith("书法 永, a cat\nNegative prompt: blurry\nSteps: 3, Sampler: DDIM, CFG scale: 7.5, Seed: 7, Size: 64x64")
    assert json.loads(png.info["styler"])["id"] == a


def test_an_adapter_changes_the_image_and_weight_zero_does_not(styled):
    (base,) = ids(run_cli("generate", "a cat", *FAST, "--json"))
    (full,) = ids(run_cli("generate", "a cat", *FAST, "--adapter", "anime=1", "--json"))
    (zero,) = ids(run_cli("generate", "a cat", *FAST, "--adapter", "anime=0", "--json"))
    assert np.abs(pixels(styled, full) - pixels(styled, base)).max() > 0
    assert np.array_equal(pixels(styled, zero), pixels(styled, base))
    rec = Registry().get(Output, full).adapters[0]
    assert (rec["name"], rec["version"], rec["weight"], rec["te_weight"]) == ("anime", 1, 1.0, 1.0)


def test_mix_equals_diffusers_unfused_multi_adapter_rendering(styled):
    """The exact rule is what peft computes unfused (W x + Σ w·s·B A x); styler folds it once."""
    import torch

    from styler.models.load import load_pipeline
    from styler.models.resolve import resolve_base

    (mixed,) = ids(run_cli("mix", "anime=0.6", "watercolor=-0.4", "ink=0.9", "a cat", *FAST, "--json"))
    pipe = load_pipeline(resolve_base("tiny"))
    reg = Registry()
    for n in ("anime", "watercolor", "ink"):
        pipe.load_lora_weights(str(BlobStore(styled).path(reg.resolve(Adapter, n).blob)), adapter_name=n)
    pipe.set_adapters(["anime", "watercolor", "ink"], adapter_weights=[0.6, -0.4, 0.9])
    g = torch.Generator().manual_seed(7)
    ref = np.asarray(pipe("a cat", num_inference_steps=3, height=64, width=64, generator=g).images[0]).astype(np.int16)
    assert np.abs(pixels(styled, mixed) - ref).max() <= 2  # uint8 rounding of float-order differences


def test_sweep_renders_the_series_and_its_ends_are_the_single_adapters(styled, tmp_path):
    r = run_cli("mix", "anime=0.5", "watercolor=0.5", "a cat", *FAST, "--sweep", "anime:watercolor", "--out", tmp_path, "--json")
    data = json.loads(r.stdout)
    # the weights given for the two ends are replaced along the sweep: said once
    assert r.stderr.count("--sweep anime:watercolor sets their weights to 1-t and t") == 1
    assert "(anime=0.5, watercolor=0.5) are not used" in r.stderr
    out_ids = [o["id"] for o in data["outputs"]]
    assert len(out_ids) == 7
    weights = [[a["weight"] for a in Registry().get(Output, i).adapters] for i in out_ids]
    assert weights[0] == [1.0, 0.0] and weights[3] == [0.5, 0.5] and weights[-1] == [0.0, 1.0]
    sheet = Image.open(data["grid"])
    assert sheet.width > 7 * 64
    # the files say which cell they are: adapters, weights and seed, then the id
    files = sorted(p.name for p in tmp_path.glob("*.png") if p.name.startswith("anime"))
    assert f"anime-0.8_watercolor-0.2_seed7_{out_ids[1]}.png" in files and len(files) == 7
    text = run_cli("mix", "anime=0.5", "watercolor=0.5", "a cat", *FAST, "--sweep", "anime:watercolor",
                   "--sweep-values", "0,0.5").stdout
    assert "t 0  " in text and "t 0.5  " in text  # each line names its step, not only its seed
    (only_a,) = ids(run_cli("generate", "a cat", *FAST, "--adapter", "anime=1", "--json"))
    assert np.abs(pixels(styled, out_ids[0]) - pixels(styled, only_a)).max() <= 1


def test_text_encoder_weights_are_separate(styled):
    (a,) = ids(run_cli("mix", "anime=0.5", "ink=0.5", "a cat", "--te", "0", "--te", "1", *FAST, "--json"))
    rec = Registry().get(Output, a).adapters
    assert [(x["weight"], x["te_weight"]) for x in rec] == [(0.5, 0.0), (0.5, 1.0)]


def test_grid_over_guidance_and_seed(styled, tmp_path):
    r = run_cli("grid", "a cat", "--x", "guidance=3,7.5", "--y", "seed=1,2", "--adapter", "anime=0.7",
                "--steps", "2", "--out", tmp_path, "--json")
    data = json.loads(r.stdout)
    outs = [Registry().get(Output, o["id"]) for o in data["outputs"]]
    assert [(o.guidance, o.seed) for o in outs] == [(3.0, 1), (7.5, 1), (3.0, 2), (7.5, 2)]
    assert Image.open(data["grid"]).width >= 2 * 64
    r = run_cli("grid", "a cat", "--x", "scale=0,1", "--adapter", "anime=0.5", "--steps", "2", "--json")
    outs = [Registry().get(Output, o["id"]) for o in json.loads(r.stdout)["outputs"]]
    assert [o.adapters[0]["weight"] for o in outs] == [0.0, 0.5]


def test_regen_from_id_and_from_png_gives_identical_pixels(styled, tmp_path):
    (a,) = ids(run_cli("mix", "anime=0.5", "watercolor=0.5", "a cat", *FAST, "--out", tmp_path, "--json"))
    r = run_cli("regen", a, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["identical"] is True
    r = run_cli("regen", tmp_path / f"{a}.png")
    assert r.exit_code == 0 and "identical pixels" in r.stdout


def _content(tmp_path, size=(64, 64)):
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:, : size[0] // 2] = (200, 40, 40)
    arr[:, size[0] // 2:] = (40, 40, 200)
    p = tmp_path / "content.png"
    Image.fromarray(arr).save(p)
    return p


def test_transfer_keeps_content_and_records_it(styled, tmp_path):
    content = _content(tmp_path)
    args = ["--steps", "10", "--seed", "7", "--json"]
    (lo,) = ids(run_cli("transfer", content, "a painting", "--adapter", "watercolor=1", "--strength", "0.3", *args))
    (hi,) = ids(run_cli("transfer", content, "a painting", "--adapter", "watercolor=1", "--strength", "0.9", *args))
    o = Registry().get(Output, lo)
    assert o.kind == "img2img" and o.params["strength"] == 0.3 and BlobStore(styled).has(o.content_blob)
    assert np.abs(pixels(styled, lo) - pixels(styled, hi)).max() > 0
    r = run_cli("regen", lo, "--json")
    assert json.loads(r.stdout)["identical"] is True


def test_transfer_with_a_mask_inpaints_and_a_mismatched_mask_is_stretched(styled, tmp_path):
    content = _content(tmp_path)
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 16:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    r = run_cli("transfer", content, "a painting", "--mask", tmp_path / "mask.png", *FAST, "--json")
    (a,) = ids(r)
    assert "stretched to 64x64" in r.stderr
    o = Registry().get(Output, a)
    assert o.kind == "inpaint" and o.params["mask_blob"]


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (["generate", "a cat", "--adapter", "nope=1"], 1, "no adapter named 'nope'"),
        (["generate", "a cat", "--adapter", "anime=abc"], 2, "must be a number, not 'abc'"),
        (["mix", "anime=0.5", "anime=0.5", "a cat"], 2, "twice"),
        (["mix", "anime=x", "a cat"], 2, "must be a number"),
        (["mix", "anime=0.5", "a cat", "a dog"], 2, "exactly one prompt"),
        (["mix", "a cat"], 2, "no adapters"),
        (["mix", "anime=0.5", "watercolor=0.5", "a cat", "--sweep", "anime:ink"], 2, "ink is not among"),
        (["generate", "a cat", "--n", "0"], 2, "--n 0"),
        (["generate", "a cat", "--seed", "-1"], 2, "out of range"),
        (["generate", "a cat", "--seed", str(2**32)], 2, "out of range"),
        (["generate", "a cat", "--size", "60"], 2, "multiples of 8"),
        (["generate", "a cat", "--scheduler", "warp"], 2, "unknown --scheduler"),
        (["generate", "   "], 2, "prompt is empty"),
        (["grid", "a cat", "--x", "colour=1,2"], 2, "guidance, scale, steps, seed"),
        (["grid", "a cat", "--x", "scale=0,1"], 2, "needs at least one --adapter"),
        (["transfer", "/no/such.png", "a cat"], 2, "does not exist"),
        (["regen", "01ARZ3NDEKTSV4RRFFQ69G5FAV"], 1, "no output with id"),
    ],
)
def test_bad_input(styled, args, code, fragment):
    before = Registry().count(Output)
    r = run_cli(*args, "--steps", "2") if args[0] != "regen" else run_cli(*args)
    assert r.exit_code == code, (r.stdout, r.stderr)
    assert fragment in r.stderr and r.stderr.strip().splitlines()[-1].startswith("error:")
    assert Registry().count(Output) == before


def test_content_that_is_not_an_image(styled, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    r = run_cli("transfer", bad, "a cat", "--steps", "2")
    assert r.exit_code == 2 and "not a usable image" in r.stderr


def test_strength_too_small_for_the_steps(styled, tmp_path):
    r = run_cli("transfer", _content(tmp_path), "a cat", "--strength", "0.2", "--steps", "3")
    assert r.exit_code == 2 and "runs no denoising step" in r.stderr


def test_long_prompt_warns_and_says_what_was_cut(styled):
    prompt = " ".join(["watercolor"] * 90) + " ENDWORD"
    r = run_cli("generate", prompt, *FAST)
    assert r.exit_code == 0 and "longer than 77 tokens" in r.stderr and "ENDWORD" in r.stderr


def test_large_weight_warns(styled):
    r = run_cli("generate", "a cat", *FAST, "--adapter", "anime=2.5")
    assert r.exit_code == 0 and "beyond ±2" in r.stderr


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "euler-a", "dpm++", "dpm++-karras", "unipc", "pndm", "ddpm"])
def test_every_scheduler_renders_and_is_recorded(styled, scheduler):
    (a,) = ids(run_cli("generate", "a cat", "--steps", "4", "--seed", "1", "--scheduler", scheduler, "--json"))
    assert Registry().get(Output, a).scheduler == scheduler


def test_pndm_with_too_few_steps_says_so(styled):
    r = run_cli("generate", "a cat", "--steps", "3", "--scheduler", "pndm")
    assert r.exit_code == 2 and "needs --steps 4 or more" in r.stderr


def test_textual_inversion_adapter_adds_its_token(styled):
    r = run_cli("train", "ink", "--base", "tiny", "--resolution", "32", "--method", "textual-inversion",
                "--token", "<ink>", "--steps", "2", "--lr", "1e-1", "--name", "ink-ti")
    assert r.exit_code == 0, r.stderr
    (plain,) = ids(run_cli("generate", "a <ink> cat", *FAST, "--json"))
    (with_ti,) = ids(run_cli("generate", "a <ink> cat", *FAST, "--adapter", "ink-ti", "--json"))
    assert np.abs(pixels(styled, plain) - pixels(styled, with_ti)).max() > 0
    assert Registry().get(Output, with_ti).adapters[0]["method"] == "textual-inversion"
