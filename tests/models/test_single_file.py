"""The single-file (original SD layout) load path, exercised offline with the tiny base written
as one .safetensors checkpoint by styler.models.checkpoint.to_single_file."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from styler.errors import InputError
from styler.models.checkpoint import to_single_file
from styler.models.load import ENV_SINGLE_FILE_CONFIG, load_pipeline
from styler.models.resolve import BaseModel, resolve_base

pytestmark = pytest.mark.slow  # builds or runs the tiny pipeline

COMPONENTS = ("unet", "vae", "text_encoder")


@pytest.fixture(scope="module")
def single_file(tiny_base_dir, tmp_path_factory) -> Path:
    return to_single_file(tiny_base_dir, tmp_path_factory.mktemp("single") / "tiny-sd.safetensors")


def _image(pipe):
    import torch

    return pipe("a red square", num_inference_steps=2, height=64, width=64, output_type="np",
                generator=torch.Generator("cpu").manual_seed(1234)).images


def _assert_same_weights(pipe, reference: dict[str, dict]) -> None:
    import torch

    for comp in COMPONENTS:
        got = dict(getattr(pipe, comp).named_parameters())
        want = reference[comp]
        assert set(got) == set(want), f"{comp}: parameter names differ: {sorted(set(got) ^ set(want))[:5]}"
        for name, tensor in want.items():
            assert got[name].device.type == "cpu", f"{comp}.{name} was not loaded ({got[name].device})"
            assert torch.equal(got[name], tensor), f"{comp}.{name} differs"


def test_file_layout_and_metadata(single_file):
    raw = single_file.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__")
    assert meta["format"] == "pt" and "styler" in meta["written_by"]
    # diffusers recognises an SD-1.x checkpoint by these names
    assert "model.diffusion_model.input_blocks.0.0.weight" in header
    assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in header
    assert header["first_stage_model.decoder.mid.attn_1.q.weight"]["shape"][2:] == [1, 1]  # 1x1 conv, not Linear
    assert {k.split(".")[0] for k in header} == {"model", "first_stage_model", "cond_stage_model"}
    assert [p.name for p in single_file.parent.iterdir()] == [single_file.name]  # no temp file left behind


def test_single_file_loads_same_weights_and_pixels(single_file, tiny_base_dir):
    folder_pipe = load_pipeline(BaseModel(name="tiny", kind="folder", path=tiny_base_dir))
    file_pipe = load_pipeline(BaseModel(name=single_file.stem, kind="single_file", path=single_file),
                              config=tiny_base_dir)
    assert type(file_pipe.scheduler) is type(folder_pipe.scheduler)
    assert dict(file_pipe.scheduler.config) == dict(folder_pipe.scheduler.config)
    _assert_same_weights(file_pipe, {c: dict(getattr(folder_pipe, c).named_parameters()) for c in COMPONENTS})
    a, b = _image(folder_pipe), _image(file_pipe)
    assert a.shape == (1, 64, 64, 3)
    assert (a == b).all()


def test_resolve_and_env_config(single_file, tiny_base_dir, monkeypatch):
    from safetensors.torch import load_file

    from styler.models.resolve import weight_files

    monkeypatch.setenv(ENV_SINGLE_FILE_CONFIG, str(tiny_base_dir))
    base = resolve_base(str(single_file))
    assert base.kind == "single_file" and base.path == single_file.resolve()
    pipe = load_pipeline(base)
    # compare with the folder's weight files as saved; CLIPTextModel's saved names may omit text_model.
    reference = {}
    for comp in COMPONENTS:
        saved = {}
        for f in weight_files(tiny_base_dir / comp):
            saved.update(load_file(str(f)))
        names = set(dict(getattr(pipe, comp).named_parameters()))
        reference[comp] = {(k if k in names else k.removeprefix("text_model.")): v for k, v in saved.items()}
    _assert_same_weights(pipe, reference)


def test_refuses_bad_inputs(tiny_base_dir, tmp_path):
    with pytest.raises(InputError, match="safetensors"):
        to_single_file(tiny_base_dir, tmp_path / "model.ckpt")
    with pytest.raises(InputError, match="StableDiffusionPipeline"):
        to_single_file(tmp_path, tmp_path / "model.safetensors")
    assert not (tmp_path / "model.safetensors").exists()


def test_sd15_sized_layout_matches_diffusers_reader():
    """The block numbering at SD-1.5's real size (2 layers per block, 4 blocks), checked on empty
    (meta) weights against the canonical names and diffusers' own LDM->diffusers readers."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    from styler.models.checkpoint import _rename, _unet_table, _vae_table

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
            attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    us, vs = unet.state_dict(), vae.state_dict()
    ul = _rename(us, _unet_table(dict(unet.config)), "unet")
    vl = _rename(vs, _vae_table(dict(vae.config)), "vae")
    for key in ("output_blocks.11.0.skip_connection.weight", "input_blocks.11.0.in_layers.0.weight",
                "input_blocks.3.0.op.weight", "input_blocks.9.0.op.weight", "output_blocks.2.1.conv.weight",
                "output_blocks.5.2.conv.weight", "output_blocks.8.2.conv.weight", "middle_block.1.proj_in.weight",
                "output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight"):
        assert key in ul, key
    for key in ("decoder.up.0.block.0.nin_shortcut.weight", "decoder.up.3.upsample.conv.weight",
                "encoder.down.1.block.0.nin_shortcut.weight", "encoder.mid.attn_1.proj_out.weight"):
        assert key in vl, key
    back = convert_ldm_unet_checkpoint({"model.diffusion_model." + k: t for k, t in ul.items()}, dict(unet.config))
    assert set(back) == set(us) and all(back[k] is us[k] for k in us)
    back = convert_ldm_vae_checkpoint({"first_stage_model." + k: t for k, t in vl.items()}, dict(vae.config))
    assert set(back) == set(vs)
