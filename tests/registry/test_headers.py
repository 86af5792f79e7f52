"""The one safetensors header reader (registry.headers): what it accepts, each way a file can be
broken refused with one line, and the same verdict through every caller (registry rebuild, base
models, adapter files)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from registry.headers import BadSafetensors, read_safetensors_header


def _file(path: Path, header, data: bytes = b"", *, length: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


T = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}

BROKEN = {
    "empty": (b"", None, b"", "too short for a header"),
    "length past the end": ({"w": T}, 10_000, b"\0" * 16, "does not fit"),
    "length zero": (b"{}", 0, b"", "does not fit"),
    "not json": (b"{not json", None, b"", "not UTF-8 JSON"),
    "not utf-8": (b"\xff\xfe{}", None, b"", "not UTF-8 JSON"),
    "a list": ([1, 2], None, b"", "not a JSON object"),
    "metadata not strings": ({"__metadata__": {"a": 1}}, None, b"", "__metadata__"),
    "entry without offsets": ({"w": {"dtype": "F32", "shape": [2]}}, None, b"\0" * 8, "tensor 'w'"),
    "offsets disagree with shape": ({"w": {**T, "data_offsets": [0, 12]}}, None, b"\0" * 16, "disagree"),
    "negative shape": ({"w": {**T, "shape": [-2, -2]}}, None, b"\0" * 16, "tensor 'w'"),
    "truncated data": ({"w": T}, None, b"\0" * 8, "is truncated"),
}


def test_a_valid_file(tmp_path):
    from safetensors.torch import save_file
    import torch

    p = tmp_path / "ok.safetensors"
    save_file({"b": torch.zeros(3, dtype=torch.float16), "a": torch.ones(2, 2)}, p, metadata={"k": "v"})
    header = read_safetensors_header(p)
    assert header["__metadata__"] == {"k": "v"}
    assert (header["a"]["shape"], header["b"]["dtype"]) == ([2, 2], "F16")
    assert read_safetensors_header(_file(tmp_path / "no-tensors.safetensors", {})) == {}


@pytest.mark.parametrize("case", list(BROKEN))
def test_every_caller_refuses_a_broken_file_with_the_same_line(tmp_path, case):
    from registry.rebuild import safetensors_header as rebuild_header

    from styler.adapters.formats import detect_format
    from styler.errors import InputError
    from styler.models.resolve import safetensors_header

    header, length, data, fragment = BROKEN[case]
    p = tmp_path / "broken.safetensors"
    if header == b"" and length is None:
        p.write_bytes(b"\0" * 3)
    else:
        _file(p, header, data, length=length)
    with pytest.raises(BadSafetensors) as exc:
        read_safetensors_header(p)
    message = exc.value.message
    assert fragment in message and str(p) in message and "\n" not in message and exc.value.exit_code == 2
    assert message.endswith(("re-download or re-export it", "re-download or rebuild it"))
    assert rebuild_header(p) is None
    for fn in (safetensors_header, detect_format):
        with pytest.raises(InputError) as err:
            fn(p)
        assert err.value.message == message


def test_a_header_over_100_mb_is_refused_unread(tmp_path, monkeypatch):
    import registry.headers as H

    monkeypatch.setattr(H, "MAX_HEADER", 64)
    p = _file(tmp_path / "big.safetensors", {"w": T, "__metadata__": {"pad": "x" * 100}}, b"\0" * 16)
    with pytest.raises(BadSafetensors, match="does not fit"):
        read_safetensors_header(p)


def test_a_missing_file(tmp_path):
    with pytest.raises(BadSafetensors, match="cannot read"):
        read_safetensors_header(tmp_path / "missing.safetensors")


def test_no_other_module_reads_headers_itself():
    root = Path(__file__).resolve().parents[2]
    readers = [p.relative_to(root).as_posix() for p in [*root.glob("styler/**/*.py"), *root.glob("registry/*.py")]
               if p.name != "headers.py" and ('"<Q"' in p.read_text("utf-8") or "'<Q'" in p.read_text("utf-8"))]
    assert readers == []
