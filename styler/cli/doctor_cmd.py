"""`styler doctor`: versions, GPUs, the home, the base and CLIP, and known-bad combinations."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import escape, human_bytes, out, print_json


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """What styler runs with here: versions, CUDA/MPS and GPUs, home, base, CLIP; warns of known-bad setups."""
    from ..doctor import diagnose

    r = diagnose()
    if as_json:
        print_json(r)
        return
    out.print("[bold]versions[/]")
    for name, v in r["versions"].items():
        out.print(f"  {name:<16} {escape(v or 'not installed')}")
    out.print(f"  {'bitsandbytes':<16} {escape(r['bitsandbytes'] or 'not installed (needed for --optimizer adamw8bit)')}")
    out.print(f"  {'nvidia-ml-py':<16} {'installed' if r['nvml'] else 'not installed (GPU utilisation in the memory panel)'}")
    t = r["torch"]
    out.print("[bold]devices[/]")
    if t.get("error"):
        out.print(f"  torch: {escape(t['error'])}")
    else:
        out.print(f"  CUDA  {'yes, CUDA ' + str(t['cuda_version']) if t['cuda'] else 'no' + ('' if t['cuda_version'] else ' (CPU-only torch build)')}")
        for g in t["gpus"]:
            out.print(f"    cuda:{g['index']}  {escape(g['name'])}  {human_bytes(g['memory'])}  "
                      f"compute {g['capability']}  bf16 {'yes' if g['bf16'] else 'no'}")
        out.print(f"  MPS   {'yes' if t['mps'] else 'no'}")
    p = r["placement"]
    out.print(f"  styler runs on  {escape(p.get('error') or p['device'] + ' ' + p['dtype'])}"
              "  (--device/--dtype, STYLER_DEVICE/STYLER_DTYPE or config.toml change it)")
    out.print("[bold]styler[/]")
    out.print(f"  home  {escape(r['home'])}")
    b = r["base"]
    out.print(f"  base  {escape(b['name'])} ({escape(b['kind'])}{', ' + escape(b['path']) if b['path'] else ''})"
              f"{': ' + escape(b['detail']) if b.get('detail') else ''}")
    c = r["clip"]
    out.print(f"  clip  {escape(c['name'] or '-')}{': ' + escape(c['detail']) if c.get('detail') else ''}")
    if r["warnings"]:
        out.print("[bold yellow]warnings[/]")
        for w in r["warnings"]:
            out.print(f"  [yellow]![/] {escape(w)}")
    else:
        out.print("[green]no known problems[/]")
