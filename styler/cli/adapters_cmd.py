"""`styler adapters …`: list and inspect trained or imported adapters."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .common import escape, note, out, print_json, registry

app = typer.Typer(no_args_is_help=True, help="Adapters: list and inspect LoRAs and embeddings.",
                  context_settings={"help_option_names": ["-h", "--help"]})
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command("ls")
def ls(as_json: Json = False) -> None:
    """List adapters and their versions."""
    from registry import Adapter

    records = registry().all(Adapter)
    if as_json:
        print_json([a.to_dict() for a in records])
        return
    if not records:
        note("no adapters yet; train one with `styler train DATASET`")
        return
    from rich.table import Table

    t = Table(box=None, header_style="bold")
    t.add_column("name", no_wrap=True)
    for col in ("version", "method", "rank", "alpha", "base", "created"):
        t.add_column(col)
    for a in sorted(records, key=lambda a: (a.name, a.version)):
        t.add_row(escape(a.name), f"@{a.version}", a.method, str(a.rank or "-"), f"{a.alpha:g}" if a.alpha else "-",
                  escape(a.base.get("name", "?")), a.created_at[:19].replace("T", " "))
    out.print(t)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="NAME[@VERSION].", show_default=False)],
    as_json: Json = False,
) -> None:
    """Show an adapter with its provenance: run, dataset version, base model, file."""
    from registry import Adapter, BlobStore, Dataset, NotFound, Run

    reg = registry()
    a = reg.resolve(Adapter, name)
    run = dataset = None
    try:
        run = reg.get(Run, a.run_id) if a.run_id else None
    except NotFound:
        pass
    try:
        dataset = reg.get(Dataset, a.dataset_id) if a.dataset_id else None
    except NotFound:
        pass
    path = BlobStore(reg.home).path(a.blob)
    if as_json:
        print_json({"adapter": a.to_dict(), "file": str(path), "run": run.to_dict() if run else None,
                    "dataset": dataset.to_dict() if dataset else None})
        return
    out.print(f"[bold]{escape(a.label)}[/]  ({a.method})  id {a.id}")
    out.print(f"  file      {escape(str(path))}")
    out.print(f"  base      {escape(a.base.get('name', '?'))} ({a.base.get('hash', '')[:12]}…)")
    if a.rank:
        out.print(f"  lora      rank {a.rank}, alpha {a.alpha:g}, targets {escape(', '.join(a.targets))}")
    if a.trigger:
        out.print(f"  trigger   {escape(a.trigger)}")
    out.print(f"  dataset   {escape(dataset.label) if dataset else '(removed)'}")
    if run:
        out.print(f"  run       {run.id} {run.status}, {run.step}/{run.total_steps} steps, final loss "
                  f"{run.loss:.4f}" if run.loss is not None else f"  run       {run.id} {run.status}")
    for k in ("trainable_params", "commit", "styler_version"):
        if a.metadata.get(k):
            out.print(f"  {k:<9} {escape(json.dumps(a.metadata[k]) if not isinstance(a.metadata[k], str) else a.metadata[k])}")
