"""Named, idempotent schema migrations, applied every time a Registry opens and recorded once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .store import Registry


def _create_layout(reg: "Registry") -> None:
    for sub in ("registry", "blobs/sha256", "blobs/tmp", "datasets", "runs", "models", ".locks"):
        (reg.home / sub).mkdir(parents=True, exist_ok=True)


def _create_table_files(reg: "Registry") -> None:
    # Every table has its active file, so `verify` can tell an empty table from a lost file.
    from .records import TABLES

    for table in TABLES:
        active = reg.table_path(table)
        if not active.exists():
            from .storage import write_json_atomic

            write_json_atomic(active, {table: {}})


MIGRATIONS: list[tuple[str, Callable[["Registry"], None]]] = [
    ("0001_create_layout", _create_layout),
    ("0002_create_table_files", _create_table_files),
]
