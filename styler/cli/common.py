"""What every command group shares: consoles (results to stdout, the rest to stderr), the
registry handle, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


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
