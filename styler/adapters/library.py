"""Adapter operations behind the CLI: import a file, export in another format, merge, remove."""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from pathlib import Path

from registry import Adapter, BlobStore, Output, Registry, parse_name

from .. import __version__
from ..errors import InputError, UsageError


def _store(reg: Registry, name: str, data, *, method: str, base: dict, metadata: dict, extra: dict) -> Adapter:
    """Write canonical data as a styler (peft-layout) file, store it as a blob, record it."""
    from .formats import write_adapter

    ranks = sorted({layer.rank for layer in data.layers.values() if layer.rank is not None})
    alphas = sorted({layer.alpha for layer in data.layers.values() if layer.rank is not None})
    if data.kind == "lora" and data.lycoris_kinds() and ranks:
        # LoHa/LoKr alphas live in tensors, which `registry rebuild` does not read: it reads these
        metadata = {**metadata, "ss_network_dim": str(ranks[-1]), "ss_network_alpha": f"{alphas[-1]:g}"}
    with reg.locked():
        version = reg.next_version(Adapter, name)
        meta = {"styler.version": __version__, "styler.adapter": f"{name}@{version}", "styler.method": method,
                "styler.base": json.dumps(base), **metadata}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "adapter.safetensors"
            write_adapter(data, path, "peft", metadata=meta)
            digest = BlobStore(reg.home).put_file(path)
        targets = sorted({m.rsplit(".", 1)[-1] if c == "unet" else "text_encoder" for c, m in data.layers})
        record = Adapter(name=name, version=version, method=method, blob=digest, base=base,
                         rank=ranks[-1] if ranks else None, alpha=alphas[-1] if alphas else None,
                         targets=targets, trigger=next(iter(data.embeddings), ""),
                         metadata={"styler_version": __version__, "layers": len(data.layers), **extra})
        reg.insert(record)
    return record


def import_adapter(path: str | Path, name: str, *, base_spec: str | None = None, registry: Registry | None = None):
    """Read a kohya/diffusers/peft LoRA, a LyCORIS LoHa/LoKr or an embedding, check it fits the base,
    register it (method "imported", or "loha" / "lokr" / "lycoris" for LyCORIS layers)."""
    from ..device import resolve_placement
    from ..models.load import load_pipeline
    from ..models.resolve import base_identity, resolve_base
    from .formats import check_compatible, detect_format, fit_kernels, model_module_names, read_adapter

    reg = registry or Registry()
    full = parse_name(name, allow_version=False).full
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{p} does not exist")
    fmt = detect_format(p)
    base = resolve_base(base_spec or None)
    placement = resolve_placement()
    pipe = load_pipeline(base, device=placement.device, dtype=placement.torch_dtype)  # its modules' names and shapes
    data = read_adapter(p, module_names=model_module_names(pipe))
    if data.kind == "lora":
        check_compatible(data, pipe)
        data = fit_kernels(data, pipe)
    method = "textual-inversion" if data.kind == "textual-inversion" else "imported"
    if data.kind == "lora" and data.method != "lora":
        method = data.method
    kinds = {k: sum(layer.kind == k for layer in data.layers.values()) for k in sorted(data.layer_kinds())}
    return _store(reg, full, data, method=method, base=base_identity(base),
                  metadata={"styler.imported_from": p.name, "styler.source_format": fmt},
                  extra={"source_file": str(p.resolve()), "source_format": fmt,
                         **({"layer_kinds": kinds} if data.lycoris_kinds() else {})})


def a1111_name(record: Adapter) -> str:
    """The name A1111 knows an exported LoRA by: the default kohya export's file stem and its
    `ss_output_name` (A1111's alias), e.g. "calligraphy_mifu-v2"; no ":", ",", "<", ">" (A1111 drops
    ":"/"," from infotext names and ends a tag at ":" and ">")."""
    text = f"{record.name.replace('/', '_')}-v{record.version}"
    return re.sub(r"[:,<>\s]", "_", text)


def _export_metadata(record: Adapter, data, fmt: str) -> dict:
    meta = {k: v for k, v in data.metadata.items() if k.startswith(("styler.", "ss_"))}
    if fmt == "kohya" and data.kind == "lora":
        meta["ss_output_name"] = a1111_name(record)
    return meta


