"""`styler adapters import | export | merge | rm` on the tiny base."""

import json

import numpy as np
import pytest
from safetensors.torch import save_file
import torch

from registry import Adapter, BlobStore, Registry
from tests.generate.test_generate_cli import FAST, ids, pixels
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline


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


# ------------------------------------------------------------------------- what A1111 and civitai read


def test_png_infotext_names_loras_as_a1111_hashes_the_installed_kohya_export(styled, tmp_path, monkeypatch):
    import hashlib
    import os

    from PIL import Image
    from safetensors import safe_open

    from styler.generate.pngmeta import parse_a1111_parameters, parse_lora_hashes

    r = run_cli("generate", "a cat", *FAST, "--adapter", "ink=0.7", "--adapter", "anime=0.5",
                "--scheduler", "dpm++-karras", "--out", tmp_path / "png", "--json")
    (oid,) = ids(r)
    text = Image.open(tmp_path / "png" / f"{oid}.png").info["parameters"]
    assert text.startswith("a cat <lora:ink-v1:0.7> <lora:anime-v1:0.5>\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras,")
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        assert run_cli("adapters", "export", "ink").exit_code == 0  # default name: the name in the tag
        assert run_cli("adapters", "export", "ink", "--out", tmp_path / "again.safetensors").exit_code == 0
    finally:
        os.umask(old)
    installed = tmp_path / "ink-v1.safetensors"
    raw = installed.read_bytes()
    assert raw == (tmp_path / "again.safetensors").read_bytes()  # the same adapter, the same bytes
    assert installed.stat().st_mode & 0o777 == 0o644  # other users' A1111/ComfyUI can read it
    # A1111 (modules/hashes.py addnet_hash_safetensors, extensions-builtin/Lora/network.py): a LoRA's hash
    # is sshs_model_hash from its metadata, else sha256 of the bytes after the header; 12 digits are shown
    n = int.from_bytes(raw[:8], "little")
    autov3 = hashlib.sha256(raw[8 + n:]).hexdigest()
    with safe_open(str(installed), "pt") as f:
        meta = f.metadata()
    assert meta["sshs_model_hash"] == autov3 and meta["ss_output_name"] == "ink-v1"
    hashes = parse_lora_hashes(parse_a1111_parameters(text)["Lora hashes"])
    assert hashes["ink-v1"] == autov3[:12] and len(hashes) == 2


def test_a_dora_adapter_generates_alone_at_any_weight_and_mixes_only_where_exact(styled):
    r = run_cli("train", "ink", "--base", "tiny", "--resolution", "32", "--steps", "2", "--lr", "5e-2", "--rank", "2",
                "--dora", "--text-encoder", "--name", "ink-dora")
    assert r.exit_code == 0, r.stderr
    (base,) = ids(run_cli("generate", "a cat", *FAST, "--json"))
    (one,) = ids(run_cli("generate", "a cat", *FAST, "--adapter", "ink-dora", "--json"))
    (half,) = ids(run_cli("generate", "a cat", *FAST, "--adapter", "ink-dora=0.5", "--te-scale", "0.2", "--json"))
    assert np.abs(pixels(styled, one) - pixels(styled, base)).max() > 0
    assert np.abs(pixels(styled, half) - pixels(styled, one)).max() > 0
    r = run_cli("mix", "ink-dora=0.5", "anime=0.5", "a cat", *FAST)  # both change the attention layers
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "ink-dora@1 is a DoRA adapter and anime@1 also changes unet." in r.stderr and "no exact mix" in r.stderr
