"""`styler generate | mix | transfer | grid | regen`: images from the base with one adapter or an
exact weighted mix, style transfer, studies, and exact re-renders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import BatchOpt, DeviceOpt, DtypeOpt, escape, note, out, placement, print_json, warn

Negative = Annotated[str, typer.Option("--negative", help="Negative prompt.")]
Steps = Annotated[int, typer.Option(help="Sampling steps.")]
Guidance = Annotated[float, typer.Option(help="CFG scale.")]
Seed = Annotated[Optional[int], typer.Option(help="Seed of the first image (the next ones add 1); random if not given, "
                                                   "0 for --sweep and grids (every cell the same seed).")]
N = Annotated[int, typer.Option("--n", help="Number of images.")]
Size = Annotated[str, typer.Option(help="WIDTHxHEIGHT, multiples of 8 (default: the base's native size).")]
Sched = Annotated[str, typer.Option("--scheduler", help="ddim | euler | euler-a | dpm++ | dpm++-karras | unipc | pndm | ddpm.")]
Base = Annotated[Optional[str], typer.Option(help="Base model: tiny, an HF repo id, a folder or a .safetensors file.")]
OutDir = Annotated[Optional[Path], typer.Option("--out", help="Also write PNGs (with A1111-readable parameters) here.")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
AdapterOpt = Annotated[Optional[list[str]], typer.Option("--adapter", help="NAME[@V][=WEIGHT], repeatable.")]
UnetScale = Annotated[Optional[float], typer.Option("--unet-scale", help="Multiply every adapter's UNet weight.")]
TeScale = Annotated[Optional[float], typer.Option("--te-scale", help="Text-encoder weight for every adapter (default: its UNet weight).")]

def _default_size(base: str | None) -> int:
    from ..models.resolve import resolve_base

    b = resolve_base(base or None)
    return 64 if b.kind == "tiny" else 512


def _request(prompt, *, adapters, negative, steps, guidance, seed, n, size, scheduler, base, unet_scale=None,
             te_scale=None, te=None, **extra):
    """The Request a command renders, built as a queued job's is (styler.generate.jobs)."""
    from ..generate.jobs import adapter_entry, generate_payload, request_from_payload

    entries = [adapter_entry(a) for a in adapters or []]
    te = list(te or [])
    if len(te) > len(entries):
        from ..errors import UsageError

        raise UsageError(f"{len(te)} --te weights for {len(entries)} adapter(s); give one per adapter, in order")
    for i, entry in enumerate(entries):
        if unet_scale is not None:
            entry[1] *= unet_scale
        entry[2] = te[i] if i < len(te) else te_scale
    payload = generate_payload(prompt, entries, negative=negative, n=n, seed=seed, steps=steps, guidance=guidance,
                               scheduler=scheduler, size=size, base=base)
    req = request_from_payload(payload, native=512 if size else _default_size(base))
    req.extra = {"base": base, **extra}
    return req


def _show(outputs, as_json: bool, out_dir, extra: dict | None = None) -> None:
    if as_json:
        print_json({"outputs": [o.to_dict() for o in outputs], **(extra or {})})
        return
    from ..generate.service import out_file_name

    for o in outputs:
        mix = " + ".join(f"{a['name']}@{a['version']}={a['weight']:g}" for a in o.adapters) or "base"
        cell = (o.params or {}).get("sweep")
        step = f"  t {cell['t']:g}" if cell else ""
        where = f"  {out_dir / out_file_name(o)}" if out_dir else ""
        out.print(f"{o.id}  seed {o.seed}{step}  {escape(f'[{mix}]')}{escape(where)}")
    for k, v in (extra or {}).items():
        if k == "grids":  # one sheet per --z value (the first is also printed as grid:)
            for path in v[1:]:
                out.print(f"grid: {escape(str(path))}")
            continue
        out.print(f"{k}: {escape(str(v))}")
    if not out_dir:
        note("images are in the registry: `styler registry ls outputs`; add --out DIR for PNG files")


