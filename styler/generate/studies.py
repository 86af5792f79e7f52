"""Series of images that differ in one or two settings: mix sweeps and X/Y grids, each saved as a
labelled contact sheet next to the individual outputs."""

from __future__ import annotations

import copy
from pathlib import Path

from registry import BlobStore, Registry

from ..errors import UsageError
from .engine import Session
from .service import Request, generate

SWEEP_DEFAULT = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)
AXES = ("guidance", "scale", "steps", "seed")


def parse_axis(text: str) -> tuple[str, list]:
    """`guidance=5,7.5,10` → ("guidance", [5.0, 7.5, 10.0])."""
    name, sep, values = text.partition("=")
    if not sep or name not in AXES:
        raise UsageError(f"grid axis {text!r}: use NAME=v1,v2,… with NAME one of {', '.join(AXES)}")
    cast = int if name in ("steps", "seed") else float
    try:
        parsed = [cast(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"grid axis {name}: values must be {'whole numbers' if cast is int else 'numbers'}: {values!r}") from None
    if not parsed:
        raise UsageError(f"grid axis {name} has no values")
    return name, parsed


def _with(req: Request, axis: str, value) -> Request:
    r = copy.deepcopy(req)
    if axis == "scale":
        r.adapters = [(s, (1.0 if w is None else w) * value, None if te is None else te * value) for s, w, te in r.adapters]
    else:
        setattr(r, axis, value)
    r.n = 1
    return r


def _label(axis: str, value) -> str:
    return f"{axis} {value:g}" if isinstance(value, float) else f"{axis} {value}"


def _cell(image) -> tuple[int, int]:
    """Cells at least 128 px, so labels fit even under small images (scaled up, aspect kept)."""
    scale = max(1.0, 128 / min(image.size))
    return round(image.width * scale), round(image.height * scale)


def _save_sheet(sheet, reg: Registry, out_dir, stem: str) -> Path:
    folder = Path(out_dir).expanduser() if out_dir else reg.home / "grids"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.png"
    sheet.save(path, format="PNG")
    return path


def _image(reg: Registry, output):
    from PIL import Image

    with BlobStore(reg.home).open(output.blob) as fh:
        return Image.open(fh).convert("RGB")


def run_grid(req: Request, x: tuple[str, list], y: tuple[str, list] | None, *, registry=None, out_dir=None,
             warn=None, placement=None):
    """An X/Y grid: every combination, one image each, then one labelled sheet."""
    from registry import new_id

    from .grid import make_grid

    from .service import check_out_dir

    reg = registry or Registry()
    check_out_dir(out_dir)
    if req.seed is None:
        req.seed = 0
    if "scale" in (x[0], y[0] if y else None) and not req.adapters:
        raise UsageError("a grid over 'scale' needs at least one --adapter")
    session = Session.open(req.extra.get("base"), placement)
    ys = y[1] if y else [None]
    rows, outputs = [], []
    for yv in ys:
        row = []
        for xv in x[1]:
            r = _with(req, x[0], xv)
            if y:
                r = _with(r, y[0], yv)
            r.extra = {**req.extra, "grid": {x[0]: xv, **({y[0]: yv} if y else {})}}
            out = generate(r, registry=reg, session=session, out_dir=out_dir, warn=warn)[0]
            outputs.append(out)
            row.append(_image(reg, out))
        rows.append(row)
    sheet = make_grid(rows, row_labels=[_label(y[0], v) for v in ys] if y else [""],
                      col_labels=[_label(x[0], v) for v in x[1]], title=req.prompt,
                      x_name=x[0], y_name=y[0] if y else "", cell_size=_cell(rows[0][0]))
    return outputs, _save_sheet(sheet, reg, out_dir, f"grid-{new_id()}")


def run_sweep(req: Request, a: str, b: str, values=SWEEP_DEFAULT, *, registry=None, out_dir=None, warn=None,
              placement=None):
    """The interpolation series between adapters a and b: weights (1-t, t), same seed throughout."""
    from registry import new_id, parse_name

    from .grid import make_strip

    from .service import check_out_dir

    reg = registry or Registry()
    check_out_dir(out_dir)
    names = [parse_name(s).full for s, _, _ in req.adapters]
    for side in (a, b):
        if parse_name(side).full not in names:
            raise UsageError(f"--sweep {a}:{b}: {side} is not among the adapters of this mix")
    given = {parse_name(s).full: w for s, w, _ in req.adapters}
    replaced = [f"{side}={given[parse_name(side).full]:g}" for side in (a, b)]
    if warn:
        warn(f"--sweep {a}:{b} sets their weights to 1-t and t at each step; the weights given "
             f"({', '.join(replaced)}) are not used")
    if req.seed is None:
        req.seed = 0
    session = Session.open(req.extra.get("base"), placement)
    images, labels, outputs = [], [], []
    for t in values:
        r = copy.deepcopy(req)
        r.n = 1
        r.adapters = [(s, (1 - t) if parse_name(s).full == parse_name(a).full else t if parse_name(s).full == parse_name(b).full else w, te)
                      for s, w, te in req.adapters]
        r.extra = {**req.extra, "sweep": {"a": a, "b": b, "t": t}}
        out = generate(r, registry=reg, session=session, out_dir=out_dir, warn=warn)[0]
        outputs.append(out)
        images.append(_image(reg, out))
        labels.append(f"{parse_name(a).name} {1 - t:g} / {parse_name(b).name} {t:g}")
    sheet = make_strip(images, labels, title=req.prompt, cell_size=_cell(images[0]))
    return outputs, _save_sheet(sheet, reg, out_dir, f"sweep-{new_id()}")
