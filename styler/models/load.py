"""Loading a resolved base model into a StableDiffusionPipeline (safety checker off, no progress
bars), with every loader failure turned into one StylerError line that names the file."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import InputError, ModelNotFound, StylerError
from .resolve import (SD15_REPOS, WEIGHT_COMPONENTS, BaseModel, _read_json, hf_cache_dir, safetensors_header,
                      scan_hf_cache, weight_files)

ENV_SINGLE_FILE_CONFIG = "STYLER_SINGLE_FILE_CONFIG"
_CONFIG_FILES = ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                 "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json")
_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


@contextlib.contextmanager
def quiet():
    """Silence diffusers/transformers progress bars and info/warnings for the duration."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    saved = (dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled(), dlog.get_verbosity(), tlog.get_verbosity())
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    dlog.set_verbosity(dlog.ERROR)
    tlog.set_verbosity(tlog.ERROR)
    try:
        yield
    finally:
        (dlog.enable_progress_bar if saved[0] else dlog.disable_progress_bar)()
        (tlog.enable_progress_bar if saved[1] else tlog.disable_progress_bar)()
        dlog.set_verbosity(saved[2])
        tlog.set_verbosity(saved[3])


def _torch_dtype(dtype):
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise InputError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16")
    return getattr(torch, name)


def _dtype_keyword() -> str:
    """diffusers renamed from_pretrained's torch_dtype to dtype (and warns on the old name)."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def check_folder(folder: Path) -> None:
    """Fail early, naming the file, when a diffusers folder lacks weights or has broken ones."""
    index = _read_json(folder / "model_index.json")
    if not index:
        raise InputError(f"{folder / 'model_index.json'} is missing or not valid JSON")
    for comp in WEIGHT_COMPONENTS:
        if comp not in index:
            raise InputError(f"{folder} has no {comp} in model_index.json; not a Stable Diffusion pipeline")
        files = weight_files(folder / comp)
        if not files:
            raise InputError(f"{folder / comp} has no .safetensors weights (pickled .bin weights are not loaded)")
        for f in files:
            safetensors_header(f)


def find_single_file_config(config: str | os.PathLike | None = None) -> Path:
    """A diffusers folder whose configs and tokenizer fit an SD-1.5 single-file checkpoint."""
    candidates: list[Path] = []
    explicit = config or os.environ.get(ENV_SINGLE_FILE_CONFIG)
    if explicit:
        candidates.append(Path(explicit).expanduser())
    else:
        cached = {m["repo_id"].lower(): m for m in scan_hf_cache() if m["family"] == "sd15"}
        for repo in SD15_REPOS:
            if repo.lower() in cached:
                candidates.append(cached.pop(repo.lower())["path"])
        candidates += [m["path"] for _, m in sorted(cached.items())]
    for folder in candidates:
        if all((folder / f).is_file() for f in _CONFIG_FILES):
            return folder
    if explicit:
        missing = [f for f in _CONFIG_FILES if not (Path(explicit) / f).is_file()]
        raise ModelNotFound(f"{explicit} cannot configure a single-file checkpoint: missing {', '.join(missing)}")
    raise ModelNotFound(
        "a single-file checkpoint needs the SD-1.5 configs and tokenizer from a diffusers folder, and none was "
        f"found in the Hugging Face cache ({hf_cache_dir()}); download stable-diffusion-v1-5/stable-diffusion-v1-5 "
        f"once (its configs are enough), or point {ENV_SINGLE_FILE_CONFIG} (or config=) at an SD-1.5 diffusers "
        "folder, or use a diffusers folder as --base")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def load_pipeline(base: BaseModel, *, device: str = "cpu", dtype=None, config: str | os.PathLike | None = None):
    """The base as a StableDiffusionPipeline on `device` (safety checker off, progress bars off).

    tiny/hf/folder load with `from_pretrained` (local files only: hf snapshots were fetched, if
    allowed, by resolve_base); single files with `from_single_file` plus a local SD-1.5 config
    folder (`config`, STYLER_SINGLE_FILE_CONFIG, or one found in the HF cache)."""
    torch_dtype = _torch_dtype(dtype)
    path = Path(base.path)
    if not path.exists():
        raise ModelNotFound(f"base model {base.name!r}: {path} does not exist")
    kwargs = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    with quiet():
        from diffusers import StableDiffusionPipeline

        if torch_dtype is not None:
            kwargs[_dtype_keyword()] = torch_dtype

        try:
            if base.kind == "single_file":
                safetensors_header(path)
                cfg = find_single_file_config(config)
                pipe = StableDiffusionPipeline.from_single_file(
                    str(path), config=str(cfg), local_files_only=True, **kwargs)
            else:
                check_folder(path)
                pipe = StableDiffusionPipeline.from_pretrained(
                    str(path), local_files_only=True, use_safetensors=True, **kwargs)
            pipe = pipe.to(device)
        except StylerError:
            raise
        except Exception as exc:  # diffusers/transformers/safetensors/OSError: one line naming the model
            raise InputError(f"cannot load base model {base.name!r} from {path}: {_one_line(exc)}") from None
    pipe.safety_checker = None
    pipe.set_progress_bar_config(disable=True)
    return pipe


def noise_scheduler(pipe):
    """A DDPMScheduler with the pipeline's training schedule (for the trainer's noise)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)
