"""Adapter operations behind the CLI: import a file, export in another format, merge, remove."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from registry import Adapter, BlobStore, Output, Registry, parse_name

from .. import __version__
from ..errors import InputError, UsageError


def _store(reg: Registry, name: str, data, *, method: str, base: dict, metadata: dict, extra: dict) -> Adapter:
    """Write canonical data as a styler (peft-layout) file, store it as a blob, record it."""
    from .formats import write_adapter

    with reg.locked():
        version = reg.next_version(Adapter, name)
        meta = {"styler.version": __version__, "styler.adapter": f"{name}@{version}", "styler.method": method,
                "styler.base": json.dumps(base), **metadata}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "adapter.safetensors"
            write_adapter(data, path, "peft", metadata=meta)
            digest = BlobStore(reg.home).put_file(path)
        ranks = sorted({layer.rank for layer in data.layers.values()})
        alphas = sorted({layer.alpha for layer in data.layers.values()})
        targets = sorted({m.rsplit(".", 1)[-1] if c == "unet" else "text_encoder" for c, m in data.layers})
        record = Adapter(name=name, version=version, method=method, blob=digest, base=base,
                         rank=ranks[-1] if ranks else None, alpha=alphas[-1] if alphas else None,
                         targets=targets, trigger=next(iter(data.embeddings), ""),
                         metadata={"styler_version": __version__, "layers": len(data.layers), **extra})
        reg.insert(record)
    return record


def import_adapter(path: str | Path, name: str, *, base_spec: str | None = None, registry: Registry | None = None):
    """Read a kohya/diffusers/peft LoRA or an embedding, check it fits the base, register it."""
    from ..generate.engine import Session
    from .formats import check_compatible, detect_format, read_adapter

    reg = registry or Registry()
    full = parse_name(name, allow_version=False).full
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{p} does not exist")
    fmt = detect_format(p)
    session = Session.open(base_spec)
    data = read_adapter(p, module_names=session.module_names())
    if data.kind == "lora":
        check_compatible(data, session.pipe)
    method = "textual-inversion" if data.kind == "textual-inversion" else "imported"
    return _store(reg, full, data, method=method, base=session.identity,
                  metadata={"styler.imported_from": p.name, "styler.source_format": fmt},
                  extra={"source_file": str(p.resolve()), "source_format": fmt})


def export_adapter(name: str, fmt: str, out: str | Path | None, *, registry: Registry | None = None) -> Path:
    from .formats import read_adapter, write_adapter

    reg = registry or Registry()
    if fmt not in ("kohya", "diffusers", "peft"):
        raise UsageError(f"unknown --format {fmt!r}; use kohya, diffusers or peft")
    a = reg.resolve(Adapter, name)
    src = BlobStore(reg.home).path(a.blob)
    data = read_adapter(src)
    dest = Path(out).expanduser() if out else Path.cwd() / f"{a.name.replace('/', '_')}-v{a.version}-{fmt}.safetensors"
    if dest.suffix != ".safetensors":
        raise UsageError(f"--out {dest}: the file name must end in .safetensors")
    meta = {k: v for k, v in data.metadata.items() if k.startswith(("styler.", "ss_"))}
    write_adapter(data, dest, fmt, metadata=meta)
    return dest


def merge_adapters(new_name: str, parts: list[tuple[str, float]], *, method: str = "concat", rank: int | None = None,
                   registry: Registry | None = None) -> tuple[Adapter, float | None]:
    from .formats import read_adapter
    from .merging import merge_concat, merge_svd

    reg = registry or Registry()
    full = parse_name(new_name, allow_version=False).full
    if method not in ("concat", "svd"):
        raise UsageError(f"unknown --method {method!r}; use concat (exact) or svd")
    if method == "svd" and not rank:
        raise UsageError("--method svd needs --rank R")
    records, loaded = [], []
    for spec, w in parts:
        a = reg.resolve(Adapter, spec)
        if a.id in {r.id for r in records}:
            raise UsageError(f"{a.label} is given twice")
        records.append(a)
        loaded.append((a.label, read_adapter(BlobStore(reg.home).path(a.blob)), w))
    hashes = {a.base.get("hash") for a in records}
    if len(hashes) > 1:
        raise UsageError("these adapters were made for different base models; merge only adapters of one base")
    err = None
    if method == "concat":
        data = merge_concat(loaded)
    else:
        data, err = merge_svd(loaded, rank)
    sources = [{"id": a.id, "name": a.label, "weight": w} for a, (_, w) in zip(records, parts)]
    record = _store(reg, full, data, method="merged", base=records[0].base,
                    metadata={"styler.merged_from": json.dumps(sources), "styler.merge_method": method},
                    extra={"sources": sources, "merge_method": method, "relative_error": err})
    return record, err


def plan_remove(text: str, *, registry: Registry | None = None) -> list[Adapter]:
    reg = registry or Registry()
    parsed = parse_name(text)
    found = reg.versions(Adapter, parsed.full) if parsed.version is None else [reg.resolve(Adapter, text)]
    if not found:
        reg.resolve(Adapter, text)
    return found


def remove_adapters(plan: list[Adapter], *, registry: Registry | None = None) -> int:
    """Remove the records; their blobs stay until `styler registry prune` (outputs made with them
    still name them by id)."""
    reg = registry or Registry()
    with reg.locked():
        for a in plan:
            reg.remove(Adapter, a.id)
    used = sum(1 for o in reg.all(Output) for x in o.adapters if x.get("id") in {a.id for a in plan})
    return used
