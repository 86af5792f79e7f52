"""Adapter file formats: detection, reading into the canonical form, kohya/diffusers/peft export,
what diffusers' own loader makes of the exports, base-compatibility checks, refused inputs."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from styler.adapters.formats import (check_compatible, detect_format, model_module_names, read_adapter,
                                     write_adapter)
from styler.adapters.lora import AdapterData, LoraLayer
from styler.models.tiny import UNET_CONFIG
from styler.errors import InputError, UsageError

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline

Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
CONV = "down_blocks.0.resnets.0.conv1"
W0 = UNET_CONFIG["block_out_channels"][0]  # the tiny UNet's width at down_blocks.0: Q is [W0, W0], CONV [W0, W0, 3, 3]
TE_Q = "encoder.layers.0.self_attn.q_proj"


def _pipe(tiny_base_dir):
    from styler.models.load import load_pipeline
    from styler.models.resolve import BaseModel

    return load_pipeline(BaseModel(name="tiny", kind="tiny", path=tiny_base_dir))


@pytest.fixture(scope="module")
def trained(tiny_base_dir, tmp_path_factory):
    """A styler LoRA file (rank 4, alpha 2, attention + conv + text encoder, random B) and the
    peft-wrapped pipeline that wrote it."""
    from styler.train.config import build_config
    from styler.train.methods import make_method

    pipe = _pipe(tiny_base_dir)
    method = make_method(build_config(dataset="x", rank=4, alpha=2, targets="attn+conv", text_encoder=True))
    method.prepare(pipe)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in method.trainable().items():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    path = method.save(tmp_path_factory.mktemp("lora") / "styler.safetensors", {"styler.adapter": "t/x@1"})
    return path, pipe


@pytest.fixture(scope="module")
def base_pipe(tiny_base_dir):
    return _pipe(tiny_base_dir)


def _image(pipe):
    g = torch.Generator().manual_seed(0)
    return pipe("a cat", num_inference_steps=2, height=64, width=64, generator=g, output_type="np").images[0]


def _peft_deltas(pipe) -> dict:
    """(component, module) -> ΔW exactly as the loaded peft layers apply it (scaling · B @ A)."""
    out = {}
    for comp in ("unet", "text_encoder"):
        for name, mod in getattr(pipe, comp).named_modules():
            if hasattr(mod, "base_layer") and len(mod.lora_A):
                (adapter,) = list(mod.lora_A)
                a, b = mod.lora_A[adapter].weight, mod.lora_B[adapter].weight
                layer = LoraLayer(comp, name, a.detach(), b.detach(), mod.scaling[adapter] * a.shape[0])
                out[(comp, name)] = layer.delta()
    return out


def _loaded(pipe, path):
    """Load a file with diffusers' own loader; (image, deltas); unload again."""
    pipe.load_lora_weights(str(path))
    try:
        return _image(pipe), _peft_deltas(pipe)
    finally:
        pipe.unload_lora_weights()


def _same_layers(a: AdapterData, b: AdapterData):
    assert set(a.layers) == set(b.layers)
    for key, x in a.layers.items():
        y = b.layers[key]
        assert torch.equal(x.down, y.down) and torch.equal(x.up, y.up), key
        assert x.alpha == y.alpha, key


def _varied(data: AdapterData) -> AdapterData:
    """Per-layer ranks and alphas that differ from one another."""
    layers = {}
    for i, (key, l) in enumerate(sorted(data.layers.items())):
        r = (4, 2, 3)[i % 3]
        layers[key] = LoraLayer(l.component, l.module, l.down[:r].clone(), l.up[:, :r].clone(), (2.0, 3.0, 0.5)[i % 5 % 3])
    return AdapterData("lora", layers=layers, metadata=dict(data.metadata), format=data.format)


# ---------------------------------------------------------------- reading styler's own files


