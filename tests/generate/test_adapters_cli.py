"""`styler adapters import | export | merge | rm` on the tiny base."""

import json

import numpy as np
import pytest
from safetensors.torch import save_file
import torch

from registry import Adapter, BlobStore, Registry
from tests.generate.test_generate_cli import FAST, ids, pixels
from tests.helpers import run_cli


def test_kohya_export_then_import_renders_the_same(styled, tmp_path):
    out = tmp_path / "ink-kohya.safetensors"
    r = run_cli("adapters", "export", "ink", "--format", "kohya", "--out", out)
    assert r.exit_code == 0, r.stderr
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in keys)
    assert any(k.endswith(".alpha") for k in keys)
    r = run_cli("adapters", "import", out, "ink-back", "--base", "tiny")
    assert r.exit_code == 0 and "from kohya format" in r.stdout
    a = Registry().resolve(Adapter, "ink-back")
    assert a.method == "imported" and a.base["name"] == "tiny"
    (orig,) = ids(run_cli("generate", "a cat", *FAST, "--adapter", "ink=1", "--json"))
    (back,) = ids(run_cli("generate", "a cat", *FAST, "--adapter", "ink-back=1", "--json"))
    assert np.abs(pixels(styled, orig) - pixels(styled, back)).max() <= 1


@pytest.mark.parametrize("fmt", ["diffusers", "peft"])
def test_other_exports_load_in_diffusers(styled, tmp_path, fmt):
    from styler.models.load import load_pipeline
    from styler.models.resolve import resolve_base

    out = tmp_path / f"w-{fmt}.safetensors"
    assert run_cli("adapters", "export", "watercolor", "--format", fmt, "--out", out).exit_code == 0
    pipe = load_pipeline(resolve_base("tiny"))
    pipe.load_lora_weights(str(out))
    g = torch.Generator().manual_seed(7)
    img = np.asarray(pipe("a cat", num_inference_steps=3, height=64, width=64, generator=g).images[0]).astype(np.int16)
    (ref,) = ids(run_cli("generate", "a cat", *FAST, "--adapter", "watercolor=1", "--json"))
    assert np.abs(img - pixels(styled, ref)).max() <= 2


def test_merge_concat_is_exactly_the_mix(styled):
    r = run_cli("adapters", "merge", "blend", "anime=0.5", "ink=0.7", "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["relative_error"] is None
    merged = Registry().resolve(Adapter, "blend")
    assert merged.method == "merged" and merged.rank == 2 + 6  # ranks add up
    assert [s["weight"] for s in merged.metadata["sources"]] == [0.5, 0.7]
    (mixed,) = ids(run_cli("mix", "anime=0.5", "ink=0.7", "a cat", *FAST, "--json"))
    (one,) = ids(run_cli("generate", "a cat", *FAST, "--adapter", "blend=1", "--json"))
    assert np.abs(pixels(styled, mixed) - pixels(styled, one)).max() <= 1


def test_merge_svd_reports_its_error(styled):
    r = run_cli("adapters", "merge", "low", "anime=1", "ink=1", "--method", "svd", "--rank", "1")
    assert r.exit_code == 0 and "relative error" in r.stdout
    low = json.loads(run_cli("adapters", "merge", "low2", "anime=1", "ink=1", "--method", "svd", "--rank", "1", "--json").stdout)
    full = json.loads(run_cli("adapters", "merge", "full", "anime=1", "ink=1", "--method", "svd", "--rank", "8", "--json").stdout)
    assert 0 < low["relative_error"] < 1 and full["relative_error"] < 1e-5


def test_rm_removes_records_and_prune_frees_the_file(styled):
    a = Registry().resolve(Adapter, "anime")
    assert run_cli("adapters", "rm", "anime", "--dry-run").stdout.startswith("would remove anime@1")
    r = run_cli("adapters", "rm", "anime", "-y")
    assert r.exit_code == 0 and Registry().find(Adapter, name="anime") == []
    r = run_cli("registry", "prune", "-y")
    assert r.exit_code == 0 and not BlobStore(styled).has(a.blob)


# ---------------------------------------------------------------------------------------- bad input


def test_import_refuses_pickles_and_unknown_keys(styled, tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04not really")
    r = run_cli("adapters", "import", ckpt, "x")
    assert r.exit_code == 2 and "never unpickles" in r.stderr
    odd = tmp_path / "odd.safetensors"
    save_file({"foo.weight": torch.zeros(2, 2), "bar.bias": torch.zeros(2)}, str(odd))
    r = run_cli("adapters", "import", odd, "x")
    assert r.exit_code == 2 and "foo.weight" in r.stderr
    assert Registry().find(Adapter, name="x") == []


def test_import_refuses_an_adapter_for_another_architecture(styled, tmp_path):
    bad = tmp_path / "big.safetensors"
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"{name}.lora_down.weight": torch.zeros(4, 320), f"{name}.lora_up.weight": torch.zeros(320, 4),
               f"{name}.alpha": torch.tensor(4.0)}, str(bad))
    r = run_cli("adapters", "import", bad, "big", "--base", "tiny")
    assert r.exit_code == 2 and "does not fit this base" in r.stderr and "320" in r.stderr
    assert Registry().find(Adapter, name="big") == []


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (["adapters", "export", "ink", "--format", "ckpt"], 2, "unknown --format"),
        (["adapters", "export", "nope"], 1, "no adapter named 'nope'"),
        (["adapters", "merge", "m", "anime=1"], 2, "at least two"),
        (["adapters", "merge", "m", "anime=1", "anime=1"], 2, "twice"),
        (["adapters", "merge", "m", "anime=1", "ink=1", "--method", "svd"], 2, "needs --rank"),
        (["adapters", "merge", "m", "anime=1", "ink=1", "--method", "avg"], 2, "unknown --method"),
        (["adapters", "merge", "m", "anime=half", "ink=1"], 2, "must be a number"),
        (["adapters", "rm", "nope", "-y"], 1, "no adapter named 'nope'"),
    ],
)
def test_bad_input(styled, args, code, fragment):
    before = len(Registry().all(Adapter))
    r = run_cli(*args)
    assert r.exit_code == code, (r.stdout, r.stderr)
    assert fragment in r.stderr
    assert len(Registry().all(Adapter)) == before
