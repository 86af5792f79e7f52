"""Home directory, the user settings file (`<home>/config.toml`) and defaults."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from registry.home import styler_home

from .errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_BASE = "STYLER_BASE"


@dataclass(frozen=True)
class Settings:
    """User settings; every key may be set in config.toml."""

    base: str = ""  # default base model: tiny, an HF repo id, a folder, or a .safetensors file
    clip: str = ""  # CLIP model for evaluation
    allow_download: bool = False  # let styler fetch models from the Hugging Face Hub
    hf_cache: str = ""  # override of the Hugging Face cache folder to search
    device: str = ""  # auto | cpu | cuda | cuda:N | mps (STYLER_DEVICE and --device override it)
    dtype: str = ""  # auto | fp32 | fp16 | bf16 (STYLER_DTYPE and --dtype override it)


def home() -> Path:
    return styler_home()


def settings_path() -> Path:
    return home() / "config.toml"


def load_settings() -> Settings:
    """Read config.toml; a broken file is a usage error naming the file and the problem."""
    path = settings_path()
    if not path.is_file():
        return Settings()
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid TOML ({exc}); fix or delete it") from None
    known = {f.name: f.type for f in fields(Settings)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UsageError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for key, value in data.items():
        want = bool if known[key] in (bool, "bool") else str
        if not isinstance(value, want):
            raise UsageError(f"{path}: {key} must be a {want.__name__}, got {value!r}")
    return Settings(**data)


def save_settings(settings: Settings) -> Path:
    import tomli_w

    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    data = {k: v for k, v in asdict(settings).items() if v not in ("", None)}
    tmp.write_text(tomli_w.dumps(data), encoding="utf-8")
    os.replace(tmp, path)
    return path
