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
from .generate_cmd import Sched


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
    metrics: Annotated[Optional[str], typer.Option(help="Comma list: clip_t, style_sim, fid, kid, cmmd, legibility (default: all that fit; legibility when the prompts ask for Chinese characters and the ocr extra is installed).")] = None,
    against: Annotated[Optional[str], typer.Option(help="Reference dataset (default: the adapter's own).")] = None,
    clip: Annotated[Optional[str], typer.Option(help="CLIP model: HF repo id in the cache, a folder, or tiny.")] = None,
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 20,
    guidance: Annotated[float, typer.Option(help="CFG scale.")] = 7.5,
    scheduler: Sched = "ddim",
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
                                   steps=steps, guidance=guidance, base=base, warn=warn, placement=where,
                                   scheduler=scheduler)
    else:
        result = evaluate(subject, prompts_file=prompts, n=n, seed=seed, metrics=metrics, against=against, clip=clip,
                          steps=steps, guidance=guidance, base=base, batch=batch, warn=warn, placement=where,
                          scheduler=scheduler)
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
    guidance: Annotated[float, typer.Option(help="With --sweep: CFG scale.")] = 7.5,
    scheduler: Annotated[str, typer.Option("--scheduler", help="With --sweep: the sampler (as for `styler generate`).")] = "ddim",
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
        from ..eval.sweep import parse_sweep, probe_sweep, rho_text

        a, b = parse_sweep(sweep)
        result = probe_sweep(datasets, a, b, n=n, seed=seed, steps=steps, guidance=guidance, scheduler=scheduler,
                             clip=clip, out_dir=out_dir, warn=warn, placement=placement(device, dtype))
        if as_json:
            print_json(result)
            return
        out.print(f"probe sweep {escape(result['a'])} → {escape(result['b'])} ({n} images per weight, {steps} "
                  f"{escape(scheduler)} steps at CFG {guidance:g}; probe held-out accuracy {result['probe_val_accuracy'] if result['probe_val_accuracy'] is not None else 'n/a'})")
        for c in result["cells"]:
            shares = "  ".join(f"{escape(k)} {v:.2f}" for k, v in c["share"].items())
            out.print(f"  B weight {c['t']:<4g} {shares}")
        out.print(f"  Spearman(B weight, share {escape(result['a_class'])}) = {rho_text(result['spearman_a'])}")
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
    history: Annotated[bool, typer.Option("--all", help="Every eval, oldest first, not only the newest per subject.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV output.")] = False,
) -> None:
    """The comparison table: subjects and baselines × metrics with n; the best among comparable adapters in bold."""
    from ..eval.features import clip_note
    from ..eval.table import columns, latest_scores, ordered_subjects, row_n, row_winners

    reg = registry()
    if history:
        _score_history(reg, names, metric, as_json, as_csv)
        return
    rows = latest_scores(reg, names, metric)
    cols = columns(rows)
    subjects = ordered_subjects(rows)
    if as_json:
        print_json({s: {m: {"value": r.value, "protocol": r.protocol, "output_ids": r.output_ids}
                        for m, r in rows[s].items()} for s in subjects})
        return
    if as_csv:
        w = csv.writer(sys.stdout)
        w.writerow(["subject", "n", *cols])
        for s in subjects:
            w.writerow([s, row_n(rows[s]), *[rows[s][m].value if m in rows[s] else "" for m in cols]])
        return
    if not rows:
        note("no scores yet; run `styler eval ADAPTER --clip …`")
        return
    winners = row_winners(rows)
    cells = {s: [_cell(rows[s].get(m), s in winners.get(m, ())) for m in cols] for s in subjects}
    heads = [m + (" ↓" if m in {"fid", "kid", "cmmd"} else " ↑") for m in cols]
    _print_table(subjects, {s: row_n(rows[s]) for s in subjects}, heads, cells)
    text = clip_note(r.protocol for row in rows.values() for r in row.values())
    if text:
        note(text)


def _cell(score, is_best: bool) -> str:
    if score is None:
        return "-"
    v = f"{score.value:.4g}"
    return f"[bold green]{v}[/]" if is_best else v


def _print_table(subjects: list[str], ns: dict, heads: list[str], cells: dict) -> None:
    """A table when it fits the terminal; else one block per subject, a metric per line, so no
    metric name is ever cut."""
    from rich.table import Table

    width = out.width
    need = max(len(s) for s in subjects) + 5 + sum(max(len(h), 6) + 2 for h in heads)
    if need <= width:
        t = Table(box=None, header_style="bold")
        t.add_column("subject", no_wrap=True)
        t.add_column("n", justify="right")
        for h in heads:
            t.add_column(h, justify="right", no_wrap=True)
        for s in subjects:
            t.add_row(escape(s), ns[s], *cells[s])
        out.print(t)
        return
    label = max(len(h) for h in heads)
    for s in subjects:
        out.print(f"[bold]{escape(s)}[/]  n {ns[s]}")
        for h, c in zip(heads, cells[s]):
            out.print(f"  {h:<{label}}  {c}")


def _score_history(reg, names, metric, as_json: bool, as_csv: bool) -> None:
    """Every eval of the chosen subjects: one row per (subject, eval), oldest first."""
    from registry import Score

    from ..eval.run import SubjectQuery

    import json

    query = SubjectQuery(names, reg) if names else None
    open_evals: dict[tuple, dict] = {}
    history: list[dict] = []
    for sc in reg.all(Score):  # oldest first; one eval writes each metric of a subject once
        if (metric and sc.metric != metric) or (query and not query(sc.subject)):
            continue
        key = (sc.subject.get("name", "?"), json.dumps(sc.protocol, sort_keys=True, default=str))
        row = open_evals.get(key)
        if row is None or sc.metric in row["scores"]:
            row = {"subject": sc.subject.get("name", "?"), "n": sc.protocol.get("n"),
                   "against": (sc.protocol.get("against") or {}).get("name", ""), "first_id": sc.id, "scores": {}}
            open_evals[key] = row
            history.append(row)
        row["scores"][sc.metric] = sc.value
    if as_json:
        print_json(history)
        return
    cols = sorted({m for r in history for m in r["scores"]})
    if as_csv:
        w = csv.writer(sys.stdout)
        w.writerow(["eval", "subject", "n", "against", *cols])
        for r in history:
            w.writerow([r["first_id"], r["subject"], r["n"], r["against"], *[r["scores"].get(m, "") for m in cols]])
        return
    if not history:
        note("no scores yet; run `styler eval ADAPTER --clip …`")
        return
    for r in history:
        values = "  ".join(f"{m} {v:.4g}" for m, v in r["scores"].items())
        out.print(f"{r['first_id']}  {escape(r['subject'])}  n {r['n']}  {escape(values)}")


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