def test_styler_file_reads_as_diffusers_applies_it(trained, base_pipe):
    path, train_pipe = trained
    assert detect_format(path) == "peft"
    data = read_adapter(path)
    assert data.kind == "lora" and data.format == "peft" and data.metadata["styler.adapter"] == "t/x@1"
    assert {l.alpha for l in data.layers.values()} == {2.0} and {l.rank for l in data.layers.values()} == {4}
    assert data.components() == {"unet", "text_encoder"}
    assert data.layers[("unet", CONV)].down.shape == (4, W0, 3, 3)  # conv layers
    assert ("text_encoder", TE_Q) in data.layers  # live names: no text_model. prefix
    trained_deltas = _peft_deltas(train_pipe)
    _, loaded = _loaded(base_pipe, path)
    assert set(loaded) == set(trained_deltas) == set(data.layers)
    for key, layer in data.layers.items():
        assert torch.allclose(layer.delta(), loaded[key], atol=1e-7), key
        assert torch.allclose(layer.delta(), trained_deltas[key], atol=1e-7), key


def test_model_module_names_sees_through_peft_wrappers(trained, base_pipe):
    names = model_module_names(base_pipe)
    assert Q in names["unet"] and CONV in names["unet"] and TE_Q in names["text_encoder"]
    assert not any("lora" in n or "base_layer" in n for n in names["unet"])
    assert model_module_names(trained[1]) == names


def test_peft_round_trip(trained, tmp_path):
    data = read_adapter(trained[0])
    out = write_adapter(data, tmp_path / "p.safetensors", "peft", {"note": "x", "n": 3})
    blob = tmp_path / ("cd" * 32)
    blob.write_bytes(out.read_bytes())
    back = read_adapter(blob)
    _same_layers(data, back)
    assert back.metadata["styler.adapter"] == "t/x@1" and back.metadata["note"] == "x" and back.metadata["n"] == "3"
    assert not list(tmp_path.glob(".*tmp"))


def test_varied_ranks_and_alphas_survive_peft(trained, tmp_path):
    data = _varied(read_adapter(trained[0]))
    assert len({l.rank for l in data.layers.values()}) == 3 and len({l.alpha for l in data.layers.values()}) == 3
    out = write_adapter(data, tmp_path / "v.safetensors", "peft")
    meta = json.loads(safe_open(str(out), "pt").metadata()["lora_adapter_metadata"])
    assert meta["unet.rank_pattern"] and meta["unet.alpha_pattern"] and meta["text_encoder.alpha_pattern"]
    _same_layers(data, read_adapter(out))


@pytest.mark.parametrize("fmt", ["peft", "kohya", "diffusers"])
def test_diffusers_applies_exported_varied_ranks_and_alphas_exactly(trained, base_pipe, tmp_path, fmt):
    data = _varied(read_adapter(trained[0]))
    out = write_adapter(data, tmp_path / f"v-{fmt}.safetensors", fmt)
    _, loaded = _loaded(base_pipe, out)
    assert set(loaded) == set(data.layers)
    for key, layer in data.layers.items():
        assert torch.allclose(layer.delta(), loaded[key], atol=1e-7), key


def test_peft_without_metadata_is_alpha_rank(tmp_path):
    down, up = torch.randn(2, 32), torch.randn(32, 2)
    p = tmp_path / "nometa.safetensors"
    save_file({f"unet.{Q}.lora_A.weight": down, f"unet.{Q}.lora_B.weight": up,
               f"text_encoder.text_model.{TE_Q}.lora_A.weight": down.clone(),
               f"text_encoder.text_model.{TE_Q}.lora_B.weight": up.clone()}, p)
    data = read_adapter(p)
    assert data.layers[("unet", Q)].alpha == 2.0 and data.layers[("text_encoder", TE_Q)].alpha == 2.0


