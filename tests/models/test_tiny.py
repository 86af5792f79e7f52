"""The tiny base: tokenizer, deterministic build, loading and a 64 px generation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from styler.models.tiny import TINY_VERSION, build_tiny, ensure_tiny, is_built, tiny_dir
from styler.models.tokenizer import BOS, EOS, MAX_MERGES, vocab_and_merges, write_tokenizer


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clip_tokenizer(tmp_path_factory):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(write_tokenizer(tmp_path_factory.mktemp("tok"))))


def test_tokenizer_files_are_clip_format(tmp_path):
    folder = write_tokenizer(tmp_path / "tok")
    assert sorted(p.name for p in folder.iterdir()) == [
        "merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
    config = json.loads((folder / "tokenizer_config.json").read_text("utf-8"))
    assert config["model_max_length"] == 77
    assert config["tokenizer_class"] == "CLIPTokenizer"
    assert (config["bos_token"], config["eos_token"], config["pad_token"], config["unk_token"]) == (BOS, EOS, EOS, EOS)
    vocab, merges = vocab_and_merges()
    assert 1000 <= len(merges) <= MAX_MERGES
    assert len(vocab) == 512 + len(merges) + 2
    assert list(vocab)[-2:] == [BOS, EOS]
    assert (folder / "merges.txt").read_text("utf-8").startswith("#version: 0.2\n")
    # deterministic: a second write gives the same bytes
    assert _hashes(folder) == _hashes(write_tokenizer(tmp_path / "again"))


def test_tokenizer_chinese_and_english_round_trip(clip_tokenizer):
    tok = clip_tokenizer
    assert tok.model_max_length == 77
    vocab = vocab_and_merges()[0]
    ids = tok("书法 永").input_ids
    assert ids[0] == vocab[BOS] and ids[-1] == vocab[EOS]
    assert tok.convert_ids_to_tokens(ids[1:-1]) == ["ä¹¦æ³ķ</w>", "æ°¸</w>"]  # 书法, 永: one learned token each
    assert tok.unk_token_id not in ids[1:-1]
    assert tok.decode(ids, skip_special_tokens=True) == "书法 永"
    for text in ("a photo of a cat in watercolor style", "pixel art dragon", "山 水 风 月 花 鸟", "龘 😀 ok"):
        ids = tok(text).input_ids
        assert vocab[EOS] not in ids[1:-1], text  # never unk (unk is <|endoftext|>)
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert len(tok("watercolor").input_ids) == 3  # a whole learned word


def test_tokenizer_pads_and_truncates_to_77(clip_tokenizer):
    tok = clip_tokenizer
    eos = vocab_and_merges()[0][EOS]
    enc = tok("书法 永", padding="max_length", max_length=tok.model_max_length, truncation=True)
    assert len(enc.input_ids) == 77 and enc.input_ids[3:] == [eos] * 74
    long = tok("cat " * 200, padding="max_length", max_length=tok.model_max_length, truncation=True)
    assert len(long.input_ids) == 77 and long.input_ids[-1] == eos


@pytest.mark.slow
def test_tiny_layout(tiny_base_dir):
    assert is_built(tiny_base_dir)
    index = json.loads((tiny_base_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["requires_safety_checker"] is False
    unet = json.loads((tiny_base_dir / "unet" / "config.json").read_text())
    text = json.loads((tiny_base_dir / "text_encoder" / "config.json").read_text())
    vae = json.loads((tiny_base_dir / "vae" / "config.json").read_text())
    sched = json.loads((tiny_base_dir / "scheduler" / "scheduler_config.json").read_text())
    assert unet["cross_attention_dim"] == text["hidden_size"]
    assert text["max_position_embeddings"] == 77 and text["vocab_size"] == len(vocab_and_merges()[0])
    from styler.models.tiny import manifest

    assert len(vae["block_out_channels"]) == 4 and vae["latent_channels"] == 4
    assert vae["scaling_factor"] == manifest()["configs"]["vae"]["scaling_factor"]  # measured by the pretraining
    assert sched["_class_name"] == "DDIMScheduler" and sched["beta_schedule"] == "scaled_linear"
    assert (sched["steps_offset"], sched["set_alpha_to_one"], sched["clip_sample"]) == (1, False, False)
    tok_cfg = json.loads((tiny_base_dir / "tokenizer" / "tokenizer_config.json").read_text())
    assert tok_cfg["model_max_length"] == 77


@pytest.mark.slow
def test_build_is_deterministic_and_atomic(tiny_base_dir, tmp_path):
    again = build_tiny(tmp_path / "tiny")
    assert _hashes(again) == _hashes(tiny_base_dir)
    # a second builder finding a complete build keeps it and leaves no temp folders behind
    before = (again / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert build_tiny(tmp_path / "tiny") == again
    assert (again / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


@pytest.mark.slow
def test_random_weights_differ_from_the_shipped_ones(tiny_base_dir, tmp_path):
    other = build_tiny(tmp_path / "tiny", seed=1)
    assert json.loads((other / "styler_tiny.json").read_text())["weights"] == "random"
    name = "unet/diffusion_pytorch_model.safetensors"
    assert _hashes(other)[name] != _hashes(tiny_base_dir)[name]


@pytest.mark.slow
def test_ensure_tiny_uses_existing_build(tiny_home):
    assert tiny_dir(tiny_home) == tiny_home / "models" / "tiny" / TINY_VERSION
    assert ensure_tiny() == tiny_dir(tiny_home)
    assert ensure_tiny(tiny_home) == tiny_dir(tiny_home)


@pytest.mark.slow
def test_loads_through_the_normal_loader_and_generates_64px(tiny_home):
    import numpy as np
    import torch

    from styler.models import load_pipeline, noise_scheduler, resolve_base

    base = resolve_base("tiny")
    assert base.kind == "tiny" and "toy" in base.detail
    pipe = load_pipeline(base)
    assert pipe.safety_checker is None
    assert pipe.tokenizer.model_max_length == 77

    def render():
        return pipe("书法 永", num_inference_steps=2, height=64, width=64,
                    generator=torch.Generator().manual_seed(0), output_type="pil").images[0]

    first, second = render(), render()
    assert first.size == (64, 64)
    assert np.array_equal(np.asarray(first), np.asarray(second))
    ddpm = noise_scheduler(pipe)
    assert type(ddpm).__name__ == "DDPMScheduler" and ddpm.config.num_train_timesteps == 1000
