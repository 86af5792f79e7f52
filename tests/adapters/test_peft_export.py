"""`styler adapters export --format peft` with alpha != rank: alpha/rank is folded into lora_B and
the metadata says alpha = rank, so diffusers' `load_lora_weights` applies exactly styler's fold
whether or not it reads the alpha metadata (ComfyUI and older diffusers, 0.32 for one, read none)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from registry import Adapter

from styler.adapters.library import export_payload
from styler.adapters.lora import AdapterData, LoraLayer
from styler.adapters.mixing import MixEntry, WeightMixer

pytestmark = pytest.mark.slow  # runs the tiny pipeline

Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
V = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v"
CONV = "down_blocks.0.resnets.0.conv1"
TE_Q = "encoder.layers.0.self_attn.q_proj"
# (component, module, rank, alpha): scales 0.5, 0.5, 3 and 0.25, none of them 1
LAYERS = [("unet", Q, 4, 2.0), ("unet", V, 4, 2.0), ("unet", CONV, 2, 6.0), ("text_encoder", TE_Q, 4, 1.0)]


@pytest.fixture(scope="module")
def pipe(tiny_base_dir):
    from styler.models.load import load_pipeline
    from styler.models.resolve import BaseModel

    return load_pipeline(BaseModel("tiny", "tiny", tiny_base_dir))


def _module(pipe, component: str, module: str):
    root = getattr(pipe, component)
    try:
        return root.get_submodule(module)
    except AttributeError:
        return root.get_submodule(f"text_model.{module}")


def _adapter(pipe) -> AdapterData:
    g = torch.Generator().manual_seed(7)
    layers = {}
    for comp, name, rank, alpha in LAYERS:
        w = _module(pipe, comp, name).weight
        down = torch.randn(rank, *w.shape[1:], generator=g) * 0.1
        up = torch.randn(w.shape[0], rank, *([1, 1] if w.dim() == 4 else []), generator=g) * 0.1
        layers[(comp, name)] = LoraLayer(comp, name, down, up, alpha)
    return AdapterData("lora", layers=layers)


def _input(mod):
    g = torch.Generator().manual_seed(1)
    if isinstance(mod, torch.nn.Conv2d) or isinstance(getattr(mod, "base_layer", None), torch.nn.Conv2d):
        return torch.randn(2, (getattr(mod, "base_layer", mod)).in_channels, 8, 8, generator=g)
    return torch.randn(3, 5, getattr(mod, "base_layer", mod).in_features, generator=g)


def _outputs(pipe, keys) -> dict:
    with torch.no_grad():
        return {k: _module(pipe, *k)(_input(_module(pipe, *k))) for k in keys}


def test_a_peft_export_is_exact_in_diffusers_with_or_without_its_alpha_metadata(pipe, tmp_path):
    data = _adapter(pipe)
    mixer = WeightMixer(pipe)
    mixer.apply([MixEntry("ink", data, 1.0)])  # styler's own fold: W + (alpha/rank)·B·A
    folded = _outputs(pipe, data.layers)
    mixer.restore()
    base = _outputs(pipe, data.layers)

    record = Adapter(name="ink", version=1, method="imported")
    out = tmp_path / "ink-peft.safetensors"
    out.write_bytes(export_payload(record, data, "peft"))
    with safe_open(str(out), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    cfg = json.loads(meta["lora_adapter_metadata"])
    assert cfg["unet.lora_alpha"] == cfg["unet.r"] == 4 and cfg["unet.alpha_pattern"] == {CONV: 2.0}
    assert cfg["text_encoder.lora_alpha"] == cfg["text_encoder.r"] == 4
    for (comp, name, rank, alpha), layer in zip(LAYERS, data.layers.values()):
        stem = f"{comp}.{'text_model.' if comp == 'text_encoder' else ''}{name}"
        assert torch.equal(tensors[f"{stem}.lora_A.weight"], layer.down)
        torch.testing.assert_close(tensors[f"{stem}.lora_B.weight"], layer.up * (alpha / rank), rtol=0, atol=1e-7)

    bare = tmp_path / "ink-peft-no-alpha.safetensors"  # what a loader that reads no alpha sees
    save_file(tensors, str(bare), metadata={"format": "pt"})
    for path in (out, bare):
        pipe.load_lora_weights(str(path), adapter_name="ink")
        try:
            loaded = _outputs(pipe, data.layers)
        finally:
            pipe.unload_lora_weights()
        for key in data.layers:
            assert (loaded[key] - base[key]).abs().max() > 1e-4, key  # the adapter does change the layer
            torch.testing.assert_close(loaded[key], folded[key], rtol=1e-5, atol=1e-5, msg=f"{key} from {path.name}")


def test_styler_stored_files_keep_their_alpha(pipe, tmp_path):
    """Only the export folds: the registry's own file (and a kohya export) keep alpha != rank."""
    from styler.adapters.formats import read_adapter, write_adapter

    data = _adapter(pipe)
    back = read_adapter(write_adapter(data, tmp_path / "stored.safetensors", "peft"))
    assert {k: l.alpha for k, l in back.layers.items()} == {k: l.alpha for k, l in data.layers.items()}
    exported = tmp_path / "exported.safetensors"
    exported.write_bytes(export_payload(Adapter(name="ink", version=1), data, "peft"))
    again = read_adapter(exported)
    for key, layer in data.layers.items():
        assert again.layers[key].alpha == layer.rank
        torch.testing.assert_close(again.layers[key].delta(), layer.delta(), rtol=0, atol=1e-7)
