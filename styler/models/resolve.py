"""Which base model to use: `--base`, then STYLER_BASE, then config.toml, then an SD-1.5 model in
the local Hugging Face cache, then the built-in tiny one. No torch here: resolving reads files only.

A spec is `tiny`, a diffusers folder (with model_index.json), a `.safetensors` checkpoint, or a
Hugging Face repo id (`org/name`) looked up in the local HF cache (downloaded only when the user
allows downloads). Pickled checkpoints (.ckpt/.pt/.pth/.bin) are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, ModelNotFound, UsageError

TINY_NOTICE = ("tiny is a toy model pretrained on styler's built-in world of shapes and styles (64 px), for "
               "trying the workflow; set --base for real images")
# The one list of refused weight files, for base models, CLIP models and adapters alike. Pickles
# can run code when opened, so styler never opens them; the others are not pickles but weights
# styler cannot read (Flax msgpack, Keras/TensorFlow HDF5). Only .safetensors is read.
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})
NON_SAFETENSORS_WEIGHTS = {".msgpack": "Flax", ".h5": "Keras/TensorFlow"}
WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder")
# repos whose configs fit any SD-1.5 checkpoint; preferred in this order
SD15_REPOS = ("stable-diffusion-v1-5/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5",
              "CompVis/stable-diffusion-v1-4")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class BaseModel:
    name: str
    kind: str  # "tiny" | "hf" | "folder" | "single_file"
    path: Path
    detail: str = ""


# ---------------------------------------------------------------- the Hugging Face cache


def hf_cache_dir() -> Path:
    """The HF hub cache to search, read from the environment now (huggingface_hub reads it once
    at import): settings.hf_cache, HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, ~/.cache."""
    from ..config import load_settings

    configured = load_settings().hf_cache
    if configured:
        return Path(configured).expanduser()
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def is_repo_id(spec: str) -> bool:
    """Whether `spec` has the form of a Hugging Face repo id, `org/name`."""
    return bool(_REPO_ID.match(spec)) and not spec.startswith((".", "~"))


def _cached_snapshot(repo_id: str, cache: Path) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, cache_dir=str(cache), local_files_only=True))
    except LocalEntryNotFoundError as exc:
        # IncompleteSnapshotError (huggingface_hub >= 2): the hub's file list names files this
        # snapshot lacks, as after styler's own download of only what diffusers loads; callers
        # check the files they need
        partial = getattr(exc, "snapshot_path", None)
        return Path(partial) if partial else None
    except (OSError, ValueError):  # an id the hub refuses, an unreadable ref
        return None


def hf_snapshot(repo_id: str, cache: Path | None = None) -> Path | None:
    """The local snapshot of `repo_id` that its `refs/main` names, as huggingface_hub resolves it
    offline (`snapshot_download(local_files_only=True)`: what `from_pretrained(repo_id)` loads with
    downloads off); a repo cached under another letter case (the Hub's ids ignore case) is found
    too. None when the cache has no main snapshot of it. Never downloads."""
    cache = cache or hf_cache_dir()
    if not cache.is_dir():
        return None
    found = _cached_snapshot(repo_id, cache)
    if found is not None:
        return found
    from huggingface_hub import scan_cache_dir

    try:
        repos = scan_cache_dir(cache).repos
    except Exception:  # CacheNotFound, an unreadable folder: nothing cached to find
        return None
    for repo in sorted(repos, key=lambda r: r.repo_id):
        if repo.repo_type == "model" and repo.repo_id != repo_id and repo.repo_id.lower() == repo_id.lower():
            found = _cached_snapshot(repo.repo_id, cache)
            if found is not None:
                return found
    return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def family(folder: Path) -> str:
    """'tiny', 'sd15', 'sd2', 'other' (a StableDiffusionPipeline of another size) or '' (not one)."""
    if _read_json(folder / "model_index.json").get("_class_name") != "StableDiffusionPipeline":
        return ""
    if (folder / "styler_tiny.json").is_file():
        return "tiny"
    dim = _read_json(folder / "unet" / "config.json").get("cross_attention_dim")
    return {768: "sd15", 1024: "sd2"}.get(dim, "other")


def has_weights(folder: Path) -> bool:
    return all(weight_files(folder / c) for c in WEIGHT_COMPONENTS)


def scan_hf_cache(cache: Path | None = None) -> list[dict]:
    """Stable Diffusion pipelines in the HF cache (each at its main snapshot, see `hf_snapshot`):
    repo id, snapshot path, family, completeness."""
    from huggingface_hub import scan_cache_dir

    cache = cache or hf_cache_dir()
    found = []
    if not cache.is_dir():
        return found
    try:
        repos = scan_cache_dir(cache).repos  # a damaged repo is left out (a warning there), not fatal
    except Exception:
        return found
    for repo in sorted(repos, key=lambda r: r.repo_id):
        snap = _cached_snapshot(repo.repo_id, cache) if repo.repo_type == "model" else None
        fam = family(snap) if snap is not None else ""
        if fam:
            found.append({"repo_id": repo.repo_id, "path": snap, "family": fam, "complete": has_weights(snap)})
    return found


def _auto_hf() -> dict | None:
    usable = [m for m in scan_hf_cache() if m["family"] == "sd15" and m["complete"]]
    rank = {r.lower(): i for i, r in enumerate(SD15_REPOS)}
    usable.sort(key=lambda m: (rank.get(m["repo_id"].lower(), len(rank)), m["repo_id"]))
    return usable[0] if usable else None


def _fix_hint() -> str:
    from ..config import settings_path

    return (f"give a local folder with --base /path/to/folder, set STYLER_BASE, put base = \"...\" in "
            f"{settings_path()}, or set allow_download = true there to fetch it")


def _resolve_repo(repo_id: str, allow_download: bool, origin: str) -> BaseModel:
    cache = hf_cache_dir()
    from huggingface_hub import snapshot_download

    snap = hf_snapshot(repo_id, cache)
    if snap is None or not (snap / "model_index.json").is_file():
        if not allow_download:
            raise ModelNotFound(f"base model {repo_id!r}{origin} is not in the local Hugging Face cache "
                                f"({cache}) and downloads are off; {_fix_hint()}")
        try:
            snap = Path(snapshot_download(
                repo_id, cache_dir=str(cache),
                allow_patterns=["model_index.json", "*/*.json", "*/*.txt", "*/*.safetensors"],
                ignore_patterns=["*.fp16.*", "*.non_ema.*", "*.ema.*", "safety_checker/*"]))
        except Exception as exc:  # network, auth, missing repo: one line for the user
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelNotFound(f"could not download {repo_id!r} into {cache}: {line}") from None
        if not (snap / "model_index.json").is_file():
            raise ModelNotFound(f"{repo_id!r} has no model_index.json; it is not a diffusers pipeline repo")
    return BaseModel(name=repo_id, kind="hf", path=snap, detail=f"from the Hugging Face cache ({cache})")


def _tiny() -> BaseModel:
    from .tiny import ensure_tiny

    return BaseModel(name="tiny", kind="tiny", path=ensure_tiny(), detail=TINY_NOTICE)


def _resolve_spec(spec: str, allow_download: bool, origin: str) -> BaseModel:
    if spec.lower() == "tiny":
        return _tiny()
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return BaseModel(name=path.resolve().name, kind="folder", path=path.resolve())
        raise ModelNotFound(
            f"{path}{origin} is a folder without model_index.json; a base model folder is a diffusers "
            "pipeline saved with save_pretrained (model_index.json, unet/, vae/, text_encoder/, tokenizer/, "
            "scheduler/); also accepted: a .safetensors checkpoint, a Hugging Face repo id, or tiny")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            return BaseModel(name=path.stem, kind="single_file", path=path.resolve())
        if suffix in PICKLE_SUFFIXES:
            raise UsageError(
                f"{path}{origin} is a pickled checkpoint ({suffix}); styler does not unpickle files, which can "
                "run arbitrary code. Convert it to .safetensors with a tool you trust and pass that file")
        if suffix in NON_SAFETENSORS_WEIGHTS:
            raise UsageError(f"{path}{origin} holds {NON_SAFETENSORS_WEIGHTS[suffix]} weights ({suffix}); styler reads "
                             "only .safetensors: convert it, or use a copy of the model that has them")
        raise UsageError(f"{path}{origin} is not a base model: expected a .safetensors file, a diffusers "
                         "folder, a Hugging Face repo id or tiny")
    if is_repo_id(spec):
        return _resolve_repo(spec, allow_download, origin)
    raise ModelNotFound(f"base model {spec!r}{origin} not found: no such file or folder "
                        "(expected tiny, a diffusers folder, a .safetensors file or a Hugging Face repo id)")


def resolve_base(spec: str | None = None, *, allow_download: bool | None = None) -> BaseModel:
    """The base model to use, from `spec`, STYLER_BASE, config.toml's base, the HF cache, or tiny.

    A BaseModel of kind "tiny" carries TINY_NOTICE in `detail`, for callers to print once."""
    from ..config import ENV_BASE, load_settings, settings_path

    settings = load_settings()
    if allow_download is None:
        allow_download = settings.allow_download
    origin = ""
    if not spec:
        spec, origin = os.environ.get(ENV_BASE, "").strip(), f" (from {ENV_BASE})"
    if not spec:
        spec, origin = settings.base.strip(), f" (from base in {settings_path()})"
    if spec:
        return _resolve_spec(spec.strip(), allow_download, origin)
    found = _auto_hf()
    if found:
        return BaseModel(name=found["repo_id"], kind="hf", path=found["path"],
                         detail="found in the Hugging Face cache (no base configured)")
    return _tiny()


# ---------------------------------------------------------------- files, headers, identity


def weight_files(component_dir: Path) -> list[Path]:
    """The safetensors weights diffusers loads for a component (no variants like .fp16)."""
    if not component_dir.is_dir():
        return []
    return sorted(p for p in component_dir.glob("*.safetensors") if p.name.count(".") == 1)


def safetensors_header(path: Path) -> dict:
    """The checked JSON header of a safetensors file (registry.headers, the one reader), its
    problems as InputError."""
    from registry.headers import BadSafetensors, read_safetensors_header

    try:
        return read_safetensors_header(path)
    except BadSafetensors as exc:
        raise InputError(exc.message) from None


def tensor_stats(path: Path) -> dict:
    """Parameter count, dtypes and size of a safetensors file, from its header alone."""
    header = safetensors_header(path)
    params, dtypes = 0, set()
    for key, value in header.items():
        if key == "__metadata__":
            continue
        count = 1
        for dim in value["shape"]:
            count *= int(dim)
        params += count
        dtypes.add(value["dtype"])
    return {"params": params, "dtypes": sorted(dtypes), "bytes": path.stat().st_size}


def identity_files(base: BaseModel) -> list[tuple[str, Path]]:
    if base.kind == "single_file":
        return [(base.path.name, base.path)]
    files = [("model_index.json", base.path / "model_index.json")]
    for comp in WEIGHT_COMPONENTS:
        files += [(f"{comp}/{p.name}", p) for p in weight_files(base.path / comp)]
    return files


def _file_digest(path: Path, cache: dict) -> str:
    from registry.blobs import sha256_file

    real = path.resolve()
    # files in the HF cache are links to blobs named by their sha256 (LFS files)
    if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
        return real.name
    st = real.stat()
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    if key not in cache:
        cache[key] = sha256_file(real)
    return cache[key]


def base_identity(base: BaseModel) -> dict:
    """name, kind and a content hash of the base (the file's sha256 for a single file, else a
    sha256 over model_index.json and the unet/vae/text_encoder weights). Per-file hashes are cached
    in <home>/models/hashes.json keyed by path, size and mtime, so big files are read once."""
    from filelock import FileLock

    from ..config import home

    root = home()
    (root / ".locks").mkdir(parents=True, exist_ok=True)
    cache_path = root / "models" / "hashes.json"
    with FileLock(str(root / ".locks" / "hashes.lock")):
        cache = _read_json(cache_path)
        before = dict(cache)
        lines = []
        for rel, path in identity_files(base):
            if not path.is_file():
                raise InputError(f"{path} is missing; cannot identify base model {base.name!r}")
            lines.append(f"{rel} {_file_digest(path, cache)}")
        if cache != before:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_name(f".hashes.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n", "utf-8")
            os.replace(tmp, cache_path)
    if base.kind == "single_file":
        digest = lines[0].split(" ", 1)[1]
    else:
        digest = hashlib.sha256("".join(line + "\n" for line in lines).encode()).hexdigest()
    return {"name": base.name, "kind": base.kind, "hash": digest}


# ---------------------------------------------------------------- listing


def list_models() -> list[dict]:
    """What `styler models ls` shows: tiny, the configured base, SD pipelines in the HF cache."""
    from ..config import ENV_BASE, home, load_settings
    from ..errors import StylerError
    from .tiny import is_built, tiny_dir

    tdir = tiny_dir(home())
    rows = [{"name": "tiny", "kind": "tiny", "path": str(tdir), "source": "built-in",
             "status": "built" if is_built(tdir) else "not built (built on first use)", "detail": TINY_NOTICE}]
    configured = os.environ.get(ENV_BASE, "").strip() or load_settings().base.strip()
    if configured and configured.lower() != "tiny":
        source = ENV_BASE if os.environ.get(ENV_BASE, "").strip() else "config.toml"
        try:
            base = _resolve_spec(configured, False, "")
            rows.append({"name": base.name, "kind": base.kind, "path": str(base.path), "source": source,
                         "status": "ok", "detail": base.detail})
        except StylerError as exc:
            rows.append({"name": configured, "kind": "?", "path": "", "source": source,
                         "status": "error", "detail": exc.message})
    for m in scan_hf_cache():
        status = "cached" if m["complete"] else "incomplete (weights missing)"
        rows.append({"name": m["repo_id"], "kind": "hf", "path": str(m["path"]), "source": "hf-cache",
                     "status": status, "detail": f"family {m['family']}"})
    return rows
