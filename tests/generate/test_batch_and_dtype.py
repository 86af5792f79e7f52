"""--batch gives the images one-at-a-time gives; a mix is folded once per loaded pipeline; bf16
renders on the CPU; outputs record their device and dtype, and regen says when those differ."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from registry import BlobStore, Output, Registry
from styler.device import Placement
from styler.generate.engine import Session
from styler.generate.service import Request, generate
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline

MIX = [("anime", 0.6, None), ("watercolor", 0.5, 0.2)]


def pixels(home, output):
    with BlobStore(home).open(output.blob) as fh:
        return np.asarray(Image.open(io.BytesIO(fh.read())).convert("RGB")).astype(np.int16)


@pytest.mark.parametrize("scheduler", ["ddim", "euler-a"])  # euler-a draws fresh noise every step
def test_a_batch_gives_the_images_single_renders_give(styled, scheduler):
    session = Session.open("tiny", Placement())
    req = dict(prompt="a cat", negative="blurry", steps=4, seed=11, n=4, scheduler=scheduler, adapters=MIX,
               width=64, height=64)
    one = generate(Request(**req, batch=1), session=session)
    four = generate(Request(**req, batch=4), session=session)
    three = generate(Request(**req, batch=3), session=session)  # a last, shorter batch
    assert [o.seed for o in one] == [o.seed for o in four] == [o.seed for o in three] == [11, 12, 13, 14]
    single = [pixels(styled, o) for o in one]
    for batch in (four, three):
        diffs = [int(np.abs(pixels(styled, b) - a).max()) for a, b in zip(single, batch)]
        assert max(diffs) <= 2, diffs  # uint8 rounding of float round-off, nothing more
    # and the four seeds are four different images
    assert min(int(np.abs(single[0] - s).max()) for s in single[1:]) > 20


def test_eval_batches_give_the_images_single_renders_give(styled):
    from styler.eval.run import parse_subject, render_set

    reg = Registry()
    session = Session.open("tiny", Placement())
    subject = parse_subject("anime=0.7+ink=0.3", reg)
    settings = {"steps": 3, "guidance": 5.0, "width": 64, "height": 64, "scheduler": "ddim"}
    prompts, seeds = ["a cat", "a red house", "a cat", "书法 永"], [0, 1, 2, 3]
    batched = render_set(subject, prompts, seeds, settings, reg, session, None, batch=4)
    assert [(o.prompt, o.seed) for o in batched] == list(zip(prompts, seeds))
    assert [a["name"] for a in batched[0].adapters] == ["anime", "ink"]
    single = [generate(Request(prompt=p, seed=s, n=1, adapters=subject.specs, **settings), session=session)[0]
              for p, s in zip(prompts, seeds)]
    for a, b in zip(single, batched):
        assert np.abs(pixels(styled, a) - pixels(styled, b)).max() <= 2
    # asked again, eval reuses every image (same recipe, device and dtype) instead of rendering
    assert [o.id for o in render_set(subject, prompts, seeds, settings, reg, session, None, batch=4)] == \
        [o.id for o in batched]


def test_a_mix_is_folded_once_per_pipeline_not_once_per_image(styled):
    from styler.eval.run import parse_subject, render_set

    reg = Registry()
    session = Session.open("tiny", Placement())
    first = generate(Request(prompt="a cat", seed=1, n=3, steps=2, adapters=MIX, width=64, height=64), session=session)
    assert session.mixer.folds == 1
    generate(Request(prompt="a dog", seed=5, n=2, steps=2, adapters=MIX, width=64, height=64), session=session)
    assert session.mixer.folds == 1  # same mix: nothing recomputed
    subject = parse_subject("anime=0.6+watercolor=0.5", reg)
    render_set(subject, ["a"] * 4, [20, 21, 22, 23], {"steps": 2, "guidance": 7.5, "width": 64, "height": 64,
                                                       "scheduler": "ddim"}, reg, session, None)
    assert session.mixer.folds == 2  # te weight 0.5 instead of 0.2: a new mix, folded once for 4 images
    generate(Request(prompt="a cat", seed=1, n=1, steps=2, width=64, height=64), session=session)
    again = generate(Request(prompt="a cat", seed=1, n=1, steps=2, adapters=MIX, width=64, height=64), session=session)
    assert session.mixer.folds == 3
    assert np.array_equal(pixels(styled, again[0]), pixels(styled, first[0]))  # folded from the pristine weights


def test_bf16_renders_on_the_cpu_and_is_recorded(styled):
    import torch

    r32 = run_cli("generate", "a cat", "--adapter", "anime=0.8", "--steps", "3", "--seed", "4", "--json")
    r16 = run_cli("generate", "a cat", "--adapter", "anime=0.8", "--steps", "3", "--seed", "4", "--dtype", "bf16",
                  "--json")
    other = run_cli("generate", "a cat", "--adapter", "anime=0.8", "--steps", "3", "--seed", "5", "--json")
    for r in (r32, r16, other):
        assert r.exit_code == 0, r.stderr
    o32, o16, o5 = (Registry().get(Output, json.loads(r.stdout)["outputs"][0]["id"]) for r in (r32, r16, other))
    assert (o32.device, o32.dtype, o16.device, o16.dtype) == ("cpu", "fp32", "cpu", "bf16")
    png = Image.open(io.BytesIO(BlobStore(styled).path(o16.blob).read_bytes()))
    assert json.loads(png.info["styler"])["dtype"] == "bf16"
    # the same image, in less precision: far closer to fp32 than another seed is
    close = np.abs(pixels(styled, o16) - pixels(styled, o32)).mean()
    far = np.abs(pixels(styled, o5) - pixels(styled, o32)).mean()
    assert close < far / 3, (close, far)
    session = Session.open("tiny", Placement("cpu", "bf16"))
    assert session.pipe.unet.dtype == torch.bfloat16 and session.pipe.text_encoder.dtype == torch.bfloat16


def test_regen_on_another_dtype_says_the_pixels_may_differ(styled):
    r = run_cli("generate", "a cat", "--steps", "2", "--seed", "3", "--json")
    oid = json.loads(r.stdout)["outputs"][0]["id"]
    same = run_cli("regen", oid)
    assert same.exit_code == 0 and "identical pixels" in same.stdout and "may differ" not in same.stderr
    other = run_cli("regen", oid, "--dtype", "bf16")
    assert other.exit_code == 0, other.stderr
    assert "rendered on cpu in fp32, this on cpu bf16: the pixels may differ" in other.stderr
    assert "identical pixels" not in other.stdout


def test_batch_must_be_positive(styled):
    r = run_cli("generate", "a cat", "--batch", "0", "--steps", "2")
    assert r.exit_code == 2 and "--batch 0: render at least one image per pass" in r.stderr
    assert Registry().all(Output) == []
