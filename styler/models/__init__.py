"""Base models: resolution (`--base`, STYLER_BASE, config, HF cache, tiny), loading, the tiny base.

Nothing here imports torch at module level; loading does, inside `load_pipeline`."""

from .load import load_pipeline, noise_scheduler
from .resolve import BaseModel, base_identity, list_models, resolve_base
from .tiny import TINY_VERSION, build_tiny, ensure_tiny, tiny_dir

__all__ = [
    "BaseModel", "TINY_VERSION", "base_identity", "build_tiny", "ensure_tiny", "list_models",
    "load_pipeline", "noise_scheduler", "resolve_base", "tiny_dir",
]
