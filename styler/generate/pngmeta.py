"""Generation parameters in PNG text chunks, the AUTOMATIC1111 way ("parameters", which civitai and
most image browsers read) plus styler's own full record ("styler", compact JSON).

What A1111 needs to make the image again (checked against its own code: modules/infotext_utils.py
`parse_generation_parameters`, extensions-builtin/Lora `infotext_pasted`, modules/hashes.py):
- LoRAs only take effect through `<lora:NAME:W>` tags in the prompt, so they are written there;
- `Lora hashes: "NAME: HASH, …"` lets A1111 find the user's own copy of each LoRA whatever its file
  is called (it looks the 12-digit hash up among its LoRAs and renames the tag); HASH is the addnet
  (AutoV3) hash of the kohya export, see `styler.adapters.library.infotext_adapters`;
- textual inversions are listed under `TI hashes` (sha256 of the whole file);
- "Sampler" is the sampler's name alone and the sigma schedule goes in "Schedule type" (A1111 1.9+).
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from styler import __version__
from styler.errors import InputError, WriteError

#: styler scheduler name -> A1111 sampler display name
A1111_SAMPLERS = {
    "ddim": "DDIM",
    "euler": "Euler",
    "euler-a": "Euler a",
    "dpm++": "DPM++ 2M",
    "dpm++-karras": "DPM++ 2M",
    "pndm": "PLMS",
    "lms": "LMS",
    "unipc": "UniPC",
    "ddpm": "DDPM",
}
#: styler scheduler name -> A1111 "Schedule type" (absent: A1111 reads "Automatic")
A1111_SCHEDULES = {"dpm++-karras": "Karras", "dpm++": "Uniform"}  # A1111 1.9+ gives DPM++ 2M Karras by default

PARAMETERS_KEY = "parameters"
STYLER_KEY = "styler"


@dataclass(frozen=True)
class GenParams:
    """One generated image's settings. ``adapters``: dicts {name, weight, te_weight (optional),
    hash (the hash A1111 knows the file by), kind ("lora", the default, or "textual-inversion")};
    `styler.adapters.library.infotext_adapters` makes them. ``extra``: anything else;
    ``extra["schedule_type"]`` becomes A1111's "Schedule type" (else the sampler's own, e.g. Karras),
    ``extra["infotext"]`` (a dict) adds more A1111 key/value pairs."""

    prompt: str
    steps: int
    guidance: float
    seed: int | None
    width: int
    height: int
    sampler: str
    model_name: str = ""
    model_hash: str = ""
    negative: str = ""
    adapters: list[dict] = field(default_factory=list)
    strength: float | None = None
    kind: str = "txt2img"
    extra: dict = field(default_factory=dict)


def _num(value: float) -> str:
    """A float as A1111 prints it (7.5, 7.0, 0.6), without binary noise like 0.30000000000000004."""
    return str(round(float(value), 6))


def _weight(value: float) -> str:
    return f"{round(float(value), 4):g}"


def _quote(value: Any) -> str:
    """A1111's infotext quoting: JSON-quote a value that holds a comma, colon or newline."""
    text = str(value)
    if "," not in text and ":" not in text and "\n" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _lora_alias(name: str) -> str:
    return str(name).replace(":", "").replace(",", "")  # as A1111 cleans names for "Lora hashes"


def _is_ti(adapter: dict) -> bool:
    return adapter.get("kind") == "textual-inversion"


def lora_tag(adapter: dict) -> str:
    """``<lora:name:w>``, or ``<lora:name:te:unet>`` (A1111's positional order) when te_weight differs.
    The name is the one "Lora hashes" lists, so A1111's paste can match the two."""
    name, weight = _lora_alias(adapter["name"]).replace(">", ""), adapter.get("weight", 1.0)
    te = adapter.get("te_weight")
    if te is None or float(te) == float(weight):
        return f"<lora:{name}:{_weight(weight)}>"
    return f"<lora:{name}:{_weight(te)}:{_weight(weight)}>"


