"""Re-rendering an image from its recipe (an output record, or the styler chunk of its PNG)."""

from __future__ import annotations

import io
from pathlib import Path

from registry import Adapter, BlobStore, NotFound, Output, Registry, is_id

from ..errors import InputError
from .service import Request, generate


def load_recipe(source: str, reg: Registry) -> dict:
    if is_id(source) and not Path(source).exists():
        return reg.get(Output, source.upper()).to_dict()
    from .pngmeta import read_png_meta

    styler, a1111 = read_png_meta(Path(source).expanduser())
    if styler is None:
        hint = " (it has A1111 parameters, but no styler recipe naming the exact adapters)" if a1111 else ""
        raise InputError(f"{source} has no styler recipe{hint}; regen needs an image made by styler")
    return styler


def regenerate(source: str, *, registry: Registry | None = None, out_dir=None, warn=None,
               placement=None) -> tuple[Output, bool]:
    """Render the recipe again; returns the new output and whether its pixels equal the original's.
    On another device or dtype than the original's, `warn` says the pixels may differ."""
    import numpy as np
    from PIL import Image

    from ..device import resolve_placement, same_placement

    reg = registry or Registry()
    placement = placement or resolve_placement()
    r = load_recipe(source, reg)
    missing = [k for k in RECIPE_KEYS if k not in r]
    if missing:
        raise InputError(f"{source}: its styler recipe lacks {', '.join(missing)}; regen needs a whole recipe "
                         f"(was the PNG's text chunk edited?)")
    if same_placement({"device": r.get("device"), "dtype": r.get("dtype")}, placement) is False and warn:
        warn(f"the original was rendered on {r['device']} in {r.get('dtype') or '?'}, this on {placement.label}: "
             f"the pixels may differ (pass --device/--dtype to match the original)")
    blobs = BlobStore(reg.home)
    specs, steps = [], {}
    for a in r.get("adapters", []):
        try:
            rec = reg.get(Adapter, a["id"])
        except NotFound:
            raise InputError(f"the recipe uses adapter {a['name']}@{a['version']} ({a['id']}), which is not in this registry") from None
        specs.append((rec.label, a["weight"], a.get("te_weight")))
        if a.get("train_step") is not None:  # a grid's step= cell: the weights of that training step
            steps[rec.label] = int(a["train_step"])
    req = Request(prompt=r["prompt"], negative=r.get("negative", ""), steps=r["steps"], guidance=r["guidance"],
                  seed=r["seed"], n=1, width=r["width"], height=r["height"], scheduler=r["scheduler"], adapters=specs,
                  adapter_steps=steps, extra={"base": None, "regen_of": r.get("id")})
    tmp_files = []
    params = r.get("params") or {}
    if r.get("content_blob"):
        req.content = _blob_file(blobs, r["content_blob"], tmp_files)
        req.strength = params.get("strength") or 0.6
        if params.get("mask_blob"):
            req.mask = _blob_file(blobs, params["mask_blob"], tmp_files)
    base = r.get("base") or {}
    req.extra["base"] = _base_spec(base)
    _check_base(base, req.extra["base"])
    try:
        new = generate(req, registry=reg, out_dir=out_dir, warn=warn, placement=placement)[0]
    finally:
        for f in tmp_files:
            Path(f).unlink(missing_ok=True)
    same = False
    old_blob = r.get("blob") or (reg.get(Output, r["id"]).blob if r.get("id") and _has(reg, r["id"]) else None)
    if old_blob and blobs.has(old_blob):
        with blobs.open(old_blob) as a, blobs.open(new.blob) as b:
            same = np.array_equal(np.asarray(Image.open(io.BytesIO(a.read())).convert("RGB")),
                                  np.asarray(Image.open(io.BytesIO(b.read())).convert("RGB")))
    elif Path(source).is_file():
        with blobs.open(new.blob) as b:
            same = np.array_equal(np.asarray(Image.open(source).convert("RGB")),
                                  np.asarray(Image.open(io.BytesIO(b.read())).convert("RGB")))
    return new, same


RECIPE_KEYS = ("prompt", "seed", "steps", "guidance", "width", "height", "scheduler")


def _check_base(recorded: dict, spec: str | None) -> None:
    """The base that resolves now must be the recipe's, by content hash."""
    from ..models.resolve import base_identity, resolve_base

    if not recorded.get("hash"):
        return
    now = base_identity(resolve_base(spec))
    if now["hash"] != recorded["hash"]:
        raise InputError(f"the image was made with base {recorded.get('name', '?')!r} (sha256 {recorded['hash'][:12]}…), "
                         f"but the base here is {now['name']!r} (sha256 {now['hash'][:12]}…); point --base's "
                         f"default (STYLER_BASE or base in config.toml) at the original model")


def _has(reg: Registry, output_id: str) -> bool:
    try:
        reg.get(Output, output_id)
        return True
    except NotFound:
        return False


def _base_spec(base: dict) -> str | None:
    """The base the recipe used: tiny by name; others must be what resolves now (checked by hash)."""
    return "tiny" if base.get("kind") == "tiny" or base.get("name") == "tiny" else None


def _blob_file(blobs: BlobStore, digest: str, tmp_files: list) -> str:
    import tempfile

    fd, path = tempfile.mkstemp(suffix=".png")
    with open(fd, "wb") as fh, blobs.open(digest) as src:
        fh.write(src.read())
    tmp_files.append(path)
    return path