def test_dora_magnitudes_carried(base_pipe, tmp_path):
    g = torch.Generator().manual_seed(1)
    layers = {("unet", Q): LoraLayer("unet", Q, torch.randn(2, W0, generator=g), torch.randn(W0, 2, generator=g),
                                     1.0, torch.rand(W0, generator=g) + 0.5),
              ("unet", CONV): LoraLayer("unet", CONV, torch.randn(2, W0, 3, 3, generator=g),
                                        torch.randn(W0, 2, 1, 1, generator=g), 1.0, torch.rand(W0, generator=g) + 0.5)}
    data = AdapterData("lora", layers=layers)
    for fmt in ("peft", "diffusers"):
        back = read_adapter(write_adapter(data, tmp_path / f"dora-{fmt}.safetensors", fmt))
        for key, layer in layers.items():
            assert torch.equal(back.layers[key].magnitude, layer.magnitude), (fmt, key)
    # A1111 (extensions-builtin/Lora/network.py apply_weight_decompose) and ComfyUI (comfy/lora.py
    # weight_decompose, commit 41444b52) both divide .dora_scale by the norm of each input column of
    # W + ΔW; peft's magnitude is per output row, so a kohya file would be applied wrongly: refused
    with pytest.raises(UsageError, match=r"DoRA layer: a kohya file has no place for it .*--format peft or diffusers"):
        write_adapter(data, tmp_path / "dora-kohya.safetensors", "kohya")
    assert not (tmp_path / "dora-kohya.safetensors").exists()
    stem = "lora_unet_" + Q.replace(".", "_")
    # a kohya/LyCORIS file with per-output-row scales ([out, 1], LyCORIS wd_on_out) is read as peft's DoRA
    save_file({f"{stem}.lora_down.weight": torch.zeros(2, W0), f"{stem}.lora_up.weight": torch.zeros(W0, 2),
               f"{stem}.dora_scale": layers[("unet", Q)].magnitude.reshape(W0, 1)}, tmp_path / "out-side.safetensors")
    assert torch.equal(read_adapter(tmp_path / "out-side.safetensors").layers[("unet", Q)].magnitude,
                       layers[("unet", Q)].magnitude)
    save_file({f"{stem}.lora_down.weight": torch.zeros(2, W0), f"{stem}.lora_up.weight": torch.zeros(W0, 2),
               f"{stem}.dora_scale": torch.ones(1, W0)}, tmp_path / "in-side.safetensors")
    with pytest.raises(InputError, match=rf"DoRA scale of shape \[1, {W0}\]"):
        read_adapter(tmp_path / "in-side.safetensors")
    out = tmp_path / "dora-peft.safetensors"
    with safe_open(str(out), "pt") as f:
        assert f.get_tensor(f"unet.{CONV}.lora_magnitude_vector").shape == (1, W0, 1, 1)  # peft's conv layout
        assert json.loads(f.metadata()["lora_adapter_metadata"])["unet.use_dora"] is True
    base_pipe.load_lora_weights(str(out))
    try:
        for key, layer in layers.items():
            mod = base_pipe.unet.get_submodule(key[1])
            (adapter,) = list(mod.lora_magnitude_vector)
            assert torch.equal(mod.lora_magnitude_vector[adapter].weight.reshape(-1), layer.magnitude)
    finally:
        base_pipe.unload_lora_weights()


# ---------------------------------------------------------------- kohya and diffusers exports


