"""Calligraphy legibility: the share of a prompt's Chinese characters that an OCR model reads in
the image made from it. The calligraphy seed's LoRA wrote brush strokes that looked right and read
as nothing; CLIP scores can't see that, a reader can.

The reader is RapidOCR (`rapidocr-onnxruntime`, the optional extra `styler[ocr]`), whose wheel ships
PaddleOCR's PP-OCRv4 Chinese detection and recognition models as ONNX files, so it runs offline, on
the CPU, with no download. Per image:

    legibility = |{characters of the prompt} ∩ {characters read}| / |{characters of the prompt}|

over the distinct CJK ideographs of the prompt, leaving out the style words (STYLE_WORDS: "书法",
"calligraphy" in Chinese, is in every calligraphy caption and is not text to be written) and the
adapters' trigger words. Images whose prompt has no such character don't count; the metric is the
mean over the others. Small images are enlarged (LANCZOS) so their shorter side is OCR_SIDE pixels
before reading: PP-OCR's detector finds nothing in a 64-pixel image it reads at 256.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..errors import UsageError

STYLE_WORDS = ("书法",)
OCR_SIDE = 256
OCR_HINT = "install the OCR extra: pip install 'styler[ocr]' (rapidocr-onnxruntime, which ships PP-OCR's models)"
# CJK Unified Ideographs, Extension A, and the compatibility block
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def han_characters(text: str) -> list[str]:
    return _HAN.findall(text)


def target_characters(prompt: str, ignore: tuple[str, ...] = ()) -> set[str]:
    """The distinct Chinese characters the image should show: the prompt's, less style and trigger words."""
    for word in sorted({*STYLE_WORDS, *ignore}, key=len, reverse=True):
        if word:
            prompt = prompt.replace(word, " ")
    return set(han_characters(prompt))


def ocr_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("rapidocr_onnxruntime") is not None


def engine_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"rapidocr-onnxruntime {version('rapidocr-onnxruntime')}"
    except PackageNotFoundError:
        return "rapidocr-onnxruntime (not installed)"


@lru_cache(maxsize=1)
def _engine():
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError:
        raise UsageError(f"the legibility metric needs an OCR model; {OCR_HINT}") from None
    return RapidOCR()


def read_text(image) -> str:
    """Everything the OCR model reads in a PIL image, concatenated."""
    import numpy as np
    from PIL import Image

    image = image.convert("RGB")
    short = min(image.size)
    if short < OCR_SIDE:
        f = OCR_SIDE / short
        image = image.resize((round(image.width * f), round(image.height * f)), Image.LANCZOS)
    result, _ = _engine()(np.asarray(image))
    return "".join(str(item[1]) for item in (result or []))


def legibility_of(image, prompt: str, ignore: tuple[str, ...] = ()) -> float | None:
    """One image's share of its prompt's characters read; None when the prompt asks for none."""
    wanted = target_characters(prompt, ignore)
    if not wanted:
        return None
    read = set(han_characters(read_text(image)))
    return len(wanted & read) / len(wanted)


def legibility(images, prompts: list[str], ignore: tuple[str, ...] = ()) -> tuple[float, int]:
    """(mean share, images counted) over the images whose prompt has characters to write; (nan, 0)
    when none has."""
    shares = [s for s in (legibility_of(im, p, ignore) for im, p in zip(images, prompts)) if s is not None]
    if not shares:
        return float("nan"), 0
    return sum(shares) / len(shares), len(shares)
