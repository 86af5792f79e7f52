"""`styler demo`: try the whole workflow on the built-in tiny base."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import DeviceOpt, DtypeOpt, err, escape, out, placement


def demo(
    fresh: Annotated[bool, typer.Option("--fresh", help="Remove what an earlier demo made and start over.")] = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Build the tiny base, make three style datasets, train, generate, mix, evaluate — offline, CPU, ~1 min."""
    from ..demo import run_demo

    where = placement(device, dtype)
    err.print(f"[dim]running on {escape(where.label)}[/]")
    r = run_demo(fresh=fresh, console=err, placement=where)
    out.print(f"\n[bold green]demo done[/] in {r.seconds:.0f} s" + (f" (reused: {escape(', '.join(r.reused))})" if r.reused else ""))
    out.print(f"  home        {escape(str(r.home))}")
    out.print(f"  adapters    {escape(', '.join(a.label for a in r.adapters))}")
    out.print(f"  images      {escape(str(r.folder / 'images'))}  (baseline and each adapter, PNG with A1111 parameters)")
    out.print(f"  mix sweep   {escape(str(r.sweep))}")
    out.print(f"  report      {escape(str(r.report))}")
    out.print("  scores (tiny CLIP: shows the workflow, the numbers are not meaningful):")
    for name, values in r.scores.items():
        out.print(f"    {escape(name):<24} " + "  ".join(f"{m} {v:.3g}" for m, v in values.items()))
    out.print("\nnext:")
    out.print("  styler tui                                   # browse everything, queue mixes")
    out.print("  styler scores                                # the comparison table")
    out.print('  styler mix demo/pixel=0.5 demo/watercolor=0.5 "pxl, wtrc, a red mushroom" --out ./out')
    out.print("  styler data add my/style ./my-images --trigger mystyle   # your own images, then styler train my/style")