def test_kohya_export_layout_and_round_trip(trained, tmp_path):
    data = read_adapter(trained[0])
    out = write_adapter(data, tmp_path / "k.safetensors", "kohya")
    assert detect_format(out) == "kohya"
    with safe_open(str(out), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
        alpha = f.get_tensor(f"lora_unet_{Q.replace('.', '_')}.alpha")
    assert f"lora_unet_{Q.replace('.', '_')}.lora_down.weight" in keys
    assert f"lora_unet_{CONV.replace('.', '_')}.lora_up.weight" in keys
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight" in keys
    assert alpha.dim() == 0 and float(alpha) == 2.0 and all(k.startswith(("lora_unet_", "lora_te_")) for k in keys)
    assert (meta["ss_network_dim"], meta["ss_network_alpha"], meta["styler.adapter"]) == ("4", "2", "t/x@1")
    back = read_adapter(out)
    assert back.format == "kohya"
    _same_layers(data, back)  # SD-1.5 naming without the module list
    _same_layers(data, read_adapter(out, module_names=model_module_names(trained[1])))


def test_kohya_varied_alphas_fold_into_one(trained, tmp_path):
    data = _varied(read_adapter(trained[0]))
    back = read_adapter(write_adapter(data, tmp_path / "kv.safetensors", "kohya"))
    assert {l.alpha for l in back.layers.values()} == {2.0}
    for key, layer in data.layers.items():
        assert back.layers[key].rank == layer.rank
        assert torch.allclose(back.layers[key].delta(), layer.delta(), atol=1e-7), key


@pytest.mark.parametrize("fmt", ["kohya", "diffusers", "peft"])
def test_exports_load_in_diffusers_like_the_styler_file(trained, base_pipe, tmp_path, fmt):
    path = trained[0]
    before = _image(base_pipe)
    styler_img, styler_deltas = _loaded(base_pipe, path)
    out = write_adapter(read_adapter(path), tmp_path / f"{fmt}.safetensors", fmt)
    img, deltas = _loaded(base_pipe, out)
    assert set(deltas) == set(styler_deltas)
    for key, d in styler_deltas.items():
        assert torch.allclose(deltas[key], d, atol=1e-7), key
    assert np.abs(img - styler_img).max() < 1e-5
    assert np.abs(img - before).max() > 1e-3
    assert np.array_equal(_image(base_pipe), before)  # unloading restored the base


def test_diffusers_export_bakes_alpha_and_older_layouts_read(trained, tmp_path):
    data = read_adapter(trained[0])
    out = write_adapter(data, tmp_path / "d.safetensors", "diffusers")
    with safe_open(str(out), "pt") as f:
        assert f"unet.{Q}.lora.down.weight" in f.keys()
        assert f"text_encoder.text_model.{TE_Q}.lora_linear_layer.up.weight" in f.keys()
    back = read_adapter(out)
    assert back.format == "diffusers" and {l.alpha for l in back.layers.values()} == {4.0}
    assert "lora_adapter_metadata" not in back.metadata  # it would rescale the baked weights in diffusers
    for key, layer in data.layers.items():
        assert torch.allclose(back.layers[key].delta(), layer.delta(), atol=1e-7)
    # LoRAAttnProcessor era: attn1.processor.to_q_lora / text_model....to_q_lora
    d, u = torch.randn(2, 32), torch.randn(32, 2)
    old = tmp_path / "old.safetensors"
    attn = Q.removesuffix(".to_q")
    save_file({f"unet.{attn}.processor.to_out_lora.down.weight": d, f"unet.{attn}.processor.to_out_lora.up.weight": u,
               "text_encoder.text_model.encoder.layers.0.self_attn.to_q_lora.down.weight": d.clone(),
               "text_encoder.text_model.encoder.layers.0.self_attn.to_q_lora.up.weight": u.clone()}, old)
    assert detect_format(old) == "diffusers"
    assert set(read_adapter(old).layers) == {("unet", f"{attn}.to_out.0"), ("text_encoder", TE_Q)}


# ---------------------------------------------------------------- fitting a base


def test_check_compatible(trained, base_pipe, tmp_path):
    data = read_adapter(trained[0])
    check_compatible(data, base_pipe)
    check_compatible(data, trained[1])  # also with peft layers in place
    bad = dict(data.layers)
    bad[("unet", Q)] = LoraLayer("unet", Q, torch.randn(4, 48), torch.randn(W0, 4), 4.0)
    out = write_adapter(AdapterData("lora", layers=bad), tmp_path / "other.safetensors", "kohya")
    with pytest.raises(InputError) as err:
        check_compatible(read_adapter(out), base_pipe)
    assert err.value.message == (f"adapter does not fit this base: first mismatch unet.{Q}: "
                                 f"adapter ΔW [{W0}, 48] vs model weight [{W0}, {W0}]")
    ghost = AdapterData("lora", layers={("unet", "down_blocks.7.x"): LoraLayer("unet", "down_blocks.7.x",
                                                                               torch.zeros(1, 2), torch.zeros(2, 1), 1.0)})
    with pytest.raises(InputError, match="has no module down_blocks.7.x"):
        check_compatible(ghost, base_pipe)
    ti = AdapterData("textual-inversion", embeddings={"<t>": torch.zeros(1, 768)})
    with pytest.raises(InputError, match="768 dims vs the text encoder's 64"):
        check_compatible(ti, base_pipe)


def test_kohya_sd15_names_without_a_module_list(tmp_path):
    names = ["down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_out.0", "mid_block.resnets.1.time_emb_proj",
             "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.0.proj", "up_blocks.1.upsamplers.0.conv",
             "down_blocks.1.resnets.0.conv_shortcut", "up_blocks.3.attentions.0.proj_out"]
    te = ["encoder.layers.11.self_attn.out_proj", "encoder.layers.3.mlp.fc2"]
    tensors = {}
    for comp, module in [("unet", n) for n in names] + [("text_encoder", n) for n in te]:
        stem = ("lora_unet_" if comp == "unet" else "lora_te_text_model_") + module.replace(".", "_")
        tensors.update({f"{stem}.lora_down.weight": torch.zeros(1, 4), f"{stem}.lora_up.weight": torch.zeros(4, 1),
                        f"{stem}.alpha": torch.tensor(0.5)})
    save_file(tensors, tmp_path / "sd15.safetensors")
    data = read_adapter(tmp_path / "sd15.safetensors")
    assert set(data.layers) == {("unet", n) for n in names} | {("text_encoder", n) for n in te}
    assert {l.alpha for l in data.layers.values()} == {0.5}


def test_kohya_name_not_in_base_is_named(trained, tmp_path):
    p = tmp_path / "sdxl_like.safetensors"
    save_file({"lora_unet_input_blocks_4_1_proj_in.lora_down.weight": torch.zeros(2, 32),
               "lora_unet_input_blocks_4_1_proj_in.lora_up.weight": torch.zeros(32, 2)}, p)
    with pytest.raises(InputError, match="lora_unet_input_blocks_4_1_proj_in.lora_down.weight names no module"):
        read_adapter(p, module_names=model_module_names(trained[1]))


# ---------------------------------------------------------------- embeddings and refusals


def test_textual_inversion_files(tmp_path):
    vec = torch.randn(2, 32)
    p = tmp_path / "ti.safetensors"
    save_file({"<mifu>": vec}, p, metadata={"styler.ti_tokens": json.dumps(["<mifu>", "<mifu>_1"])})
    assert detect_format(p) == "textual-inversion"
    data = read_adapter(p)
    assert data.kind == "textual-inversion" and torch.equal(data.embeddings["<mifu>"], vec)
    out = write_adapter(data, tmp_path / "copy.safetensors", "peft")
    assert torch.equal(read_adapter(out).embeddings["<mifu>"], vec)
    a1111 = tmp_path / "style.safetensors"
    save_file({"emb_params": vec}, a1111)
    assert detect_format(a1111) == "textual-inversion"
    assert list(read_adapter(a1111).embeddings) == ["style"]


def test_unexpected_and_unsupported_keys(tmp_path):
    p = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2, 1, 1),
               "model.diffusion_model.out.2.weight": torch.zeros(2, 2, 1, 1)}, p)
    with pytest.raises(InputError, match=r"unexpected keys \(e.g. model.diffusion_model.input_blocks.0.0.weight, "
                                         r"model.diffusion_model.out.2.weight\): not a LoRA or embedding") as err:
        detect_format(p)
    assert str(p) in err.value.message
    loha = tmp_path / "loha.safetensors"
    save_file({"lora_unet_mid_block_attentions_0_proj_in.hada_w1_a": torch.zeros(2, 2),
               "lora_unet_mid_block_attentions_0_proj_in.alpha": torch.tensor(1.0)}, loha)
    assert detect_format(loha) == "kohya"
    with pytest.raises(InputError, match="mid_block.attentions.0.proj_in has no hada_w1_b; the LoHa layer is incomplete"):
        read_adapter(loha)
    glora = tmp_path / "glora.safetensors"
    save_file({"lora_unet_mid_block_attentions_0_proj_in.a1.weight": torch.zeros(2, 2)}, glora)
    with pytest.raises(InputError, match=r"proj_in.a1.weight is a LyCORIS GLoRA layer; styler reads LoRA/LoCon, LoHa"):
        read_adapter(glora)
    half = tmp_path / "half.safetensors"
    save_file({f"unet.{Q}.lora_A.weight": torch.zeros(2, 32)}, half)
    with pytest.raises(InputError, match="has no up weight"):
        read_adapter(half)


