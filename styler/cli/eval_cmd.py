"""`styler eval`, `styler scores`, `styler report`: scores for adapters and mixes against the
baseline, a comparison table, and a picture of it all."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from .common import BatchOpt, DeviceOpt, DtypeOpt, escape, note, out, placement, print_json, registry, warn


class _DefaultRun(TyperGroup):
    """`styler eval NAME …` runs an evaluation; `styler eval probe …` is the probe."""

    def parse_args(self, ctx, args):
        # `styler eval --help` shows the evaluation's own options (run's help mentions probe)
        if args and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_DefaultRun, no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]},
                  help="Evaluate an adapter or a mix (and the baseline) with CLIP and FID-family scores; `probe` for the style probe.")


@app.command("run", hidden=True)
def run(
    subject: Annotated[str, typer.Argument(help="ADAPTER[@V], a mix like anime=0.5+watercolor=0.5, or baseline.", show_default=False)],
    prompts: Annotated[Optional[Path], typer.Option(help="Prompts, one per line (default: the adapter's dataset captions).")] = None,
    n: Annotated[int, typer.Option("--n", help="Images per subject.")] = 8,
    seed: Annotated[int, typer.Option(help="First seed; image i uses seed + i.")] = 0,
    metrics: Annotated[Optional[str], typer.Option(help="Comma list: clip_t, style_sim, fid, kid, cmmd (default: all that fit).")] = None,
    against: Annotated[Optional[str], typer.Option(help="Reference dataset (default: the adapter's own).")] = None,
    clip: Annotated[Optional[str], typer.Option(help="CLIP model: HF repo id in the cache, a folder, or tiny.")] = None,
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 20,
    guidance: Annotated[float, typer.Option(help="CFG scale.")] = 7.5,
    base: Annotated[Optional[str], typer.Option(help="Base model.")] = None,
    content: Annotated[Optional[Path], typer.Option(help="Score style transfer instead: a content image or a folder of them.")] = None,
    strength: Annotated[float, typer.Option(help="With --content: transfer strength.")] = 0.6,
    prompt: Annotated[Optional[str], typer.Option(help="With --content: the transfer prompt (default: a caption of the adapter's dataset).")] = None,
    batch: BatchOpt = 1,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Score a subject and the baseline (same prompts and seeds); with --content, score style transfer
    (content_sim, ssim, style_strength). See also `styler eval probe --help`."""
    from ..eval.run import evaluate, evaluate_transfer

    where = placement(device, dtype)
    if content is not None:
        result = evaluate_transfer(subject, content, strength=strength, seed=seed, prompt=prompt, clip=clip,
                                   steps=steps, guidance=guidance, base=base, warn=warn, placement=where)
    else:
        result = evaluate(subject, prompts_file=prompts, n=n, seed=seed, metrics=metrics, against=against, clip=clip,
                          steps=steps, guidance=guidance, base=base, batch=batch, warn=warn, placement=where)
    if as_json:
        print_json(result)
        return
    for name, values in result["scores"].items():
        shown = ", ".join(f"{m} {v:.4g}" for m, v in values.items())
        out.print(f"{escape(name)}: {escape(shown)}")
    note("compare with `styler scores`")


