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
    """Three style datasets, a LoRA on each, images, a mix sweep and scores on the tiny base — offline, CPU, a few minutes."""
    from ..demo import run_demo

    where = placement(device, dtype)
    err.print(f"[dim]running on {escape(where.label)}[/]")
    r = run_demo(fresh=fresh, console=err, placement=where)
    out.print(f"\n[bold green]demo done[/] in {r.seconds:.0f} s" + (f" (reused: {escape(', '.join(r.reused))})" if r.reused else ""))
    out.print(f"  home        {escape(str(r.home))}")
    out.print(f"  adapters    {escape(', '.join(a.label for a in r.adapters))}")
    out.print(f"  images      {escape(str(r.folder / 'images'))}  (baseline and each adapter, PNG with A1111 parameters)")
    out.print(f"  probe sweep {escape(str(r.sweep))}")
    out.print(f"  report      {escape(str(r.report))}")
    from ..eval.features import WORLD_NOTE
    from ..eval.sweep import rho_text

    out.print(f"\n  what each LoRA learned ({WORLD_NOTE}):")
    out.print(f"    {'adapter':<18} {'style_sim':>16} {'probe: own style':>18} {'clip_t':>16}")
    for a in r.adapters:
        rows = {k: v for k, v in r.scores.items() if k == a.label or k.startswith("baseline vs ") and k.endswith(a.label)}
        mine = r.scores.get(a.label, {})
        base = next((v for k, v in rows.items() if k != a.label), {})
        shares = r.probe.get(a.name, {})
        p_mine = shares.get(a.label)
        p_base = next((v for k, v in shares.items() if k != a.label), None)

        def pair(m):
            if m not in mine or m not in base:
                return "n/a"
            return f"{base[m]:.3f} → {mine[m]:.3f}"

        probe_text = f"{p_base:.0%} → {p_mine:.0%}" if p_mine is not None and p_base is not None else "n/a"
        out.print(f"    {escape(a.name):<18} {pair('style_sim'):>16} {probe_text:>18} {pair('clip_t'):>16}")
    out.print("    (baseline → adapter, on the same prompts and seeds)")
    sw = r.sweep_result or {}
    if sw:
        shares = "  ".join(f"{s:.0%}" for s in sw["share_a"])
        out.print(f"  mix sweep: the probe's share for {escape(sw['a_class'])} at B weight "
                  f"{', '.join(f'{t:g}' for t in sw['t'])}: {shares}  (Spearman {rho_text(sw['spearman_a'])})")
    out.print("\nnext:")
    out.print("  styler tui                                   # browse everything, queue mixes")
    out.print("  styler scores                                # the comparison table")
    out.print('  styler mix demo/pixel=0.5 demo/watercolor=0.5 "a red circle on a blue background, pxl, wtrc" --out ./out')
    out.print("  styler data add my/style ./my-images --trigger mystyle   # your own images, then styler train my/style")
