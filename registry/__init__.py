"""styler's local registry: records, content-addressed blobs, names. No torch, rich, textual or
typer here, and nothing from styler: this library stands alone."""

from .blobs import BlobStore, sha256_file
from .errors import Conflict, InvalidName, NotFound, RegistryCorrupt, RegistryError
from .home import styler_home
from .ids import is_id, new_id, now_iso
from .names import AdapterSpec, Name, is_spec, parse_name, parse_spec, parse_weight, split_specs
from .records import TABLES, Adapter, Dataset, Job, Output, Record, Run, Score
from .store import Registry

__all__ = [
    "Adapter", "AdapterSpec", "BlobStore", "Conflict", "Dataset", "InvalidName", "Job", "Name", "NotFound",
    "Output", "Record", "Registry", "RegistryCorrupt", "RegistryError", "Run", "Score", "TABLES",
    "is_id", "is_spec", "new_id", "now_iso", "parse_name", "parse_spec", "parse_weight", "sha256_file",
    "split_specs", "styler_home",
]