def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw.", show_default=False)],
    adapter: AdapterOpt = None,
    negative: Negative = "",
    steps: Steps = 30,
    guidance: Guidance = 7.5,
    seed: Seed = None,
    n: N = 1,
    size: Size = "",
    scheduler: Sched = "ddim",
    unet_scale: UnetScale = None,
    te_scale: TeScale = None,
    base: Base = None,
    batch: BatchOpt = 1,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    out_dir: OutDir = None,
    as_json: Json = False,
) -> None:
    """Text to image, with no adapter (the baseline), one, or several (an exact mix)."""
    from ..generate.service import generate as run

    where = placement(device, dtype)
    req = _request(prompt, adapters=adapter, negative=negative, steps=steps, guidance=guidance, seed=seed, n=n,
                   size=size, scheduler=scheduler, base=base, unet_scale=unet_scale, te_scale=te_scale)
    req.batch = batch
    if not req.adapters:
        req.kind = "txt2img"
    _show(run(req, out_dir=out_dir, warn=warn, placement=where), as_json, out_dir)


def mix(
    items: Annotated[list[str], typer.Argument(help="NAME=WEIGHT … then the prompt, e.g. anime=0.5 watercolor=0.5 \"a cat\".", show_default=False)],
    te: Annotated[Optional[list[float]], typer.Option("--te", help="Text-encoder weight per adapter, in order (repeatable).")] = None,
    sweep: Annotated[Optional[str], typer.Option("--sweep", help="A:B — render the series from all-A to all-B as a labelled grid.")] = None,
    sweep_values: Annotated[Optional[str], typer.Option("--sweep-values", help="Comma list of t for --sweep (default 0,.2,.4,.5,.6,.8,1).")] = None,
    negative: Negative = "",
    steps: Steps = 30,
    guidance: Guidance = 7.5,
    seed: Seed = None,
    n: N = 1,
    size: Size = "",
    scheduler: Sched = "ddim",
    base: Base = None,
    batch: BatchOpt = 1,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    out_dir: OutDir = None,
    as_json: Json = False,
) -> None:
    """An exact weighted mix of adapters: W + Σ wᵢ·(αᵢ/rᵢ)·BᵢAᵢ for every targeted layer."""
    from registry import split_specs

    from ..errors import UsageError

    where = placement(device, dtype)
    specs, words = split_specs(items)
    if len(words) != 1:
        raise UsageError(f"give the adapters as NAME=WEIGHT and exactly one prompt (quoted); got {len(words)} "
                         f"other argument(s): {', '.join(map(repr, words[:3]))}")
    if not specs:
        raise UsageError("no adapters in the mix; give NAME=WEIGHT, e.g. anime=0.5 watercolor=0.5 \"a cat\"")
    req = _request(words[0], adapters=specs, negative=negative, steps=steps, guidance=guidance, seed=seed, n=n,
                   size=size, scheduler=scheduler, base=base, te=te)
    req.batch = batch
    if sweep:
        from ..generate.studies import SWEEP_DEFAULT, run_sweep

        a, sep, b = sweep.partition(":")
        if not sep or not a or not b:
            raise UsageError(f"--sweep {sweep!r}: use A:B with two adapters of the mix")
        try:
            values = [float(v) for v in sweep_values.split(",")] if sweep_values else list(SWEEP_DEFAULT)
        except ValueError:
            raise UsageError(f"--sweep-values {sweep_values!r}: use numbers, e.g. 0,0.5,1") from None
        outputs, sheet = run_sweep(req, a, b, values, out_dir=out_dir, warn=warn, placement=where)
        _show(outputs, as_json, out_dir, {"grid": str(sheet)})
        return
    from ..generate.service import generate as run

    _show(run(req, out_dir=out_dir, warn=warn, placement=where), as_json, out_dir)