@app.command()
def probe(
    datasets: Annotated[list[str], typer.Argument(help="Two or more datasets, one per style.", show_default=False)],
    on: Annotated[Optional[str], typer.Option("--on", help="What to classify: an evaluated adapter or mix, output ids (comma list), or a folder of images.")] = None,
    sweep: Annotated[Optional[str], typer.Option("--sweep", help="A:B - mix adapter A into B at weights 0, .2, .4, .5, .6, .8, 1, render each and probe it (instead of --on).", show_default=False)] = None,
    n: Annotated[int, typer.Option("--n", help="With --sweep: images per weight (same prompts and seeds in every cell).")] = 8,
    seed: Annotated[int, typer.Option(help="With --sweep: the first seed (then seed+1, ...).")] = 0,
    steps: Annotated[int, typer.Option(help="With --sweep: sampling steps.")] = 20,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="With --sweep: folder for the images and the chart (default: the registry's).")] = None,
    clip: Annotated[Optional[str], typer.Option(help="CLIP model: HF repo id in the cache, a folder, or tiny.")] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """A linear probe on CLIP embeddings of the datasets: which style do the images read as?"""
    from ..errors import UsageError

    if (on is None) == (sweep is None):
        raise UsageError("give what to classify with --on X, or a mix sweep with --sweep A:B (one of the two)")
    if sweep is not None:
        from ..eval.sweep import parse_sweep, probe_sweep

        a, b = parse_sweep(sweep)
        result = probe_sweep(datasets, a, b, n=n, seed=seed, steps=steps, clip=clip, out_dir=out_dir, warn=warn,
                             placement=placement(device, dtype))
        if as_json:
            print_json(result)
            return
        out.print(f"probe sweep {escape(result['a'])} → {escape(result['b'])} ({n} images per weight; probe held-out "
                  f"accuracy {result['probe_val_accuracy'] if result['probe_val_accuracy'] is not None else 'n/a'})")
        for c in result["cells"]:
            shares = "  ".join(f"{escape(k)} {v:.2f}" for k, v in c["share"].items())
            out.print(f"  B weight {c['t']:<4g} {shares}")
        out.print(f"  Spearman(B weight, share {escape(result['a_class'])}) = {result['spearman_a']:+.2f}")
        out.print(f"  chart       {escape(result['chart'])}")
        return
    from ..eval.probing import run_probe

    result = run_probe(datasets, on, clip=clip, warn=warn, placement=placement(device, dtype))
    if as_json:
        print_json(result)
        return
    out.print(f"probe trained on {', '.join(map(escape, result['classes']))} "
              f"(held-out accuracy {result['val_accuracy'] if result['val_accuracy'] is not None else 'n/a'})")
    for cls, p in result["mean_probability"].items():
        out.print(f"  {escape(cls):<24} mean p {p:.3f}   argmax share {result['argmax_share'][cls]:.2f}")


def scores(
    names: Annotated[Optional[list[str]], typer.Argument(help="Subjects to show (default: all).", show_default=False)] = None,
    metric: Annotated[Optional[str], typer.Option(help="Only this metric.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV output.")] = False,
) -> None:
    """The comparison table: subjects and the baseline × metrics, the best per column in bold."""
    from ..eval.features import clip_note
    from ..eval.table import best, columns, latest_scores, ordered_subjects

    rows = latest_scores(registry(), names, metric)
    cols = columns(rows)
    subjects = ordered_subjects(rows)
    if as_json:
        print_json({s: {m: {"value": r.value, "protocol": r.protocol, "output_ids": r.output_ids}
                        for m, r in rows[s].items()} for s in subjects})
        return
    if as_csv:
        w = csv.writer(sys.stdout)
        w.writerow(["subject", *cols])
        for s in subjects:
            w.writerow([s, *[rows[s][m].value if m in rows[s] else "" for m in cols]])
        return
    if not rows:
        note("no scores yet; run `styler eval ADAPTER --clip …`")
        return
    from rich.table import Table

    t = Table(box=None, header_style="bold")
    t.add_column("subject", no_wrap=True)
    for m in cols:
        t.add_column(m + (" ↓" if m in {"fid", "kid", "cmmd"} else " ↑"), justify="right")
    winners = {m: best(rows, m) for m in cols}
    for s in subjects:
        cells = []
        for m in cols:
            if m not in rows[s]:
                cells.append("-")
                continue
            v = f"{rows[s][m].value:.4g}"
            cells.append(f"[bold green]{v}[/]" if winners[m] == s else v)
        t.add_row(escape(s), *cells)
    out.print(t)
    text = clip_note(r.protocol for row in rows.values() for r in row.values())
    if text:
        note(text)


def report(
    names: Annotated[list[str], typer.Argument(help="Subjects to include.", show_default=False)],
    out_file: Annotated[Path, typer.Option("--out", help="FILE.png or FILE.html.")],
) -> None:
    """A contact sheet of samples per subject and bar charts of their scores."""
    from ..eval.reporting import write_report

    path = write_report(names, out_file)
    out.print(str(path))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="eval", rich_help_panel="Evaluate")
    root.command("scores", rich_help_panel="Evaluate")(scores)
    root.command("report", rich_help_panel="Evaluate")(report)
