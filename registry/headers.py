"""The one reader of safetensors headers (tensor names, dtypes, shapes, offsets, `__metadata__`):
json + struct, no torch, and nothing read past the header. Used by registry rebuild, base-model
checks and adapter files alike."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from .errors import RegistryError

MAX_HEADER = 100 << 20  # real headers are kilobytes to a few MB; a larger length is garbage
# bytes per element, to check each tensor's offsets against its shape (other dtypes: offsets only)
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
               "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


class BadSafetensors(RegistryError):
    """A file that is not a whole, valid safetensors file; the message names it and the fix."""

    exit_code = 2


def _bad(path: Path, why: str) -> BadSafetensors:
    return BadSafetensors(f"{path} is not a valid safetensors file ({why}); re-download or re-export it")


def _valid_entry(value) -> bool:
    if not isinstance(value, dict) or not isinstance(value.get("dtype"), str):
        return False
    shape, offsets = value.get("shape"), value.get("data_offsets")
    ints = lambda xs: isinstance(xs, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in xs)  # noqa: E731
    if not (ints(shape) and ints(offsets) and len(offsets) == 2 and offsets[0] <= offsets[1]):
        return False
    width = DTYPE_BYTES.get(value["dtype"])
    count = 1
    for dim in shape:
        count *= dim
    return width is None or offsets[1] - offsets[0] == count * width


def read_safetensors_header(path) -> dict:
    """The JSON header of a safetensors file, checked: the 8-byte length fits the file (and 100 MB),
    the header is a UTF-8 JSON object of well-formed tensor entries (and string metadata), and the
    file holds every tensor's bytes. Raises BadSafetensors, one line, otherwise."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise _bad(path, f"{size} bytes, too short for a header")
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > min(size - 8, MAX_HEADER):
                raise _bad(path, f"its header length {n} does not fit a {size}-byte file")
            raw = fh.read(n)
    except OSError as exc:
        raise BadSafetensors(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _bad(path, "its header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise _bad(path, "its header is not a JSON object")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _bad(path, "its __metadata__ is not a table of strings")
    end = 0
    for key, value in header.items():
        if key == "__metadata__":
            continue
        if not _valid_entry(value):
            raise _bad(path, f"tensor {key[:80]!r} has no valid dtype, shape and data_offsets, or they disagree")
        end = max(end, value["data_offsets"][1])
    if size < 8 + n + end:
        raise BadSafetensors(f"{path} is truncated ({size} bytes, its header needs {8 + n + end}); "
                             "re-download or rebuild it")
    return header