@pytest.mark.parametrize("name", ["x.ckpt", "x.pt", "x.pth", "x.bin", "x.pkl"])
def test_pickles_refused_unopened(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"\x80\x04garbage that would be a pickle")
    for fn in (detect_format, read_adapter):
        with pytest.raises(InputError, match="styler never unpickles; convert it to .safetensors"):
            fn(p)


def test_other_bad_paths(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="not a .safetensors file"):
        read_adapter(tmp_path / "x.txt")
    with pytest.raises(InputError, match="does not exist"):
        read_adapter(tmp_path / "missing.safetensors")
    blob = tmp_path / ("ab" * 32)  # registry blobs have no suffix; the header decides
    blob.write_bytes(b"\x80\x04garbage that would be a pickle")
    with pytest.raises(InputError, match="not a valid safetensors file"):
        read_adapter(blob)
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 3)
    with pytest.raises(InputError, match="not a valid safetensors file"):
        read_adapter(tmp_path / "broken.safetensors")


# ---------------------------------------------------------------- files other programs read


def test_written_files_get_the_umask_permissions(tmp_path, trained):
    # mkstemp made them 0600, so another user's A1111/ComfyUI could not read an export
    old = os.umask(0o022)
    try:
        data = read_adapter(trained[0])
        modes = {fmt: write_adapter(data, tmp_path / f"m-{fmt}.safetensors", fmt).stat().st_mode & 0o777
                 for fmt in ("kohya", "peft", "diffusers")}
    finally:
        os.umask(old)
    assert modes == {"kohya": 0o644, "peft": 0o644, "diffusers": 0o644}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-diffusers.safetensors", "m-kohya.safetensors",
                                                          "m-peft.safetensors"]


