"""A1111-compatible "parameters" text, its parser, and the PNG chunks written/read by pngmeta."""

from __future__ import annotations

import io
import json
import os

import pytest
from PIL import Image

from styler import __version__
from styler.errors import InputError, WriteError
from styler.generate.pngmeta import (
    A1111_SAMPLERS,
    GenParams,
    a1111_parameters,
    parse_a1111_parameters,
    parse_lora_hashes,
    read_png_meta,
    save_png,
)

MODEL_SHA = "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa"
ANIME_SHA = "0123456789abcdef" * 4
WATER_SHA = "fedcba9876543210" * 4
VERSION = f"Version: styler {__version__}"


def txt2img() -> GenParams:
    return GenParams(prompt="a cat in a hat", steps=30, guidance=7.5, seed=42, width=512, height=512,
                     sampler="ddim", model_name="sd15", model_hash=MODEL_SHA)


def img2img() -> GenParams:
    return GenParams(
        prompt="portrait of a woman", negative="blurry, lowres", steps=25, guidance=7, seed=1234,
        width=768, height=512, sampler="euler-a", model_name="sd15", model_hash=MODEL_SHA,
        adapters=[{"name": "anime", "weight": 0.8, "hash": ANIME_SHA},
                  {"name": "watercolor", "weight": 0.5, "te_weight": 0.3, "hash": WATER_SHA}],
        strength=0.6, kind="img2img", extra={"schedule_type": "Karras"})


def test_txt2img_text_exact():
    assert a1111_parameters(txt2img()) == (
        "a cat in a hat\n"
        "Steps: 30, Sampler: DDIM, CFG scale: 7.5, Seed: 42, Size: 512x512, Model hash: 6ce0161689, "
        f"Model: sd15, {VERSION}")


def test_img2img_text_exact_with_negative_and_two_loras():
    assert a1111_parameters(img2img()) == (
        "portrait of a woman <lora:anime:0.8> <lora:watercolor:0.3:0.5>\n"
        "Negative prompt: blurry, lowres\n"
        "Steps: 25, Sampler: Euler a, Schedule type: Karras, CFG scale: 7.0, Seed: 1234, Size: 768x512, "
        "Model hash: 6ce0161689, Model: sd15, Denoising strength: 0.6, "
        f'Lora hashes: "anime: 0123456789ab, watercolor: fedcba987654", {VERSION}')


def test_lora_tags_are_in_the_prompt_because_a1111_applies_loras_only_from_tags():
    # A1111 (extensions-builtin/Lora extra_networks_lora.py) reads <lora:NAME:TE:UNET> positionally
    first = a1111_parameters(img2img()).split("\n")[0]
    assert first == "portrait of a woman <lora:anime:0.8> <lora:watercolor:0.3:0.5>"
    assert a1111_parameters(img2img(), lora_tags_in_prompt=False).split("\n")[0] == "portrait of a woman"


ANIME_A1111 = "d8ea84448674" + "0" * 52  # an addnet (AutoV3) hash; A1111 shows its first 12 digits
TI_SHA = "fd0d89816255" + "1" * 52


def test_a1111_infotext_with_a_lora_a_textual_inversion_and_karras_exact():
    # the strings A1111's own parse_generation_parameters (modules/infotext_utils.py, stored version at
    # commit 03650022) was run on: every field below came back, and its Lora infotext_pasted matched the
    # tag to the installed file through the 12-digit hash
    p = GenParams(prompt="a <Ink> cat", negative="blurry", steps=20, guidance=7.5, seed=5, width=512, height=512,
                  sampler="dpm++-karras", model_name="sd15", model_hash=MODEL_SHA,
                  adapters=[{"name": "ink-lora-v2", "weight": 0.8, "te_weight": 0.8, "hash": ANIME_A1111, "kind": "lora"},
                            {"name": "<Ink>", "weight": 1.0, "hash": TI_SHA, "kind": "textual-inversion"}])
    text = a1111_parameters(p)
    assert text == (
        "a <Ink> cat <lora:ink-lora-v2:0.8>\n"
        "Negative prompt: blurry\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 5, Size: 512x512, "
        'Model hash: 6ce0161689, Model: sd15, Lora hashes: "ink-lora-v2: d8ea84448674", '
        f'TI hashes: "<Ink>: fd0d89816255", {VERSION}')
    parsed = parse_a1111_parameters(text)
    assert parsed["prompt"] == "a <Ink> cat <lora:ink-lora-v2:0.8>" and parsed["Schedule type"] == "Karras"
    assert parse_lora_hashes(parsed["Lora hashes"]) == {"ink-lora-v2": "d8ea84448674"}
    assert parse_lora_hashes(parsed["TI hashes"]) == {"<Ink>": "fd0d89816255"}
    # plain dpm++ is not Karras: A1111 1.9+ would read a missing Schedule type as DPM++ 2M's default, Karras
    plain = a1111_parameters(GenParams(prompt="x", steps=1, guidance=1.0, seed=0, width=8, height=8, sampler="dpm++"))
    assert "Sampler: DPM++ 2M, Schedule type: Uniform," in plain


def test_strength_ignored_for_txt2img_and_sampler_names():
    p = GenParams(prompt="x", steps=1, guidance=1.0, seed=0, width=8, height=8, sampler="dpm++", strength=0.5)
    text = a1111_parameters(p)
    assert "Denoising strength" not in text and "Sampler: DPM++ 2M," in text
    assert "Model hash" not in text and "Model:" not in text  # no model given: left out, like A1111
    assert A1111_SAMPLERS == {"ddim": "DDIM", "euler": "Euler", "euler-a": "Euler a", "dpm++": "DPM++ 2M",
                              "dpm++-karras": "DPM++ 2M", "pndm": "PLMS", "lms": "LMS", "unipc": "UniPC",
                              "ddpm": "DDPM"}


