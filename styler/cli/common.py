"""What every command group shares: consoles (results to stdout, the rest to stderr), the
registry handle, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


DeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", help="auto | cpu | cuda | cuda:N | mps (default: STYLER_DEVICE, else config.toml, else auto: "
                     "the GPU if torch sees one).", show_default=False)]
DtypeOpt = Annotated[Optional[str], typer.Option(
    "--dtype", help="auto | fp32 | fp16 | bf16 (default: STYLER_DTYPE, else config.toml, else auto: bf16 or fp16 "
                    "on a GPU, fp32 on the CPU).", show_default=False)]
BatchOpt = Annotated[int, typer.Option(
    "--batch", help="Images per forward pass; each has its own seed, so the images are those of --batch 1.")]


def placement(device: str | None, dtype: str | None):
    """Resolve --device/--dtype before anything is loaded or written (a missing GPU is exit 2)."""
    from ..device import resolve_placement

    return resolve_placement(device, dtype)


def registry():
    from registry import Registry

    return Registry()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}")


def note(message: str) -> None:
    err.print(f"[dim]{escape(message)}[/]")


def escape(text: str) -> str:
    from rich.markup import escape as _escape

    return _escape(str(text))


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
