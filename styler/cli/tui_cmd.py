"""`styler tui`: the dashboard. Textual loads only when the command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def tui(
    home: Annotated[Optional[Path], typer.Option("--home", help="Styler home to show (default: STYLER_HOME, else the platform's data dir).",
                                                 show_default=False)] = None,
) -> None:
    """Dashboard: datasets, adapters, runs (live), outputs with previews, scores, and the job queue."""
    from ..tui.app import run

    run(home)
