"""`styler runs …`: what a training run left in its folder."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import escape, note, out, print_json, registry

app = typer.Typer(
    no_args_is_help=True,
    help="Training runs: their validation sample sheets.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.command("samples")
def samples(
    run: Annotated[str, typer.Argument(help="The run's id (or a unique end of it, as the dashboard shows).", show_default=False)],
    columns: Annotated[int, typer.Option("--columns", help="At most this many steps, evenly spaced with the first and the "
                                                           "latest (0 = every step).")] = 16,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """(Re)build a run's sheet of validation images (a row per prompt, a column per step); prints its path."""
    from ..errors import UsageError
    from ..train.samples import build_sample_sheet, find_run

    if columns < 0:
        raise UsageError(f"--columns {columns}: give 1 or more, or 0 for every step")
    reg = registry()
    sheet = build_sample_sheet(reg, find_run(reg, run), max_columns=columns)
    if as_json:
        print_json({"sheet": str(sheet.path), "prompts": sheet.prompts, "steps": sheet.steps,
                    "all_steps": sheet.all_steps})
        return
    out.print(escape(str(sheet.path)))
    cut = f" (of {len(sheet.all_steps)}; --columns 0 shows all)" if len(sheet.steps) < len(sheet.all_steps) else ""
    note(f"{len(sheet.prompts)} prompt(s) × {len(sheet.steps)} step(s){cut}: "
         f"{', '.join(map(str, sheet.steps))}")
