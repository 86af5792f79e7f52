"""Named, idempotent schema migrations, applied every time a Registry opens and recorded once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .store import Registry


def _create_layout(reg: "Registry") -> None:
    for sub in ("registry", "blobs/sha256", "blobs/tmp", "datasets", "runs", "models", ".locks"):
        (reg.home / sub).mkdir(parents=True, exist_ok=True)


def _create_table_files(reg: "Registry") -> None:
    # Every table has its active file, so `verify` can tell an empty table from a lost file. Only
    # in a registry without table files yet: re-applied (its record moved aside), this migration
    # must not stand an empty table in for one that was lost.
    from .records import TABLES
    from .storage import write_json_atomic

    if any(p.name.endswith(".json") and p.name.split(".", 1)[0] in TABLES for p in reg.dir.iterdir()):
        return
    for table in TABLES:
        write_json_atomic(reg.table_path(table), {table: {}})


MIGRATIONS: list[tuple[str, Callable[["Registry"], None]]] = [
    ("0001_create_layout", _create_layout),
    ("0002_create_table_files", _create_table_files),
]
