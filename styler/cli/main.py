"""The `styler` entry point: builds the app from the command groups and maps errors to one line."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from .. import __version__


class _StylerGroup(TyperGroup):
    """Maps styler's own errors to one red line on stderr and their exit code
    (STYLER_DEBUG=1 shows the traceback instead)."""

    def invoke(self, ctx):
        from registry.errors import RegistryError

        from ..errors import StylerError

        try:
            return super().invoke(ctx)
        except (StylerError, RegistryError) as exc:
            if os.environ.get("STYLER_DEBUG"):
                raise
            from .common import err, escape

            err.print(f"[red]error:[/] {escape(exc.message)}")
            raise typer.Exit(exc.exit_code) from None

CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="styler",
    cls=_StylerGroup,
    help="Train, organise, mix and evaluate Stable Diffusion style adapters.",
    no_args_is_help=True,
    context_settings=CONTEXT,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"styler {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """Train, organise, mix and evaluate Stable Diffusion style adapters."""


@app.command(rich_help_panel="Setup")
def home() -> None:
    """Print the styler home directory (STYLER_HOME, else the platform's data dir)."""
    from registry import styler_home

    typer.echo(str(styler_home()))


def _add_groups() -> None:
    from . import (adapters_cmd, data_cmd, demo_cmd, doctor_cmd, eval_cmd, generate_cmd, models_cmd, registry_cmd,
                   runs_cmd, train_cmd)

    app.command("demo", rich_help_panel="Setup")(demo_cmd.demo)
    app.command("doctor", rich_help_panel="Setup")(doctor_cmd.doctor)
    app.add_typer(data_cmd.app, name="data", rich_help_panel="Data")
    app.command("train", rich_help_panel="Train")(train_cmd.train)
    app.add_typer(runs_cmd.app, name="runs", rich_help_panel="Train")
    app.add_typer(adapters_cmd.app, name="adapters", rich_help_panel="Train")
    from . import study_cmd

    app.add_typer(study_cmd.app, name="study", rich_help_panel="Train")
    generate_cmd.register(app)
    eval_cmd.register(app)
    from . import explain_cmd

    explain_cmd.register(app)
    app.add_typer(models_cmd.app, name="models", rich_help_panel="Setup")
    app.add_typer(registry_cmd.app, name="registry", rich_help_panel="Setup")
    from . import tui_cmd

    app.command("tui", rich_help_panel="Dashboard")(tui_cmd.tui)
    from . import worker_cmd

    app.command("worker", rich_help_panel="Jobs")(worker_cmd.worker)
    app.add_typer(worker_cmd.jobs_app, name="jobs", rich_help_panel="Jobs")


_add_groups()


def _click_errors() -> tuple[type, ...]:
    """The ClickException classes in play: typer >= 0.26 raises its own vendored copy of click's."""
    classes = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            classes.append(__import__(module, fromlist=["ClickException"]).ClickException)
        except ImportError:
            pass
    return tuple(classes)


def _usage_line(exc) -> str:
    """One line naming what was wrong and where to look: `Invalid value for '--steps': … (see styler generate --help)`."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "styler"
    return f"{message} (see `{path} --help`)" if getattr(exc, "exit_code", 1) == 2 else message


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    try:
        rc = app(args=argv, prog_name="styler", standalone_mode=False)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except typer.Abort:
        sys.stderr.write("aborted\n")
        return 1
    except Exception as exc:
        if isinstance(exc, _click_errors()):
            sys.stderr.write(f"error: {_usage_line(exc)}\n")
            return exc.exit_code
        if type(exc).__name__ == "Abort":  # click's or typer's vendored Abort (Ctrl-C at a prompt)
            sys.stderr.write("aborted\n")
            return 1
        if os.environ.get("STYLER_DEBUG"):
            raise
        sys.stderr.write(f"error: unexpected {type(exc).__name__}: {exc} (set STYLER_DEBUG=1 for the traceback)\n")
        return 1
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
