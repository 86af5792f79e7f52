"""`styler explain`: where the UNet looks for each word (cross-attention heat maps), or how much
each UNet block responds (feature-map energy), over an image rendered as `styler generate` would."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import DeviceOpt, DtypeOpt, escape, out, placement, print_json, warn
from .generate_cmd import AdapterOpt, Base, Guidance, Json, Negative, OutDir, Sched, Seed, Size, Steps, _request


def explain(
    prompt: Annotated[str, typer.Argument(help="What to draw.", show_default=False)],
    token: Annotated[Optional[list[str]], typer.Option(
        "--token", help="A word of the prompt to map (repeatable); a word of several tokens is mapped as one.",
        show_default=False)] = None,
    layers: Annotated[str, typer.Option(
        "--layers", help="attn: a cross-attention map per --token word; conv: the mean |activation| of each "
                         "down/mid/up block.")] = "attn",
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
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", help="Write the image and the heat maps here (default: the home's explain/OUTPUT_ID/).")] = None,
    as_json: Json = False,
) -> None:
    """Heat maps of what the UNet attends to per word (or per block), over the image `generate` makes."""
    from ..generate.explain import check_layers, explain as run

    words = list(token or [])
    check_layers(layers, words)
    where = placement(device, dtype)
    req = _request(prompt, adapters=adapter, negative=negative, steps=steps, guidance=guidance, seed=seed, n=1,
                   size=size, scheduler=scheduler, base=base)
    result = run(req, words, layers, out_dir=out_dir, warn=warn, placement=where)
    o = result.output
    if as_json:
        print_json({"output": o.to_dict(), "layers": layers, "image": str(result.image_file or ""),
                    "sheet": str(result.sheet),
                    "maps": [{"label": m.label, **m.detail, "path": str(result.files[m.label])} for m in result.maps]})
        return
    mix = " + ".join(f"{a['name']}@{a['version']}={a['weight']:g}" for a in o.adapters) or "base"
    where = f"  {result.image_file}" if result.image_file else ""
    out.print(f"{o.id}  seed {o.seed}  {escape(f'[{mix}]{where}')}")
    for m in result.maps:
        what = (f"tokens {','.join(map(str, m.detail['tokens']))}" if layers == "attn"
                else "×".join(map(str, m.detail["shape"])))
        out.print(f"{escape(m.label)}  ({what})  {escape(str(result.files[m.label]))}")
    out.print(f"sheet: {escape(str(result.sheet))}")


def register(app: typer.Typer) -> None:
    app.command("explain", rich_help_panel="Evaluate")(explain)
