"""`styler study`: a grid of training runs over one or two options, rendered into one sheet and one
scores table. `styler study DATASET --grid …` is `styler study start DATASET --grid …`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from .common import DeviceOpt, DtypeOpt, escape, note, out, print_json, registry


class _StudyGroup(TyperGroup):
    """Anything that is not a subcommand starts a study: `styler study DATASET --grid …`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_StudyGroup, no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]},
                  help="Studies: train one run per cell of a grid over training options (e.g. --grid lr=1e-4,3e-4 "
                       "--grid lr-text=1e-5,5e-5), then render the same prompts and seeds with every cell into one "
                       "labelled sheet and one scores table. `styler study DATASET …` starts one.")


def _opt(help: str, *names: str, **kw):
    return typer.Option(*names, help=help, show_default=False, **kw)


@app.command("start")
def start(
    dataset: Annotated[str, typer.Argument(help="Dataset NAME[@VERSION] every cell trains on.", show_default=False)],
    grid: Annotated[list[str], _opt("An axis OPTION=v1,v2,… (one or two; the first gives the sheet's columns), e.g. lr=1e-4,3e-4 or lr-text=1e-5,5e-5.", "--grid")] = [],  # noqa: B006
    name: Annotated[Optional[str], _opt("The study's name (default: DATASET-study); its cells' adapters are NAME/<cell>.")] = None,
    prompt: Annotated[Optional[list[str]], _opt("A prompt every cell renders (repeatable; default: the dataset's first two captions).")] = None,
    seed: Annotated[Optional[list[int]], _opt("A seed every prompt renders with (repeatable; default 0).")] = None,
    render_steps: Annotated[int, typer.Option("--render-steps", help="Sampling steps of the study's images.")] = 20,
    guidance: Annotated[float, typer.Option(help="CFG scale of the study's images.")] = 7.5,
    metrics: Annotated[Optional[str], _opt("Scores for the table (default clip_t,style_sim, against the dataset).")] = None,
    clip: Annotated[Optional[str], _opt("CLIP model for the scores (default: as `styler eval`).")] = None,
    size: Annotated[Optional[int], _opt("Image size of the study's images (default: the base's native size).")] = None,
    render: Annotated[bool, typer.Option("--render/--no-render", help="Queue the render as a follow-up job that waits for the training runs.")] = True,
    base: Annotated[Optional[str], _opt("Base model: tiny, an HF repo id, a folder or a .safetensors file.")] = None,
    method: Annotated[Optional[str], _opt("lora (default) | dreambooth | textual-inversion.")] = None,
    rank: Annotated[Optional[int], _opt("LoRA rank (default 16).")] = None,
    alpha: Annotated[Optional[float], _opt("LoRA alpha (default: = rank).")] = None,
    targets: Annotated[Optional[str], _opt("attn (default) | attn+conv | attn+conv+ff | comma list of module names.")] = None,
    text_encoder: Annotated[Optional[bool], _opt("Also train a LoRA on the text encoder.", "--text-encoder/--no-text-encoder")] = None,
    lr: Annotated[Optional[float], _opt("Learning rate of every cell (unless swept).")] = None,
    lr_text: Annotated[Optional[float], _opt("Text-encoder learning rate (unless swept).")] = None,
    scheduler: Annotated[Optional[str], _opt("LR schedule: constant | constant_with_warmup | linear | cosine | ….")] = None,
    warmup: Annotated[Optional[int], _opt("Warm-up steps.")] = None,
    steps: Annotated[Optional[int], _opt("Optimizer steps per cell (default 1000).")] = None,
    batch: Annotated[Optional[int], _opt("Batch size (default 1).")] = None,
    resolution: Annotated[Optional[int], _opt("Training resolution, a multiple of 8 (default: the base's native size).")] = None,
    train_seed: Annotated[Optional[int], _opt("Training seed of every cell (default 0).", "--train-seed")] = None,
    precision: Annotated[Optional[str], _opt("Mixed precision: no | fp16 | bf16.")] = None,
    checkpoint_every: Annotated[Optional[int], _opt("Resumable checkpoint every N steps.")] = None,
    class_prompt: Annotated[Optional[str], _opt("DreamBooth: the class prompt for prior images.")] = None,
    instance_prompt: Annotated[Optional[str], _opt("DreamBooth: the prompt for every instance image.")] = None,
    config: Annotated[Optional[Path], _opt("A TOML file of other `styler train` options every cell shares.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Queue one training run per grid cell, and a follow-up job that renders the sheet and scores."""
    from ..study import start_study
    from ..train.config import load_toml

    values = {**(load_toml(config) if config else {}),
              **{k: v for k, v in dict(base=base, method=method, rank=rank, alpha=alpha, targets=targets,
                                       text_encoder=text_encoder, lr=lr, lr_text=lr_text, scheduler=scheduler,
                                       warmup=warmup, steps=steps, batch=batch, resolution=resolution, seed=train_seed,
                                       precision=precision, checkpoint_every=checkpoint_every,
                                       class_prompt=class_prompt, instance_prompt=instance_prompt).items()
                 if v is not None}}
    study = start_study(dataset, grid, values, name=name, prompts=prompt, seeds=seed, follow_up=render,
                        render={"steps": render_steps, "guidance": guidance, "metrics": metrics, "clip": clip,
                                "size": size}, registry=registry())
    if as_json:
        print_json(study)
        return
    out.print(study["name"])
    axes = " × ".join(f"{a['field'].replace('_', '-')} ({len(a['values'])})" for a in study["axes"])
    then = "then renders the sheet and scores" if study["render_job"] else f"render with `styler study render {study['name']}`"
    note(f"queued {len(study['cells'])} training runs ({axes}) on {study['dataset']}; `styler worker` trains them "
         f"(one worker per GPU) and {then}; follow with `styler study show {study['name']}`")


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="The study's name (see `styler study ls`).", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Each cell's training state, adapter and scores, and where the sheet and table are."""
    from ..study import axes_of, cell_states, load_study

    reg = registry()
    study = load_study(reg, name)
    states = cell_states(reg, study)
    rendered = study.get("rendered") or {}
    scored = {tuple(r.get(a.option) for a in axes_of(study)): r for r in rendered.get("rows", [])}
    if as_json:
        print_json({**study, "states": [{"values": s.cell["values"], "status": s.status,
                                         "job_id": s.cell.get("job_id"),
                                         "run_id": (s.job.result or {}).get("run_id") if s.job else None,
                                         "adapter": s.adapter.label if s.adapter else None} for s in states]})
        return
    from rich.table import Table

    axes = axes_of(study)
    metrics = study["render"]["metrics"].split(",")
    table = Table(title=f"study {escape(study['name'])} on {escape(study['dataset'])}", title_justify="left")
    for a in axes:
        table.add_column(a.option)
    for col in ("status", "step", "adapter", *metrics):
        table.add_column(col, justify="right" if col in metrics or col == "step" else "left")
    for s in states:
        key = tuple(a.texts[k] for a, k in zip(axes, s.cell["index"]))
        result = (s.job.result or {}) if s.job else {}
        step = f"{result.get('step', 0)}/{result['total_steps']}" if result.get("total_steps") else "-"
        row = scored.get(key, {})
        table.add_row(*key, s.status if not (s.job and s.job.error) else f"{s.status}: {s.job.error}", step,
                      escape(s.adapter.label) if s.adapter else "-",
                      *[f"{row[m]:.4f}" if isinstance(row.get(m), (int, float)) else "-" for m in metrics])
    out.print(table)
    base = rendered.get("baseline")
    if base:
        out.print(f"[dim]{escape(base['name'])}: " + ", ".join(f"{m} {base[m]:.4f}" for m in metrics if m in base) + "[/]")
    if rendered:
        out.print(f"sheet   {escape(rendered['sheet'])}\ntable   {escape(rendered['table'])}")
    else:
        note(f"not rendered yet: the follow-up job does it once the cells are trained, or `styler study render {name}`")


@app.command("render")
def render(
    name: Annotated[str, typer.Argument(help="The study's name.", show_default=False)],
    partial: Annotated[bool, typer.Option("--partial", help="Render the trained cells while others still train.")] = False,
    queue: Annotated[bool, typer.Option("--queue", help="Queue the render for `styler worker` (after the study's training jobs).")] = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Render every trained cell's images into one labelled sheet and score them into one table."""
    from registry import jobs as Q

    from ..study import load_study, render_study, save_study
    from .common import placement, warn

    reg = registry()
    if queue:
        study = load_study(reg, name)
        job = Q.enqueue(reg, "study", {"study": name}, after=[c["job_id"] for c in study["cells"] if c.get("job_id")])
        study["render_job"] = job.id
        save_study(reg, study)
        out.print(job.id)
        note(f"queued the render of study {name}; it starts once its training jobs have ended")
        return
    made = render_study(name, registry=reg, placement=placement(device, dtype), warn=warn, partial=partial)
    out.print(f"sheet   {escape(str(made.sheet))}\ntable   {escape(str(made.table))}")


@app.command("ls")
def ls(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List studies: name, dataset, axes, cells trained, rendered or not."""
    from ..study import cell_states, list_studies

    reg = registry()
    studies = list_studies(reg)
    if as_json:
        print_json(studies)
        return
    if not studies:
        note("no studies; start one with `styler study DATASET --grid lr=1e-4,3e-4`")
        return
    for s in studies:
        trained = sum(1 for c in cell_states(reg, s) if c.adapter)
        axes = " × ".join(f"{a['field'].replace('_', '-')}={','.join(a['texts'])}" for a in s["axes"])
        done = "rendered" if s.get("rendered") else "not rendered"
        out.print(f"{escape(s['name'])}  {escape(s['dataset'])}  {escape(axes)}  {trained}/{len(s['cells'])} trained  [dim]{done}[/]")
