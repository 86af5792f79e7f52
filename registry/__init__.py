"""styler's local registry: records, content-addressed blobs, names. No torch, rich, textual or
typer here, and nothing from styler: this library stands alone."""

from .blobs import BlobStore, sha256_file
from .errors import Conflict, InvalidName, NotFound, RegistryCorrupt, RegistryError
from .home import styler_home
from .ids import is_id, new_id, now_iso
from .names import Name, parse_name
from .records import TABLES, Adapter, Dataset, Job, Output, Record, Run, Score
from .store import Registry

__all__ = [
    "Adapter", "BlobStore", "Conflict", "Dataset", "InvalidName", "Job", "Name", "NotFound",
    "Output", "Record", "Registry", "RegistryCorrupt", "RegistryError", "Run", "Score", "TABLES",
    "is_id", "new_id", "now_iso", "parse_name", "sha256_file", "styler_home",
]
