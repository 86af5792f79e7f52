"""`styler doctor`: what styler would run with here — package versions, GPUs, the home, the base
and CLIP it resolves — and a warning for every combination known to break. It reads; it never
builds the tiny models or downloads anything."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import re
from pathlib import Path

PACKAGES = ("styler", "torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "torchmetrics",
            "huggingface-hub", "textual", "typer", "numpy")


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _v(text: str | None) -> tuple[int, ...]:
    """'5.24.0.dev0' -> (5, 24, 0): enough to compare release numbers."""
    if not text:
        return ()
    return tuple(int(x) for x in re.findall(r"\d+", text.split("+")[0])[:3])


# (what breaks, the fix, predicate over {package: version tuple}); dated facts, checked by the tests
KNOWN_BAD = (
    ("transformers >= 5.24 needs peft >= 0.22 (not released on 2026-12-01): adapters fail to load",
     "pip install 'transformers<5.24' (or a peft >= 0.22 once it exists)",
     lambda v: v["transformers"] >= (5, 24) and v["peft"] and v["peft"] < (0, 22)),
    ("diffusers < 0.41 loads text-encoder LoRAs wrongly with transformers 5's CLIP module names "
     "(< 0.34 also saves no adapter metadata, so alpha != rank reloads at the wrong scale)",
     "pip install 'diffusers>=0.41'",
     lambda v: v["diffusers"] and v["diffusers"] < (0, 41)),
    ("transformers < 5.6 names the CLIP text encoder's modules text_model.*: text-encoder LoRAs and mixes fail",
     "pip install 'transformers>=5.6,<5.24'",
     lambda v: v["transformers"] and v["transformers"] < (5, 6)),
    ("peft < 0.20 is refused by transformers 5.23 and older diffusers: adapters fail to load",
     "pip install 'peft>=0.20'",
     lambda v: v["peft"] and v["peft"] < (0, 20)),
)
# These mirror pyproject.toml's floors and guard (their evidence is written there); a test checks
# that each floor there has its line here.


def known_bad(versions: dict[str, str | None]) -> list[str]:
    """One line per known-bad combination among `versions` ({package: version string or None})."""
    v = {k: _v(versions.get(k)) for k in ("transformers", "peft", "diffusers", "torch")}
    return [f"{what}; fix: {fix}" for what, fix, bad in KNOWN_BAD if bad(v)]


def _nvidia_driver_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or bool(os.environ.get("NVIDIA_VISIBLE_DEVICES"))


def _base() -> dict:
    from .config import ENV_BASE, load_settings
    from .errors import StylerError
    from .models import resolve as R
    from .models.tiny import is_built, tiny_dir

    spec = os.environ.get(ENV_BASE, "").strip() or load_settings().base.strip()
    try:
        if spec and spec.lower() != "tiny":
            b = R.resolve_base(spec, allow_download=False)
            return {"name": b.name, "kind": b.kind, "path": str(b.path), "detail": b.detail}
        if not spec:
            found = R._auto_hf()
            if found:
                return {"name": found["repo_id"], "kind": "hf", "path": str(found["path"]),
                        "detail": "found in the Hugging Face cache (no base configured)"}
    except StylerError as exc:
        return {"name": spec, "kind": "error", "path": "", "detail": exc.message}
    from .config import home

    folder = tiny_dir(home())
    return {"name": "tiny", "kind": "tiny", "path": str(folder),
            "detail": ("built" if is_built(folder) else "built on first use") + "; for trying the workflow"}


def _clip() -> dict:
    from .config import load_settings
    from .errors import StylerError
    from .eval import features as F

    spec = os.environ.get(F.ENV_CLIP, "").strip() or load_settings().clip.strip()
    if not spec:
        return {"name": "", "detail": "not configured: eval needs --clip (a CLIP folder, an HF repo id in the cache, "
                                      "or tiny) or `clip = ...` in config.toml"}
    if spec.lower() == "tiny":
        return {"name": "clip-tiny", "detail": "built-in toy CLIP (scores not comparable with real CLIP)"}
    try:
        ref = F.resolve_clip(spec)
    except StylerError as exc:
        return {"name": spec, "detail": f"problem: {exc.message}"}
    return {"name": ref.name, "path": str(ref.path), "detail": ref.kind}


def diagnose() -> dict:
    """Everything `styler doctor` prints, as data."""
    from .config import home
    from .device import cuda_summary, resolve_placement
    from .errors import StylerError

    versions = {name: _version(name) for name in PACKAGES}
    report: dict = {"versions": versions, "warnings": known_bad(versions), "home": str(home())}
    try:
        import torch  # noqa: F401

        report["torch"] = cuda_summary()
    except Exception as exc:  # a broken torch install is what doctor is for
        report["torch"] = {"error": f"{type(exc).__name__}: {exc}"}
        report["warnings"].append(f"torch does not import ({type(exc).__name__}: {exc}); reinstall it")
    t = report["torch"]
    if not t.get("error") and not t.get("cuda") and _nvidia_driver_present():
        report["warnings"].append(
            f"an NVIDIA driver is present but torch {versions['torch']} sees no CUDA GPU"
            + (" (it is a CPU-only build)" if not t.get("cuda_version") else "")
            + "; install the CUDA build of torch for your driver (pytorch.org), then reinstall styler with the lock")
    try:
        report["placement"] = resolve_placement().as_dict()
    except StylerError as exc:
        report["placement"] = {"error": exc.message}
        report["warnings"].append(exc.message)
    report["bitsandbytes"] = _version("bitsandbytes")
    report["nvml"] = importlib.util.find_spec("pynvml") is not None
    if t.get("cuda") and not report["nvml"]:
        report["warnings"].append("nvidia-ml-py is not installed: the memory panel shows no GPU utilisation or "
                                  "temperature; pip install 'styler[gpu]'")
    report["base"] = _base()
    if report["base"]["kind"] == "error":
        report["warnings"].append(f"base model: {report['base']['detail']}")
    report["clip"] = _clip()
    return report
