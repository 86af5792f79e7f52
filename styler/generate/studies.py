"""Series of images that differ in one, two or three settings: mix sweeps and X/Y/Z grids (the axes:
styler.generate.axes), each saved as labelled contact sheets next to the individual outputs."""

from __future__ import annotations

import copy
from pathlib import Path

from registry import BlobStore, Registry

from ..errors import UsageError
from .axes import Axis, cell_request, check_axes
from .engine import Session
from .service import Request, generate

SWEEP_DEFAULT = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)


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


def run_grid(req: Request, x: Axis, y: Axis | None = None, z: Axis | None = None, *, registry=None, out_dir=None,
             warn=None, placement=None) -> tuple[list, list[Path]]:
    """An X/Y/Z grid: every combination, one image each, then one labelled sheet per Z value (one
    sheet without --z). Every cell is checked before the first is rendered."""
    from registry import new_id

    from .grid import make_grid
    from .service import check_out_dir, resolve_choices

    reg = registry or Registry()
    check_out_dir(out_dir)
    if req.seed is None:
        req.seed = 0
    axes = [a for a in (x, y, z) if a is not None]
    check_axes(req, axes)
    ys, zs = (y.values if y else (None,)), (z.values if z else (None,))
    plan = []  # (z index, row, col, request)
    for k, zv in enumerate(zs):
        for i, yv in enumerate(ys):
            for j, xv in enumerate(x.values):
                cell = [(x, xv)] + ([(y, yv)] if y else []) + ([(z, zv)] if z else [])
                r = cell_request(req, cell)
                r.extra = {**req.extra, "grid": {a.name: v for a, v in cell}}
                r.validate()
                plan.append((k, i, j, r))
    for r in {_steps_key(r): r for *_, r in plan}.values():  # every adapter and checkpoint exists
        for c in resolve_choices(reg, r.adapters, r.adapter_steps):
            if c.step is not None:
                from ..adapters.steps import checkpoint_for

                checkpoint_for(reg, c.record, c.step)
    session = Session.open(req.extra.get("base"), placement)
    outputs, images = [], {}
    for k, i, j, r in plan:
        out = generate(r, registry=reg, session=session, out_dir=out_dir, warn=warn)[0]
        outputs.append(out)
        images[k, i, j] = _image(reg, out)
    stem, sheets = f"grid-{new_id()}", []
    for k, zv in enumerate(zs):
        rows = [[images[k, i, j] for j in range(len(x.values))] for i in range(len(ys))]
        if z is None:
            title = req.prompt
        else:  # a prompt S/R sheet is titled with its prompt, any other with the prompt and its value
            title = cell_request(req, [(z, zv)]).prompt if z.kind == "prompt" else f"{req.prompt} · {z.label(zv)}"
        sheet = make_grid(rows, row_labels=[y.label(v) for v in ys] if y else [""],
                          col_labels=[x.label(v) for v in x.values], title=title, x_name=x.name,
                          y_name=y.name if y else "", cell_size=_cell(rows[0][0]))
        sheets.append(_save_sheet(sheet, reg, out_dir, stem if z is None else f"{stem}_{_file_part(z.label(zv))}"))
    return outputs, sheets


def _steps_key(r: Request) -> tuple:
    return tuple(sorted(r.adapter_steps.items()))


def _file_part(text: str, limit: int = 40) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text)[:limit]


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
