"""`styler registry …`: look at every table, verify files and records, prune what nothing uses."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import escape, human_bytes, note, out, print_json, registry

app = typer.Typer(
    no_args_is_help=True,
    help="The local registry: list records, verify files, prune unused data.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _summary(r) -> str:
    """One line describing a record, whatever its table."""
    from registry import Adapter, Dataset, Job, Output, Run, Score

    if isinstance(r, Dataset):
        return f"{r.n_images} images, captions from {r.caption_from}"
    if isinstance(r, Adapter):
        return f"{r.method} rank {r.rank} on {r.base.get('name', '?')}"
    if isinstance(r, Run):
        return f"{r.method} {r.status} step {r.step}/{r.total_steps}"
    if isinstance(r, Output):
        from ..tui.provenance import output_source

        mix = " + ".join(f"{a.get('name')}={a.get('weight')}" for a in r.adapters) or output_source(r)
        return f"{r.kind} [{mix}] {r.prompt[:40]}"
    if isinstance(r, Score):
        return f"{r.metric} = {r.value}"
    if isinstance(r, Job):
        return f"{r.kind} {r.status}"
    return ""


@app.command("ls")
def ls(
    table: Annotated[Optional[str], typer.Argument(help="datasets|adapters|runs|outputs|scores|jobs; counts of all when omitted.", show_default=False)] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many, newest first (0 = all).")] = 50,
    as_json: Json = False,
) -> None:
    """List records of a table, or count every table."""
    from registry import TABLES

    from ..errors import UsageError

    reg = registry()
    types = reg.record_types()
    if table is None:
        counts = {t: reg.count(types[t]) for t in TABLES}
        if as_json:
            print_json({"home": str(reg.home), "counts": counts})
            return
        out.print(f"registry at {escape(str(reg.home))}")
        for t, n in counts.items():
            out.print(f"  {t:<9} {n}")
        return
    if table not in types:
        raise UsageError(f"unknown table {table!r}; use one of {', '.join(TABLES)}")
    if table == "runs":  # store what a run whose process is gone reads as (interrupted)
        from registry.maintenance import record_gone_runs

        record_gone_runs(reg)
    records = list(reversed(reg.all(types[table])))
    if limit:
        records = records[:limit]
    if as_json:
        print_json([r.to_dict() for r in records])
        return
    if not records:
        note(f"no {table} yet")
        return
    from rich.table import Table

    t = Table(box=None, header_style="bold")
    t.add_column("id", no_wrap=True)
    t.add_column("name", no_wrap=True)
    t.add_column("created", no_wrap=True)
    t.add_column("summary", overflow="fold")
    for r in records:
        t.add_row(r.id, escape(getattr(r, "label", "") if r.VERSIONED else "-"), r.created_at[:19].replace("T", " "), escape(_summary(r)))
    out.print(t)


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="A record id, or NAME[@VERSION] of a dataset or adapter.", show_default=False)],
    as_json: Json = False,
) -> None:
    """Show one record in full, whatever its table."""
    from registry import Adapter, Dataset, NotFound, is_id

    reg = registry()
    found = None
    if is_id(ref):
        for cls in reg.record_types().values():
            try:
                found = reg.get(cls, ref.upper())
                break
            except NotFound:
                continue
    else:
        matches = []
        for cls in (Dataset, Adapter):
            try:
                matches.append(reg.resolve(cls, ref))
            except NotFound:
                continue
        if len(matches) > 1:
            from ..errors import UsageError

            ids = " or ".join(f"{m.TABLE[:-1]} {m.label} ({m.id})" for m in matches)
            raise UsageError(f"{ref!r} names both a {ids}; give the id, or use `styler data show {ref}` / "
                             f"`styler adapters show {ref}`")
        found = matches[0] if matches else None
    if found is None:
        raise NotFound(f"nothing in the registry matches {ref!r}; list records with `styler registry ls TABLE`")
    data = found.to_dict()
    if as_json:
        print_json({"table": found.TABLE, **data})
        return
    import json

    out.print(f"[bold]{found.TABLE[:-1]} {escape(found.label)}[/]")
    from registry import Output

    if isinstance(found, Output):
        from ..tui.provenance import output_source

        out.print(f"  {'made by':<14} {escape(output_source(found))}")
    for k, v in data.items():
        shown = json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else str(v)
        out.print(f"  {k:<14} {escape(shown)}")


@app.command()
def verify(
    rehash: Annotated[bool, typer.Option("--rehash/--no-rehash", help="Re-hash every blob (slower, thorough).")] = True,
    as_json: Json = False,
) -> None:
    """Check every table file, blob and dataset folder; exit 1 when something is wrong."""
    from registry.maintenance import leftover_temp_files
    from registry.maintenance import verify as run_verify

    reg = registry()
    problems = run_verify(reg, rehash=rehash)
    temps = leftover_temp_files(reg)
    if temps:
        note(f"{len(temps)} temp file(s) ({human_bytes(sum(n for _, n in temps))}) left in {reg.dir} by interrupted "
             f"writes; `styler registry prune` removes those older than a few minutes")
    if as_json:
        print_json([p.__dict__ for p in problems])
    else:
        for p in problems:
            out.print(f"[red]{escape(p.kind)}[/] {escape(p.where)}: {escape(p.detail)}")
        out.print("registry ok" if not problems else f"{len(problems)} problem(s)")
    if problems:
        raise typer.Exit(1)


@app.command()
def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the plan.")] = False,
    yes: Annotated[bool, typer.Option("-y", "--yes", help="Do not ask for confirmation.")] = False,
    as_json: Json = False,
) -> None:
    """Remove blobs no record uses, folders no record points to, and stale temp files."""
    from registry.maintenance import execute_prune, plan_prune

    reg = registry()
    plan = plan_prune(reg)
    if as_json and dry_run:
        print_json({"blobs": plan.blobs, "orphan_dirs": plan.orphan_dirs, "temp_files": plan.temp_files, "bytes": plan.bytes})
        return
    if plan.empty:
        out.print("nothing to prune")
        return
    for digest, size in plan.blobs:
        out.print(f"  blob   {digest[:16]}…  {human_bytes(size)}")
    for path, size in plan.orphan_dirs:
        out.print(f"  folder {escape(path)}  {human_bytes(size)}")
    for path, size in plan.temp_files:
        out.print(f"  temp   {escape(path)}  {human_bytes(size)}")
    out.print(f"{'would free' if dry_run else 'frees'} {human_bytes(plan.bytes)}")
    if dry_run:
        return
    if not yes and not typer.confirm("prune these?", err=True):
        raise typer.Exit(1)
    freed = execute_prune(reg, plan)
    out.print(f"freed {human_bytes(freed)}")


@app.command()
def rebuild(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the plan.")] = False,
    empty: Annotated[Optional[list[str]], typer.Option("--empty", help="Start this damaged table empty (runs, outputs, scores, jobs: they cannot be rebuilt from files); its file is kept aside.", show_default=False)] = None,
    yes: Annotated[bool, typer.Option("-y", "--yes", help="Do not ask for confirmation.")] = False,
    as_json: Json = False,
) -> None:
    """Restore the records of a damaged or missing datasets/adapters table from the files on disk
    (dataset manifests, adapter blobs' metadata). Healthy records and files are never rewritten;
    a damaged file is moved aside to FILE.bad."""
    from registry.rebuild import execute_rebuild, plan_rebuild

    reg = registry()
    plan = plan_rebuild(reg, empty=tuple(empty or ()))
    if as_json and dry_run:
        print_json({"problems": [p.__dict__ for p in plan.problems], "move_aside": plan.move_aside,
                    "records": {t: [r.to_dict() for r in rs] for t, rs in plan.records.items()},
                    "emptied": plan.emptied, "left": [p.__dict__ for p in plan.left], "notes": plan.notes})
        return
    if not plan.problems:
        out.print("every table is healthy; nothing to rebuild")
        return
    for src, dest in plan.move_aside:
        out.print(f"  move   {escape(src)} -> {escape(dest)}")
    for table in plan.emptied:
        out.print(f"  empty  {escape(table)} (its records are not restored)")
    for table, records in plan.records.items():
        for r in records:
            where = r.path if table == "datasets" else f"blob {r.blob[:12]}…, {r.method}"
            out.print(f"  {table[:-1]:<7} {escape(r.label)}  ({escape(where)})")
    for note_text in plan.notes:
        note(note_text)
    for p in plan.left:
        out.print(f"[red]not rebuilt[/] {escape(p.where)}: {escape(p.detail)}")
    n = sum(len(rs) for rs in plan.records.values())
    if plan.empty:
        out.print("nothing rebuild can restore from the files on disk")
        raise typer.Exit(1 if plan.left else 0)
    out.print(f"{'would restore' if dry_run else 'restores'} {n} record(s)")
    if dry_run:
        return
    if not yes and not typer.confirm("rebuild?", err=True):
        raise typer.Exit(1)
    added = execute_rebuild(reg, plan)
    out.print(f"restored {sum(added.values())} record(s)")
    if plan.left:
        raise typer.Exit(1)