def export_payload(record: Adapter, data, fmt: str) -> bytes:
    """The exact bytes `styler adapters export --format FMT` writes for `record`, whose file was read
    as `data` (the same bytes every time). A peft export has alpha/rank folded into lora_B (see
    formats' docstring): loaders that ignore the alpha metadata still apply it exactly."""
    from .formats import adapter_bytes
    from .lora import LAYER_NAMES

    kinds = data.lycoris_kinds() if data.kind == "lora" else []
    if kinds and fmt in ("peft", "diffusers"):
        names = "/".join(LAYER_NAMES[k] for k in kinds)
        raise UsageError(f"{record.label} has {names} layers, and a {fmt} LoRA file holds only B·A layers (a {names} "
                         f"ΔW is not one); export it --format kohya, which A1111, ComfyUI and LyCORIS read")
    if fmt == "peft" and data.kind == "lora":
        data = data.unit_scale()
    return adapter_bytes(data, fmt, _export_metadata(record, data, fmt))


def export_adapter(name: str, fmt: str, out: str | Path | None, *, registry: Registry | None = None) -> Path:
    """Write the adapter's file in `fmt` (default name: `a1111_name`.safetensors for kohya), with
    the permissions a plain open() gives (0o666 & ~umask)."""
    from ..files import write_bytes_atomic
    from .formats import read_adapter

    reg = registry or Registry()
    if fmt not in ("kohya", "diffusers", "peft"):
        raise UsageError(f"unknown --format {fmt!r}; use kohya, diffusers or peft")
    a = reg.resolve(Adapter, name)
    stem = a1111_name(a) if fmt == "kohya" else f"{a.name.replace('/', '_')}-v{a.version}-{fmt}"
    dest = Path(out).expanduser() if out else Path.cwd() / f"{stem}.safetensors"
    if dest.suffix != ".safetensors":
        raise UsageError(f"--out {dest}: the file name must end in .safetensors")
    payload = export_payload(a, read_adapter(BlobStore(reg.home).path(a.blob)), fmt)
    return write_bytes_atomic(dest, payload, error=f"could not write {dest}")


_INFOTEXT_CACHE: dict[tuple[str, str], tuple[str, str, str]] = {}  # (id, blob) -> (kind, name, hash)


def infotext_adapters(recorded: list[dict], *, registry: Registry | None = None) -> list[dict]:
    """An image's adapters (the dicts `Session.apply` records) as A1111 names and hashes them, for
    `pngmeta.GenParams.adapters`: a LoRA by `a1111_name` with the AutoV3/addnet hash (sha256 of the
    bytes after the header) of its kohya export, the file a user installs, and also the
    `sshs_model_hash` A1111 reads from that file; a textual inversion by its token, with the sha256 of
    its exported file (A1111 hashes embeddings whole)."""
    from registry import NotFound

    from .formats import addnet_hash, read_adapter

    reg = registry or Registry()
    out = []
    for a in recorded:
        if a.get("checkpoint"):  # an earlier training step: no exported file has these weights, so no hash
            kind = "textual-inversion" if a.get("method") == "textual-inversion" else "lora"
            out.append({"name": f"{str(a.get('name', '')).replace('/', '_')}-step{a.get('train_step')}",
                        "weight": a.get("weight", 1.0), "te_weight": a.get("te_weight"), "hash": "", "kind": kind})
            continue
        key = (str(a.get("id", "")), str(a.get("hash", "")))
        if key not in _INFOTEXT_CACHE:
            try:
                record = reg.get(Adapter, key[0])
            except NotFound:  # removed since: named, but no hash can be given for it
                record = None
            if record is None:
                kind = "textual-inversion" if a.get("method") == "textual-inversion" else "lora"
                _INFOTEXT_CACHE[key] = (kind, str(a.get("name", "")).replace("/", "_"), "")
            else:
                data = read_adapter(BlobStore(reg.home).path(record.blob))
                if data.kind == "textual-inversion":
                    payload = export_payload(record, data, "kohya")
                    entry = ("textual-inversion", next(iter(data.embeddings)), hashlib.sha256(payload).hexdigest())
                elif any(layer.magnitude is not None for layer in data.layers.values()):
                    entry = ("lora", a1111_name(record), "")  # DoRA: no kohya file, so no hash A1111 could match
                else:
                    entry = ("lora", a1111_name(record), addnet_hash(export_payload(record, data, "kohya")))
                _INFOTEXT_CACHE[key] = entry
        kind, label, digest = _INFOTEXT_CACHE[key]
        out.append({"name": label, "weight": a.get("weight", 1.0), "te_weight": a.get("te_weight"),
                    "hash": digest, "kind": kind})
    return out


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
