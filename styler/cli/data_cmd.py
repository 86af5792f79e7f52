"""`styler data …`: import, list, inspect, remove, verify and synthesise datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import DeviceOpt, DtypeOpt, err, escape, human_bytes, note, out, placement, print_json, registry, warn

app = typer.Typer(
    no_args_is_help=True,
    help="Datasets: import a folder of images + captions, caption and edit them, inspect, verify, synthesise.",
    context_settings={"help_option_names": ["-h", "--help"]},
)

Name = Annotated[str, typer.Argument(help="Dataset name: 'name' or 'namespace/name' (e.g. calligraphy/mifu).", show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _progress(what: str = "checking images"):
    """A callback drawing a progress bar on stderr when it is a terminal, else nothing."""
    if not err.is_terminal:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), console=err, transient=True)
    task = bar.add_task("", total=None)
    return bar, lambda i, n: bar.update(task, completed=i, total=n)


def _report_added(report, as_json: bool) -> None:
    d = report.record
    for w in report.warnings():
        warn(w)
    if as_json:
        print_json({"dataset": d.to_dict(), "dropped": report.dropped, "missing_captions": report.missing_captions,
                    "orphan_captions": report.orphan_captions})
        return
    skipped = f", {d.n_dropped} skipped" if d.n_dropped else ""
    out.print(f"added [bold]{escape(d.label)}[/]: {d.n_images} images ({d.n_train} train, {d.n_val} val){skipped}")
    note(f"stored in {registry().home / d.path}; see it with `styler data show {d.label}`")
    if (d.options or {}).get("buckets"):
        note(f"pictures kept whole; train on their aspect ratios with `styler train {d.name} --buckets`")


@app.command()
def add(
    name: Name,
    src: Annotated[Path, typer.Argument(help="Folder of images, with captions as sidecar .txt/.caption files, metadata.jsonl or metadata.csv.", show_default=False)],
    prefix: Annotated[str, typer.Option(help="Text put before every caption, e.g. '书法'.")] = "",
    trigger: Annotated[str, typer.Option(help="Trigger word put first in every caption, e.g. 'mifu_style'.")] = "",
    caption_from: Annotated[str, typer.Option(help="Where captions come from: auto|txt|caption|jsonl|csv|filename|template.")] = "auto",
    template: Annotated[str, typer.Option(help="Caption for --caption-from template; {trigger} and {name} are filled in.")] = "",
    min_sharpness: Annotated[Optional[float], typer.Option(help="Drop images whose Laplacian variance is below this (100 is a common cut; off by default).")] = None,
    size: Annotated[Optional[int], typer.Option(help="Resize to this many pixels (multiple of 8); default keeps the images as they are.")] = None,
    crop: Annotated[str, typer.Option(help="With --size: center (square crop) or none (keep aspect, longer side = size).")] = "center",
    buckets: Annotated[bool, typer.Option("--buckets", help="Keep every picture whole for `styler train --buckets` (no crop, never enlarged); with --size S, pictures over S×S pixels in area are scaled down, aspect kept. --crop does not apply.")] = False,
    val_split: Annotated[float, typer.Option(help="Fraction held out for validation loss, e.g. 0.1.")] = 0.0,
    strict: Annotated[bool, typer.Option("--strict", help="Refuse the whole import if any file is bad or any caption is missing.")] = False,
    as_json: Json = False,
) -> None:
    """Import a folder as the next version of a dataset (all or nothing)."""
    from ..data.importer import ImportOptions, add_dataset

    opts = ImportOptions(prefix=prefix, trigger=trigger, caption_from=caption_from, template=template,
                         min_sharpness=min_sharpness, size=size, crop=crop, val_split=val_split, strict=strict,
                         buckets=buckets)
    bar, cb = _progress()
    if bar:
        with bar:
            report = add_dataset(name, src, opts, progress=cb)
    else:
        report = add_dataset(name, src, opts)
    _report_added(report, as_json)


@app.command()
def synth(
    name: Name,
    kind: Annotated[str, typer.Option(help="calligraphy | pixel | watercolor (characters, sprites, flowers), or the "
                                           "built-in world's shapes in a style: world-plain | world-pixel | "
                                           "world-watercolor | world-calligraphy | world-stripes.")] = "calligraphy",
    n: Annotated[int, typer.Option("--n", help="Number of images.")] = 16,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same images).")] = 0,
    size: Annotated[int, typer.Option(help="Image size in pixels.")] = 64,
    trigger: Annotated[str, typer.Option(help="Trigger word in every caption: first, as kohya puts it; last for the world-* kinds (the tiny base reads a leading made-up word badly).")] = "",
    val_split: Annotated[float, typer.Option(help="Fraction held out for validation.")] = 0.0,
    as_json: Json = False,
) -> None:
    """Synthesise a small style dataset (offline, deterministic) and import it."""
    from ..data.library import synth_dataset

    report = synth_dataset(name, kind=kind, n=n, seed=seed, size=size, trigger=trigger, val_split=val_split)
    _report_added(report, as_json)


@app.command("ls")
def ls(as_json: Json = False) -> None:
    """List datasets and their versions."""
    from registry import Dataset

    records = registry().all(Dataset)
    if as_json:
        print_json([d.to_dict() for d in records])
        return
    if not records:
        note("no datasets yet; add one with `styler data add NAME FOLDER` or `styler data synth NAME`")
        return
    from rich.table import Table

    t = Table(box=None, header_style="bold")
    t.add_column("name", no_wrap=True)
    for col in ("version", "images", "train/val", "dropped", "captions", "created"):
        t.add_column(col)
    for d in sorted(records, key=lambda d: (d.name, d.version)):
        t.add_row(escape(d.name), f"@{d.version}", str(d.n_images), f"{d.n_train}/{d.n_val}", str(d.n_dropped),
                  escape(d.caption_from), d.created_at[:19].replace("T", " "))
    out.print(t)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="NAME[@VERSION]; the latest version by default.", show_default=False)],
    samples: Annotated[int, typer.Option("--samples", help="How many image/caption pairs to list.")] = 8,
    as_json: Json = False,
) -> None:
    """Show a dataset version: stats, dropped files and a sample of image/caption pairs."""
    from ..data.library import dataset_view

    view = dataset_view(name, samples=samples)
    if as_json:
        print_json(view)
        return
    d = view["dataset"]
    out.print(f"[bold]{escape(d['name'])}@{d['version']}[/]  id {d['id']}")
    out.print(f"  folder     {escape(view['folder'])}")
    out.print(f"  source     {escape(d['source'])}")
    out.print(f"  images     {d['n_images']} ({d['n_train']} train, {d['n_val']} val), {d['n_dropped']} dropped, {human_bytes(view['bytes'])}")
    out.print(f"  captions   from {escape(d['caption_from'])}; prefix {escape(d['prefix'] or '-')}; trigger {escape(d['trigger'] or '-')}")
    derived = (d.get("options") or {}).get("derived_from")
    if derived:
        out.print(f"  made from  {escape(derived.get('label', '?'))}: {escape(derived.get('how', ''))}")
    s = d["stats"]
    out.print(f"  size       {s['width']['min']}–{s['width']['max']} × {s['height']['min']}–{s['height']['max']} px (median {s['width']['median']}×{s['height']['median']})")
    out.print(f"  sharpness  min {s['sharpness']['min']:.1f}, median {s['sharpness']['median']:.1f}, max {s['sharpness']['max']:.1f}")
    out.print(f"  hash       {d['content_hash'][:16]}…")
    if view["dropped"]:
        out.print(f"  dropped ({len(view['dropped'])}):")
        for item in view["dropped"][:samples]:
            out.print(f"    {escape(item['file'])}: {escape(item['reason'])}")
    out.print("  samples:")
    for item in view["samples"]:
        out.print(f"    {escape(item['file'])}  {escape('[' + item['split'] + ']')}  {escape(item['text'])}")


@app.command()
def rm(
    name: Annotated[str, typer.Argument(help="NAME@VERSION for one version, NAME for all of them.", show_default=False)],
    yes: Annotated[bool, typer.Option("-y", "--yes", help="Do not ask for confirmation.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be removed.")] = False,
) -> None:
    """Remove dataset versions (records first, then their folders)."""
    from ..data.library import plan_remove, remove_datasets

    plan = plan_remove(name)
    for d in plan:
        out.print(f"{'would remove' if dry_run else 'remove'} {escape(d.label)} ({d.n_images} images, {escape(d.path)})")
    if dry_run:
        return
    if not yes and not typer.confirm(f"remove {len(plan)} dataset version(s)?", err=True):
        raise typer.Exit(1)
    remove_datasets(plan)
    note(f"removed {len(plan)} version(s)")


@app.command()
def verify(
    name: Annotated[Optional[str], typer.Argument(help="NAME[@VERSION]; all datasets when omitted.", show_default=False)] = None,
    as_json: Json = False,
) -> None:
    """Re-hash dataset files against their manifests."""
    from ..data.library import verify_datasets

    checked, problems = verify_datasets(name)
    if as_json:
        print_json({"checked": checked, "problems": [p.__dict__ for p in problems]})
    else:
        for p in problems:
            out.print(f"[red]{escape(p.kind)}[/] {escape(p.where)}: {escape(p.detail)}")
        out.print(f"{len(checked)} dataset version(s) checked, {len(problems)} problem(s)")
    if problems:
        raise typer.Exit(1)



@app.command()
def caption(
    name: Annotated[str, typer.Argument(help="NAME[@VERSION] to caption; the latest version by default.", show_default=False)],
    model: Annotated[str, typer.Option("--with", help="Captioning model: a Hugging Face repo id in the local cache "
                                       "(e.g. Salesforce/blip-image-captioning-base, microsoft/git-base) or a local "
                                       "folder; BLIP, GIT or Florence-2, .safetensors weights only.", show_default=False)],
    prefix: Annotated[Optional[str], typer.Option(help="Text put before every new caption (default: the version's own "
                                                  "prefix; '' for none).", show_default=False)] = None,
    trigger: Annotated[Optional[str], typer.Option(help="Trigger word put first in every new caption (default: the "
                                                   "version's own; '' for none).", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the captions images already have.")] = False,
    only_missing: Annotated[bool, typer.Option("--only-missing", help="Caption only the images without a caption.")] = False,
    batch: Annotated[int, typer.Option("--batch", help="Images per forward pass.")] = 8,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Longest caption, in tokens.")] = 40,
    beams: Annotated[int, typer.Option("--beams", help="Beam search width (1: greedy).")] = 1,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    as_json: Json = False,
) -> None:
    """Caption a dataset's images with BLIP, GIT or Florence-2, saved as its next version."""
    from ..data.autocaption import caption_dataset

    if overwrite and only_missing:
        from ..errors import UsageError

        raise UsageError("--overwrite and --only-missing exclude each other; give one")
    mode = "overwrite" if overwrite else "only-missing" if only_missing else "auto"
    where = placement(device, dtype)
    bar, cb = _progress("captioning")
    kwargs = dict(placement=where, mode=mode, prefix=prefix, trigger=trigger, batch=batch, max_tokens=max_tokens,
                  beams=beams)
    if bar:
        with bar:
            report = caption_dataset(name, model, progress=cb, **kwargs)
    else:
        report = caption_dataset(name, model, **kwargs)
    saved, d = report.saved, report.saved.record
    if report.empty:
        warn(f"{report.model.label} gave {len(report.empty)} image(s) an empty caption (they keep only the trigger "
             f"and prefix): {', '.join(report.empty[:5])}" + (" …" if len(report.empty) > 5 else ""))
    if saved.same_as:
        warn(f"the captions are the same as {saved.same_as}'s")
    if as_json:
        print_json({"dataset": d.to_dict(), "from": saved.source.label, "model": report.model.label,
                    "captioned": report.captioned, "changed": saved.changed, "empty": report.empty,
                    "placement": where.as_dict()})
        return
    out.print(f"captioned [bold]{escape(d.label)}[/]: {len(report.captioned)} of {d.n_images} images with "
              f"{escape(report.model.label)} ({saved.changed} changed; {escape(saved.source.label)} is unchanged)")
    note(f"on {where.label}; see them with `styler data captions {d.label}`")


