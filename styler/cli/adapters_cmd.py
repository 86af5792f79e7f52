"""`styler adapters …`: list and inspect trained or imported adapters."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .common import escape, note, out, print_json, registry

app = typer.Typer(no_args_is_help=True, help="Adapters: import, inspect, merge and export LoRA, LyCORIS (LoHa, LoKr) and embedding files.",
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
    ada = a.metadata.get("adalora")
    if ada:
        out.print(f"  adalora   ranks {ada['init_rank']} → {ada['target_rank']} per layer on average, "
                  f"{ada['total_rank']} in all over {ada['layers']} layers; targets {escape(', '.join(a.targets))}")
        width = max(len(n) for n in ada["ranks"])
        for layer, rank in sorted(ada["ranks"].items()):
            out.print(f"    {escape(layer):<{width}}  {rank}")
    elif a.rank:
        kind = a.method if a.method in ("loha", "lokr", "lycoris") else "lora"
        out.print(f"  {kind:<9} rank {a.rank}, alpha {a.alpha:g}, targets {escape(', '.join(a.targets))}")
    if a.trigger:
        out.print(f"  trigger   {escape(a.trigger)}")
    out.print(f"  dataset   {escape(dataset.label) if dataset else '(removed)'}")
    if run:
        out.print(f"  run       {run.id} {run.status}, {run.step}/{run.total_steps} steps, final loss "
                  f"{run.loss:.4f}" if run.loss is not None else f"  run       {run.id} {run.status}")
    for k in ("trainable_params", "commit", "styler_version"):
        if a.metadata.get(k):
            out.print(f"  {k:<9} {escape(json.dumps(a.metadata[k]) if not isinstance(a.metadata[k], str) else a.metadata[k])}")


@app.command("import")
def import_(
    file: Annotated[str, typer.Argument(help="A kohya/webui, diffusers or peft LoRA, a LyCORIS LoHa/LoKr .safetensors, or an embedding.", show_default=False)],
    name: Annotated[str, typer.Argument(help="Name to register it under.", show_default=False)],
    base: Annotated[str, typer.Option(help="Base model it is for (checked layer by layer).")] = "",
    as_json: Json = False,
) -> None:
    """Import an adapter file (the format is detected; pickles are refused)."""
    from ..adapters.library import import_adapter

    a = import_adapter(file, name, base_spec=base or None)
    if as_json:
        print_json(a.to_dict())
        return
    from ..adapters.lora import LAYER_NAMES

    kinds = a.metadata.get("layer_kinds") or {}  # only for files with LoHa/LoKr layers
    what = (": " + ", ".join(f"{n} {LAYER_NAMES[k]}" for k, n in kinds.items())) if kinds else ""
    out.print(f"imported [bold]{escape(a.label)}[/] from {escape(a.metadata.get('source_format', '?'))} format "
              f"({a.metadata.get('layers', 0)} layers{what})")


@app.command()
def export(
    name: Annotated[str, typer.Argument(help="NAME[@VERSION].", show_default=False)],
    format: Annotated[str, typer.Option("--format", help="kohya (A1111/ComfyUI; LoHa/LoKr stay LoHa/LoKr) | diffusers | peft.")] = "kohya",
    out_file: Annotated[str, typer.Option("--out", help="Output .safetensors file.")] = "",
) -> None:
    """Write an adapter in another format."""
    from ..adapters.library import export_adapter

    path = export_adapter(name, format, out_file or None)
    out.print(str(path))


@app.command()
def merge(
    new: Annotated[str, typer.Argument(help="Name of the merged adapter.", show_default=False)],
    parts: Annotated[list[str], typer.Argument(help="NAME[@V]=WEIGHT for each adapter.", show_default=False)],
    method: Annotated[str, typer.Option(help="concat (exact; ranks add up) | svd (approximate at --rank).")] = "concat",
    rank: Annotated[int, typer.Option(help="Rank for --method svd.")] = 0,
    as_json: Json = False,
) -> None:
    """Merge adapters into a new one."""
    from registry import parse_spec

    from ..adapters.library import merge_adapters

    specs = []
    for p in parts:
        spec = parse_spec(p)
        specs.append((str(spec.name), 1.0 if spec.weight is None else spec.weight))
    a, err = merge_adapters(new, specs, method=method, rank=rank or None)
    if as_json:
        print_json({"adapter": a.to_dict(), "relative_error": err})
        return
    extra = f"; relative error {err:.4f}" if err is not None else " (exact)"
    out.print(f"merged into [bold]{escape(a.label)}[/], rank {a.rank}{extra}")


@app.command()
def rm(
    name: Annotated[str, typer.Argument(help="NAME@VERSION for one version, NAME for all.", show_default=False)],
    yes: Annotated[bool, typer.Option("-y", "--yes", help="Do not ask.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would go.")] = False,
) -> None:
    """Remove adapter versions (files are freed by `styler registry prune`)."""
    from ..adapters.library import plan_remove, remove_adapters

    plan = plan_remove(name)
    for a in plan:
        out.print(f"{'would remove' if dry_run else 'remove'} {escape(a.label)}")
    if dry_run:
        return
    if not yes and not typer.confirm(f"remove {len(plan)} adapter version(s)?", err=True):
        raise typer.Exit(1)
    used = remove_adapters(plan)
    if used:
        note(f"{used} output(s) made with it keep its id in their records")
    note("free the files with `styler registry prune`")