def test_text_encoder_keys_have_text_model_paths(trained, tmp_path):
    # Verified against ComfyUI's comfy/lora.py (model_lora_keys_clip, commit 41444b52): it maps
    # "text_encoder.text_model.encoder.layers.N.<module>" (+ .lora_A/.lora_B, .lora.up, .lora_linear_layer)
    # and nothing without text_model.; diffusers 0.32 + transformers 4.47 fail on the old keys (IndexError).
    data = read_adapter(trained[0])
    for fmt, inner in (("peft", "lora_A.weight"), ("diffusers", "lora_linear_layer.down.weight")):
        out = write_adapter(data, tmp_path / f"te-{fmt}.safetensors", fmt)
        with safe_open(str(out), "pt") as f:
            te = [k for k in f.keys() if k.startswith("text_encoder.")]
        assert te and all(k.startswith("text_encoder.text_model.encoder.layers.") for k in te), te[:3]
        assert f"text_encoder.text_model.{TE_Q}.{inner}" in te
        assert set(read_adapter(out).layers) == set(data.layers)  # and read back to live paths
    with safe_open(str(trained[0]), "pt") as f:  # styler's own file, as training writes it
        te = [k for k in f.keys() if k.startswith("text_encoder.")]
    assert te and all(k.startswith("text_encoder.text_model.") for k in te)
    # files with transformers-5 paths (what styler wrote before) still read, alpha patterns in either form
    down, up = torch.randn(2, 32), torch.randn(32, 2)
    meta = {"lora_adapter_metadata": json.dumps({"text_encoder.r": 2, "text_encoder.lora_alpha": 2.0,
                                                 "text_encoder.alpha_pattern": {f"text_model.{TE_Q}": 1.0}})}
    for prefix in ("", "text_model."):
        p = tmp_path / f"old-{prefix or 'none'}.safetensors"
        save_file({f"text_encoder.{prefix}{TE_Q}.lora_A.weight": down, f"text_encoder.{prefix}{TE_Q}.lora_B.weight": up}, p,
                  metadata=meta)
        layer = read_adapter(p).layers[("text_encoder", TE_Q)]
        assert layer.alpha == 1.0 and torch.equal(layer.up, up)


def _big_adapter(n=12) -> AdapterData:
    g = torch.Generator().manual_seed(1)
    layers = {}
    for i in range(n):  # 12 layers of 2·16·1024 floats: 1.5 MiB, past kohya's 1 MiB legacy-hash offset
        m = f"down_blocks.{i}.attentions.0.transformer_blocks.0.attn1.to_q"
        layers[("unet", m)] = LoraLayer("unet", m, torch.randn(16, 1024, generator=g),
                                        torch.randn(1024, 16, generator=g), 8.0)
    return AdapterData("lora", layers=layers, metadata={"styler.adapter": "big@1", "ss_note": "书法, \"q\"\n"})