@app.command()
def captions(
    name: Annotated[str, typer.Argument(help="NAME[@VERSION]; the latest version by default.", show_default=False)],
    replace: Annotated[Optional[list[str]], typer.Option("--replace", help="FIND=REPLACEMENT: replace text in every "
                                                         "caption (plain text, case-sensitive; repeatable).",
                                                         show_default=False)] = None,
    prefix: Annotated[Optional[list[str]], typer.Option("--prefix", help="Add a leading tag ('TAG, caption') where a "
                                                        "caption lacks it (repeatable).", show_default=False)] = None,
    unprefix: Annotated[Optional[list[str]], typer.Option("--unprefix", help="Remove a leading tag where a caption "
                                                          "starts with it (repeatable).", show_default=False)] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="IMAGE=CAPTION: one image's caption, the image "
                                                      "named by its imported path or stored file (repeatable).",
                                                      show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; write nothing.")] = False,
    as_json: Json = False,
) -> None:
    """List a dataset version's captions, or edit them into its next version.

    Edits run in this order: --set, --replace, --unprefix, --prefix. The version edited stays as it was."""
    from ..data.caption_edits import open_draft, save_draft
    from ..errors import UsageError

    def split(option: str, value: str) -> tuple[str, str]:
        key, eq, rest = value.partition("=")
        if not eq or not key:
            example = "'a cat=a fox'" if option == "--replace" else "'img0.png=a fox'"
            raise UsageError(f"{option} {value!r}: expected {'FIND=REPLACEMENT' if option == '--replace' else 'IMAGE=CAPTION'} (e.g. {option} {example})")
        return key, rest

    sets = [split("--set", v) for v in set_ or []]
    replaces = [split("--replace", v) for v in replace or []]
    draft = open_draft(name)
    editing = bool(sets or replaces or prefix or unprefix)
    for image, text in sets:
        draft.set(draft.index_of(image), text)
    for find, new in replaces:
        if not draft.replace(find, new):
            raise UsageError(f"--replace: {find!r} is in no caption of {draft.dataset.label}; nothing was written")
    for tag in unprefix or []:
        draft.remove_tag(tag)
    for tag in prefix or []:
        draft.add_tag(tag)
    rows = [{"file": e["file"], "image": draft.label(i), "split": e["split"], "text": draft.texts[i],
             **({"was": draft.original[i]} if draft.texts[i] != draft.original[i] else {})}
            for i, e in enumerate(draft.entries)]
    if not editing or dry_run:
        shown = [r for r in rows if "was" in r] if editing else rows
        if as_json:
            print_json({"dataset": draft.dataset.label, "captions": shown})
            return
        for r in shown:
            out.print(f"{escape(r['image'])}  {escape('[' + r['split'] + ']')}  {escape(r['text'])}")
            if "was" in r:
                out.print(f"  [dim]was[/] {escape(r['was'])}")
        if editing:
            note(f"would change {len(shown)} of {len(rows)} captions; nothing was written (--dry-run)")
        return
    saved = save_draft(draft)
    d = saved.record
    if saved.same_as:
        warn(f"the captions are the same as {saved.same_as}'s")
    if as_json:
        print_json({"dataset": d.to_dict(), "from": saved.source.label, "changed": saved.changed,
                    "captions": [r for r in rows if "was" in r]})
        return
    out.print(f"saved [bold]{escape(d.label)}[/]: {saved.changed} of {d.n_images} captions changed "
              f"({escape(draft.summary())}); {escape(saved.source.label)} is unchanged")