def test_parse_round_trip_with_quoted_values():
    parsed = parse_a1111_parameters(a1111_parameters(img2img()))
    assert parsed["prompt"] == "portrait of a woman <lora:anime:0.8> <lora:watercolor:0.3:0.5>"
    assert parsed["negative"] == "blurry, lowres"
    assert parsed["Steps"] == "25" and parsed["Sampler"] == "Euler a" and parsed["Schedule type"] == "Karras"
    assert parsed["CFG scale"] == "7.0" and parsed["Seed"] == "1234" and parsed["Size"] == "768x512"
    assert parsed["Denoising strength"] == "0.6"
    assert parsed["Lora hashes"] == "anime: 0123456789ab, watercolor: fedcba987654"
    hashes = parse_lora_hashes(parsed["Lora hashes"])
    assert hashes == {"anime": "0123456789ab", "watercolor": "fedcba987654"}
    assert parsed["Version"] == f"styler {__version__}"


def test_parse_round_trip_chinese_multiline_and_odd_model_name():
    p = GenParams(prompt="书法 永\n第二行", negative="模糊, 低质量", steps=20, guidance=5.0, seed=7, width=512,
                  height=768, sampler="unipc", model_name='my, model: "v2"', model_hash=MODEL_SHA)
    text = a1111_parameters(p)
    assert 'Model: "my, model: \\"v2\\""' in text
    parsed = parse_a1111_parameters(text)
    assert parsed["prompt"] == "书法 永\n第二行"
    assert parsed["negative"] == "模糊, 低质量"
    assert parsed["Model"] == 'my, model: "v2"'
    assert parsed["Sampler"] == "UniPC" and parsed["Size"] == "512x768"


def test_parse_prompt_only():
    assert parse_a1111_parameters("just a prompt, with: commas") == {
        "prompt": "just a prompt, with: commas", "negative": ""}


def _chunk_types(data: bytes) -> list[bytes]:
    types, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        types.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return types


def test_save_png_readable_by_pil_and_read_png_meta(tmp_path):
    path = tmp_path / "out.png"
    record = {"prompt": "a cat in a hat", "adapters": [{"name": "anime", "weight": 0.8}], "seed": 42}
    save_png(Image.new("RGB", (16, 16), (200, 10, 10)), path, txt2img(), record)
    with Image.open(path) as im:
        assert im.info["parameters"] == a1111_parameters(txt2img())
        assert im.text["parameters"] == a1111_parameters(txt2img())
        assert json.loads(im.info["styler"]) == record
    assert read_png_meta(path) == (record, a1111_parameters(txt2img()))
    types = _chunk_types(path.read_bytes())
    assert types.count(b"tEXt") == 2 and b"tIME" not in types
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temp file left behind
    umask = os.umask(0o22)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_save_png_chinese_prompt_uses_itxt(tmp_path):
    p = GenParams(prompt="书法 永", steps=20, guidance=7.5, seed=1, width=16, height=16, sampler="ddim")
    record = {"prompt": "书法 永", "note": "中文"}
    path = tmp_path / "zh.png"
    save_png(Image.new("RGB", (16, 16)), path, p, record)
    assert _chunk_types(path.read_bytes()).count(b"iTXt") == 2
    assert "中文".encode() in path.read_bytes()  # compact UTF-8 JSON, not \\u escapes
    with Image.open(path) as im:
        assert im.info["parameters"] == a1111_parameters(p)
        assert parse_a1111_parameters(im.info["parameters"])["prompt"] == "书法 永"
    assert read_png_meta(path) == (record, a1111_parameters(p))


def test_same_inputs_same_bytes(tmp_path):
    image = Image.new("RGB", (32, 24), (10, 120, 200))
    record = {"b": 1, "a": [1, 2, {"x": "书"}]}
    save_png(image, tmp_path / "a.png", img2img(), record)
    save_png(image.copy(), tmp_path / "b.png", img2img(), dict(record))
    buffer = io.BytesIO()
    save_png(image, buffer, img2img(), record)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes() == buffer.getvalue()


def test_save_png_overwrites_and_converts_modes(tmp_path):
    path = tmp_path / "x.png"
    save_png(Image.new("RGB", (8, 8)), path, txt2img(), {"n": 1})
    save_png(Image.new("CMYK", (8, 8)), path, txt2img(), {"n": 2})
    assert read_png_meta(path)[0] == {"n": 2}
    with Image.open(path) as im:
        assert im.mode == "RGB"


def test_save_png_unwritable_is_write_error(tmp_path):
    with pytest.raises(WriteError, match="missing"):
        save_png(Image.new("RGB", (8, 8)), tmp_path / "missing" / "x.png", txt2img(), {})


def test_read_png_meta_without_chunks(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(path)
    assert read_png_meta(path) == (None, None)


@pytest.mark.parametrize("kind", ["text", "jpeg", "missing", "truncated"])
def test_read_png_meta_bad_input_is_input_error(tmp_path, kind):
    path = tmp_path / f"bad-{kind}.png"
    if kind == "text":
        path.write_text("not an image at all\n")
    elif kind == "jpeg":
        Image.new("RGB", (8, 8)).save(path, format="JPEG")
    elif kind == "truncated":
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64)).save(buffer, format="PNG")
        path.write_bytes(buffer.getvalue()[:40])
    with pytest.raises(InputError) as info:
        read_png_meta(path)
    assert path.name in info.value.message and "\n" not in info.value.message