def transfer(
    content: Annotated[Path, typer.Argument(help="The image whose layout is kept.", show_default=False)],
    prompt: Annotated[str, typer.Argument(help="What the result shows, e.g. the style's trigger words.", show_default=False)],
    adapter: AdapterOpt = None,
    strength: Annotated[float, typer.Option(help="How much may change: 0 keeps the content, 1 ignores it.")] = 0.6,
    mask: Annotated[Optional[Path], typer.Option(help="Only the white part of this mask changes (inpainting).")] = None,
    negative: Negative = "",
    steps: Steps = 30,
    guidance: Guidance = 7.5,
    seed: Seed = None,
    n: N = 1,
    scheduler: Sched = "ddim",
    base: Base = None,
    batch: BatchOpt = 1,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    out_dir: OutDir = None,
    as_json: Json = False,
) -> None:
    """Style transfer (img2img): keep the content's layout, apply the style; with --mask, inpaint."""
    from ..generate.service import generate as run

    where = placement(device, dtype)
    req = _request(prompt, adapters=adapter, negative=negative, steps=steps, guidance=guidance, seed=seed, n=n,
                   size="", scheduler=scheduler, base=base)
    req.content, req.mask, req.strength, req.batch = str(content), str(mask) if mask else None, strength, batch
    _show(run(req, out_dir=out_dir, warn=warn, placement=where), as_json, out_dir)


AXIS_HELP = ("NAME=v1,v2,… with NAME guidance, steps, seed, scale, unet-scale, te-scale, sampler, prompt (search/"
             "replace) or step; or weight:ADAPTER=… / step:ADAPTER=… for one --adapter.")


def grid(
    prompt: Annotated[str, typer.Argument(help="What to draw.", show_default=False)],
    x: Annotated[str, typer.Option("--x", help=f"Columns: {AXIS_HELP}")],
    y: Annotated[Optional[str], typer.Option("--y", help="Rows, same form as --x.")] = None,
    z: Annotated[Optional[str], typer.Option("--z", help="One sheet per value, same form as --x.")] = None,
    adapter: AdapterOpt = None,
    negative: Negative = "",
    steps: Steps = 30,
    guidance: Guidance = 7.5,
    seed: Seed = None,
    size: Size = "",
    scheduler: Sched = "ddim",
    base: Base = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    out_dir: OutDir = None,
    as_json: Json = False,
) -> None:
    """An X/Y/Z plot, as A1111's: guidance, steps, seed, sampler, prompt S/R, adapter weights, scales, training steps; a labelled sheet per Z value."""
    from ..generate.axes import parse_axis
    from ..generate.studies import run_grid

    axes = [parse_axis(a) if a else None for a in (x, y, z)]  # every axis checked before anything loads
    where = placement(device, dtype)
    req = _request(prompt, adapters=adapter, negative=negative, steps=steps, guidance=guidance, seed=seed, n=1,
                   size=size, scheduler=scheduler, base=base)
    outputs, sheets = run_grid(req, *axes, out_dir=out_dir, warn=warn, placement=where)
    extra = {"grid": str(sheets[0])}
    if z:
        extra["grids"] = [str(p) for p in sheets]
    _show(outputs, as_json, out_dir, extra)


def regen(
    source: Annotated[str, typer.Argument(help="An output id, or a PNG written by styler.", show_default=False)],
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    out_dir: OutDir = None,
    as_json: Json = False,
) -> None:
    """Make an image again from its recipe; same device and dtype give identical pixels."""
    from ..generate.regen import regenerate

    new, same = regenerate(source, out_dir=out_dir, warn=warn, placement=placement(device, dtype))
    if as_json:
        print_json({"output": new.to_dict(), "identical": same})
        return
    _show([new], False, out_dir)
    out.print("identical pixels to the original" if same else "pixels differ from the original (other device, dtype or library version?)")


def register(app: typer.Typer) -> None:
    for fn in (generate, mix, transfer, grid, regen):
        app.command(fn.__name__, rich_help_panel="Generate")(fn)
