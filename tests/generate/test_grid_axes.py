"""`styler grid` X/Y/Z axes beyond guidance/scale/steps/seed: sampler, prompt S/R, weight:NAME,
unet-scale/te-scale, step (an adapter's checkpoints) and --z; each changes what it should, every
cell keeps its recipe, and bad axes are one-line errors (exit 2) that render nothing."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from registry import BlobStore, Output, Registry
from styler.generate.pngmeta import parse_a1111_parameters, read_png_meta
from tests.helpers import run_cli, tree

FAST = ["--steps", "2"]


def pixels(home, output_id: str) -> np.ndarray:
    with BlobStore(home).open(Registry().get(Output, output_id).blob) as fh:
        return np.asarray(Image.open(io.BytesIO(fh.read())).convert("RGB")).astype(np.int16)


def grid(*args):
    r = run_cli("grid", *args, "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    return [Registry().get(Output, o["id"]) for o in data["outputs"]], data


@pytest.mark.slow
def test_weight_prompt_and_sampler_axes_with_one_sheet_per_z_value(styled, tmp_path):
    outs, data = grid("a cat on grass", "--x", "weight:anime=0,0.5,1", "--y", "prompt=cat,dog", "--z",
                      "sampler=ddim,euler", "--adapter", "anime=0.3", "--adapter", "watercolor=0", *FAST,
                      "--out", tmp_path)
    assert len(outs) == 3 * 2 * 2
    # only the named adapter's weight moves
    assert [[(a["name"], a["weight"]) for a in o.adapters] for o in outs[:3]] == [
        [("anime", w), ("watercolor", 0.0)] for w in (0.0, 0.5, 1.0)]
    # the first row is the prompt itself; the other value replaced the first (A1111's Prompt S/R)
    assert [o.prompt for o in outs[:6]] == ["a cat on grass"] * 3 + ["a dog on grass"] * 3
    assert [o.scheduler for o in outs] == ["ddim"] * 6 + ["euler"] * 6
    assert outs[10].params["grid"] == {"weight:anime": 0.5, "prompt": "dog", "sampler": "euler"}
    # the recipe travels with each cell's PNG, A1111's parameters too
    recipe, text = read_png_meta(next(tmp_path.glob(f"*_{outs[10].id}.png")))
    assert recipe["prompt"] == "a dog on grass" and recipe["scheduler"] == "euler"
    assert recipe["adapters"][0]["weight"] == 0.5
    fields = parse_a1111_parameters(text)
    assert fields["Sampler"] == "Euler" and fields["prompt"].startswith("a dog on grass <lora:anime")
    # weight 0 (and watercolor at 0) is the base image; each axis changes the image
    cells = [pixels(styled, o.id) for o in outs]
    r = run_cli("generate", "a cat on grass", *FAST, "--seed", "0", "--json")
    assert np.array_equal(cells[0], pixels(styled, json.loads(r.stdout)["outputs"][0]["id"]))
    for a, b in ((0, 1), (1, 2), (0, 3), (0, 6)):  # weight, weight, prompt, sampler
        assert np.abs(cells[a] - cells[b]).max() > 0
    # one sheet per z value, named by it, each 3 columns × 2 rows
    sheets = data["grids"]
    assert len(sheets) == 2 and sheets[0] == data["grid"]
    assert sheets[0].endswith("_sampler-ddim.png") and sheets[1].endswith("_sampler-euler.png")
    a, b = Image.open(sheets[0]), Image.open(sheets[1])
    assert a.size == b.size and a.width > 3 * 128 and 2 * 128 < a.height < 3 * 128 + 200
    assert not np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_step_axis_uses_the_checkpoints_weights_and_unet_te_scales_split_the_adapter(checkpointed, tmp_path):
    home = checkpointed
    outs, _ = grid("a cat", "--x", "step=2,4", "--adapter", "ink", *FAST, "--out", tmp_path)
    early, final = (pixels(home, o.id) for o in outs)
    # the step-2 cell has exactly the weights the run had at step 2: those of the same training stopped there
    r = run_cli("generate", "a cat", *FAST, "--seed", "0", "--adapter", "ink2", "--json")
    assert np.array_equal(early, pixels(home, json.loads(r.stdout)["outputs"][0]["id"]))
    assert np.abs(early - final).max() > 0
    rec = outs[0].adapters[0]
    assert rec["name"] == "ink" and rec["train_step"] == 2 and rec["checkpoint"].endswith("/checkpoints/step-0000002")
    assert outs[1].adapters[0]["train_step"] == 4 and "checkpoint" not in outs[1].adapters[0]
    # A1111 would load the final file for a plain <lora:ink…> tag: the step's tag says which step, no hash
    _, text = read_png_meta(next(tmp_path.glob(f"*_{outs[0].id}.png")))
    assert "-step2:1>" in text and "Lora hashes" not in text
    r = run_cli("regen", outs[0].id, "--json")  # made again from its recipe: the same checkpoint
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["identical"] is True

    outs, _ = grid("a cat", "--x", "unet-scale=0,1", "--y", "te-scale=0,1", "--adapter", "ink", *FAST)
    assert [(o.adapters[0]["weight"], o.adapters[0]["te_weight"]) for o in outs] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    none, unet, te, both = (pixels(home, o.id) for o in outs)
    assert np.array_equal(both, final)
    assert np.abs(unet - none).max() > 0 and np.abs(te - none).max() > 0 and np.abs(unet - te).max() > 0

    r = run_cli("grid", "a cat", "--x", "step=3", "--adapter", "ink", *FAST)
    assert r.exit_code == 2 and "kept steps 2, 4" in r.stderr and "--checkpoint-every" in r.stderr


@pytest.mark.parametrize("args, says", [
    (["--x", "colour=1,2"], "guidance, scale, steps, seed, sampler, prompt, step, unet-scale, te-scale"),
    (["--x", "weight=0,1", "--adapter", "anime"], "weight:ADAPTER="),
    (["--x", "sampler=ddim,foo"], "unknown 'foo'; use ddim, euler"),
    (["--x", "prompt=dog,owl"], "'dog' is not in the prompt"),
    (["--x", "weight:nope=0,1", "--adapter", "anime"], "nope is not one of the --adapter entries (anime)"),
    (["--x", "step=1,2", "--adapter", "anime", "--adapter", "ink"], "say whose steps (step:anime=…, step:ink=…)"),
    (["--x", "step=2", "--adapter", "anime"], "kept steps 3"),
    (["--x", "te-scale=0,1"], "needs at least one --adapter"),
    (["--x", "guidance=1,x"], "values must be numbers"),
    (["--x", "steps=0,2"], "0 is not a step"),
    (["--x", "seed=1", "--y", "guidance=2", "--z", "seed=3"], "seed is given twice"),
    (["--x", "seed=1,1"], "1 is given twice"),
    (["--x", "sampler="], "no values; e.g. sampler=ddim,euler"),
])
def test_bad_axes_exit_2_in_one_line_and_render_nothing(styled, args, says):
    before = tree(styled)
    r = run_cli("grid", "a cat", *args, *FAST)
    assert r.exit_code == 2, r.stderr
    assert says in " ".join(r.stderr.split()) and len(r.stderr.strip().splitlines()) == 1
    assert tree(styled) == before and not Registry().find(Output)


def test_a_step_cells_queued_regen_keeps_its_step():
    from styler.generate.jobs import request_from_payload
    from styler.tui.queue_ops import regen_payload

    cell = Output(prompt="a cat", seed=0, steps=2, guidance=7.5, width=64, height=64, scheduler="euler",
                  base={"name": "tiny", "kind": "tiny"},
                  adapters=[{"id": "x", "name": "ink", "version": 1, "weight": 1.0, "te_weight": 1.0,
                             "train_step": 2, "checkpoint": "runs/R/checkpoints/step-0000002"},
                            {"id": "y", "name": "anime", "version": 3, "weight": 0.5, "te_weight": 0.5}])
    req = request_from_payload(regen_payload(cell))
    assert req.adapter_steps == {"ink@1": 2} and [s for s, _, _ in req.adapters] == ["ink@1", "anime@3"]