def test_kohya_export_is_byte_deterministic_with_kohya_hashes(tmp_path):
    import hashlib
    import subprocess
    import sys

    from safetensors.torch import save

    from styler.adapters.formats import addnet_hash

    code = ("import sys; from tests.adapters.test_formats import _big_adapter; "
            "from styler.adapters.formats import write_adapter; write_adapter(_big_adapter(), sys.argv[1], 'kohya')")
    outs = [tmp_path / f"k{i}.safetensors" for i in range(2)]
    for out in outs:  # safetensors' own writer orders metadata differently in every process
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, cwd=Path(__file__).parents[2])
    raw = outs[0].read_bytes()
    assert raw == outs[1].read_bytes() == write_adapter(_big_adapter(), tmp_path / "k.safetensors", "kohya").read_bytes()
    # kohya-ss/sd-scripts library/train_util.py (commit 48d368fa), run on this file: sshs_model_hash is
    # addnet_hash_safetensors = sha256 of everything after the 8-byte length and the JSON header (A1111
    # keeps it as the LoRA's hash, civitai's AutoV3); sshs_legacy_hash is sha256 of the 64 KiB at 1 MiB of
    # safetensors.torch.save(tensors, the ss_* metadata only), 8 hex digits.
    n = int.from_bytes(raw[:8], "little")
    with safe_open(str(outs[0]), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    assert meta["sshs_model_hash"] == hashlib.sha256(raw[8 + n:]).hexdigest() == addnet_hash(raw)
    ss_only = save(tensors, {k: v for k, v in meta.items() if k.startswith("ss_")})
    assert meta["sshs_legacy_hash"] == hashlib.sha256(ss_only[0x100000:0x110000]).hexdigest()[:8]
    assert meta["sshs_legacy_hash"] != hashlib.sha256(b"").hexdigest()[:8]  # the file is past 1 MiB
    assert meta["ss_note"] == "书法, \"q\"\n" and json.loads(raw[8:8 + n])  # a header safetensors reads
    # stale hashes of another file are never carried into an export
    stale = AdapterData("lora", _big_adapter(2).layers, metadata={"sshs_model_hash": "0" * 64, "sshs_legacy_hash": "0" * 8})
    out = write_adapter(stale, tmp_path / "s.safetensors", "peft")
    assert not any(k.startswith("sshs_") for k in safe_open(str(out), "pt").metadata())
    k = write_adapter(stale, tmp_path / "s-k.safetensors", "kohya")
    assert safe_open(str(k), "pt").metadata()["sshs_model_hash"] == addnet_hash(k.read_bytes())


# SGM/LDM UNet names (the original Stable Diffusion layout), written here from the layout itself:
# input_blocks[1 + b·(L+1) + l] = [ResBlock, SpatialTransformer], input_blocks[(b+1)·(L+1)] = [Downsample "op"],
# middle_block = [Res, Attn, Res], output_blocks[b·(L+1) + l] = [Res, Attn, Upsample "conv" (index 1 without
# attention)]; ResBlock in_layers.2 / emb_layers.1 / out_layers.3 / skip_connection = conv1 / time_emb_proj /
# conv2 / conv_shortcut. diffusers' lora_state_dict (0.42, _maybe_map_sgm_blocks_to_diffusers) reads them so.
_RES = {"conv1": "in_layers_2", "time_emb_proj": "emb_layers_1", "conv2": "out_layers_3", "conv_shortcut": "skip_connection"}


def _ldm_name(module: str, names: set, L: int) -> str | None:
    p = module.split(".")
    inner = {"resnets": 0, "attentions": 1}
    if p[0] == "down_blocks":
        b = int(p[1])
        if p[2] == "downsamplers":
            return f"input_blocks_{(b + 1) * (L + 1)}_0_op"
        head, rest = f"input_blocks_{1 + b * (L + 1) + int(p[3])}_{inner[p[2]]}", p[4:]
    elif p[0] == "mid_block":
        head, rest = {"resnets.0": "middle_block_0", "attentions.0": "middle_block_1",
                      "resnets.1": "middle_block_2"}[f"{p[1]}.{p[2]}"], p[3:]
    elif p[0] == "up_blocks":
        b = int(p[1])
        if p[2] == "upsamplers":
            attn = any(n.startswith(f"up_blocks.{b}.attentions.") for n in names)
            return f"output_blocks_{b * (L + 1) + L}_{2 if attn else 1}_conv"
        head, rest = f"output_blocks_{b * (L + 1) + int(p[3])}_{inner[p[2]]}", p[4:]
    else:
        return None
    if "resnets" in p[:3]:
        rest = [_RES[".".join(rest)]]
    return f"{head}_{'_'.join(rest)}"


def test_kohya_and_locon_files_with_ldm_unet_names_read_as_diffusers_converts_them(base_pipe, tmp_path):
    names = model_module_names(base_pipe)
    unet = {n: m for n, m in base_pipe.unet.named_modules() if n in names["unet"]}
    g = torch.Generator().manual_seed(3)
    tensors, expect = {}, {}
    for module, mod in sorted(unet.items()):
        ldm = _ldm_name(module, set(unet), L=1)  # the tiny UNet has layers_per_block 1
        if ldm is None:
            continue
        w = mod.weight
        down = torch.randn(2, *w.shape[1:], generator=g)  # LoCon: a full-size conv down, a 1x1 up
        up = torch.randn(w.shape[0], 2, *([1, 1] if w.dim() == 4 else []), generator=g)
        stem = f"lora_unet_{ldm}"
        tensors.update({f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up, f"{stem}.alpha": torch.tensor(1.0)})
        expect[("unet", module)] = (down, up)
    te = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    tensors.update({f"{te}.lora_down.weight": torch.ones(2, 64), f"{te}.lora_up.weight": torch.ones(64, 2)})
    kinds = {m.rsplit(".", 1)[-1] for _, m in expect}
    assert {"to_q", "proj_in", "conv1", "conv2", "time_emb_proj", "conv"} <= kinds  # also up/down samplers
    assert any("conv_shortcut" in m for _, m in expect) and any(".downsamplers." in m for _, m in expect)
    p = tmp_path / "ldm.safetensors"
    save_file(tensors, p)
    assert detect_format(p) == "kohya"
    data = read_adapter(p, module_names=names)
    assert set(data.layers) == set(expect) | {("text_encoder", TE_Q)}
    for key, (down, up) in expect.items():
        layer = data.layers[key]
        assert torch.equal(layer.down, down) and torch.equal(layer.up, up) and layer.alpha == 1.0, key
    check_compatible(data, base_pipe)
    # without the base's module list: SD-1.5 (layers_per_block 2) as diffusers maps it
    sd15 = {"input_blocks_1_1_proj_in": "down_blocks.0.attentions.0.proj_in",
            "input_blocks_3_0_op": "down_blocks.0.downsamplers.0.conv",
            "input_blocks_4_0_skip_connection": "down_blocks.1.resnets.0.conv_shortcut",
            "middle_block_1_transformer_blocks_0_attn2_to_out_0": "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0",
            "middle_block_2_emb_layers_1": "mid_block.resnets.1.time_emb_proj",
            "output_blocks_2_1_conv": "up_blocks.0.upsamplers.0.conv",
            "output_blocks_3_0_in_layers_2": "up_blocks.1.resnets.0.conv1",
            "output_blocks_8_2_conv": "up_blocks.2.upsamplers.0.conv",
            "output_blocks_11_1_transformer_blocks_0_ff_net_2": "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2"}
    tensors = {}
    for flat in sd15:
        tensors.update({f"lora_unet_{flat}.lora_down.weight": torch.zeros(1, 4), f"lora_unet_{flat}.lora_up.weight": torch.zeros(4, 1)})
    save_file(tensors, tmp_path / "sd15-ldm.safetensors")
    assert set(read_adapter(tmp_path / "sd15-ldm.safetensors").layers) == {("unet", m) for m in sd15.values()}