def a1111_parameters(p: GenParams, *, lora_tags_in_prompt: bool = True) -> str:
    """The A1111 "parameters" text: prompt (with a ``<lora:…>`` tag per LoRA: A1111 applies LoRAs
    only from tags), optional "Negative prompt: ..." line, then the comma-separated key/value line,
    in A1111's key order."""
    prompt = p.prompt
    loras = [a for a in p.adapters if not _is_ti(a)]
    if lora_tags_in_prompt and loras:
        tags = " ".join(lora_tag(a) for a in loras)
        prompt = f"{prompt} {tags}" if prompt else tags
    pairs: dict[str, Any] = {
        "Steps": p.steps,
        "Sampler": A1111_SAMPLERS.get(p.sampler, p.sampler),
        "Schedule type": p.extra.get("schedule_type") or A1111_SCHEDULES.get(p.sampler),
        "CFG scale": _num(p.guidance),
        "Seed": p.seed,
        "Size": f"{p.width}x{p.height}",
        "Model hash": p.model_hash[:10] or None,
        "Model": p.model_name or None,
        "Denoising strength": _num(p.strength) if p.strength is not None and p.kind != "txt2img" else None,
    }
    pairs.update(p.extra.get("infotext") or {})
    def hashes(entries):  # A1111 shows the first 12 hex digits (its "shorthash")
        return ", ".join(f"{_lora_alias(a['name'])}: {str(a['hash'])[:12]}" for a in entries if a.get("hash")) or None

    pairs["Lora hashes"] = hashes(loras)
    pairs["TI hashes"] = hashes([a for a in p.adapters if _is_ti(a)])
    pairs["Version"] = f"styler {__version__}"
    line = ", ".join(f"{k}: {_quote(v)}" for k, v in pairs.items() if v is not None and v != "")
    negative = f"\nNegative prompt: {p.negative}" if p.negative else ""
    return f"{prompt}{negative}\n{line}".strip()


# A1111's own pattern: key, then a JSON-quoted string (may hold commas) or text up to the next comma
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def parse_a1111_parameters(text: str) -> dict[str, str]:
    """Read A1111 "parameters" text back: {"prompt", "negative", then each key (e.g. "Steps",
    "Lora hashes") with its unquoted string value}. Like A1111, a last line holding fewer than three
    key/value pairs is taken as part of the prompt."""
    *lines, last = text.strip().split("\n")
    if len(_RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].lstrip()
        (negative if in_negative else prompt).append(line)
    out: dict[str, str] = {"prompt": "\n".join(prompt), "negative": "\n".join(negative)}
    for key, value in _RE_PARAM.findall(last):
        value = value.strip()
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[key.strip()] = value
    return out


def parse_lora_hashes(value: str) -> dict[str, str]:
    """``"anime: 0123456789ab, watercolor: ..."`` (unquoted) -> {"anime": "0123456789ab", ...}."""
    out = {}
    for item in value.split(","):
        name, sep, short = item.rpartition(":")
        if sep:
            out[name.strip()] = short.strip()
    return out


def _add_chunk(info: PngImagePlugin.PngInfo, key: str, value: str) -> None:
    # ASCII: a plain tEXt chunk, byte for byte what A1111 writes; anything else: iTXt (UTF-8)
    if value.isascii():
        info.add_text(key, value)
    else:
        info.add_itxt(key, value, lang="", tkey="", zip=False)


def _png_ready(image: Image.Image) -> Image.Image:
    if image.mode in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
        return image
    return image.convert("RGBA" if "A" in image.getbands() else "RGB")


def save_png(image: Image.Image, path_or_buffer: str | os.PathLike | BinaryIO, params: GenParams,
             styler_record: dict | None, *, lora_tags_in_prompt: bool = True) -> None:
    """Write ``image`` as PNG with a "parameters" chunk (A1111 text) and a "styler" chunk (compact
    JSON). Same inputs give the same bytes (no time chunk). A path is written atomically."""
    info = PngImagePlugin.PngInfo()
    _add_chunk(info, PARAMETERS_KEY, a1111_parameters(params, lora_tags_in_prompt=lora_tags_in_prompt))
    if styler_record is not None:
        record = json.dumps(styler_record, ensure_ascii=False, separators=(",", ":"), default=str)
        _add_chunk(info, STYLER_KEY, record)
    image = _png_ready(image)
    if not isinstance(path_or_buffer, (str, os.PathLike)):
        image.save(path_or_buffer, format="PNG", pnginfo=info)
        return
    path = Path(path_or_buffer)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    tmp = None
    try:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        # os.open with 0o666 so the file gets the usual umask permissions (mkstemp would give 0600)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(buffer.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def read_png_meta(path: str | os.PathLike) -> tuple[dict | None, str | None]:
    """(styler record or None, A1111 parameters text or None) of a PNG. InputError when the file
    is missing, not an image, or an image of another format."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise InputError(f"{path}: a {im.format or 'non-PNG'} image, not a PNG; "
                                 "generation metadata is only read from PNG files")
            chunks = dict(im.info)
            if PARAMETERS_KEY not in chunks or STYLER_KEY not in chunks:
                chunks.update(im.text)  # text chunks after the image data need a full read
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{path}: cannot read as PNG ({reason})") from None
    params = chunks.get(PARAMETERS_KEY)
    params = str(params) if isinstance(params, str) else None
    record = None
    raw = chunks.get(STYLER_KEY)
    if isinstance(raw, str):
        try:
            loaded = json.loads(raw)
        except ValueError:
            loaded = None
        record = loaded if isinstance(loaded, dict) else None
    return record, params
