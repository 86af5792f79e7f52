"""Where and in what precision styler runs: one choice, made here, for every command that renders,
scores or trains.

`auto` means CUDA if torch sees a GPU (bf16 where the GPU supports it, else fp16), then Apple's MPS
(fp16), else the CPU in fp32. A command's `--device`/`--dtype` wins over STYLER_DEVICE/STYLER_DTYPE,
which win over `device`/`dtype` in config.toml. Asking for a device that is not there is a usage
error (exit 2) that names the way out, raised before anything is loaded or written.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .errors import UsageError

ENV_DEVICE = "STYLER_DEVICE"
ENV_DTYPE = "STYLER_DTYPE"
DEVICE_CHOICES = "auto | cpu | cuda | cuda:N | mps"
DTYPE_CHOICES = "auto | fp32 | fp16 | bf16"
_DTYPE_NAMES = {"fp32": "fp32", "float32": "fp32", "float": "fp32", "fp16": "fp16", "float16": "fp16",
                "half": "fp16", "bf16": "bf16", "bfloat16": "bf16"}
_TORCH_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
# training's --precision (accelerate's names) -> the dtype frozen weights are kept in
PRECISION_DTYPE = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}


@dataclass(frozen=True)
class Placement:
    """A resolved device ("cpu", "cuda:0", "mps") and dtype ("fp32", "fp16", "bf16")."""

    device: str = "cpu"
    dtype: str = "fp32"

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, _TORCH_NAMES[self.dtype])

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def label(self) -> str:
        return f"{self.device} {self.dtype}"

    def as_dict(self) -> dict:
        return {"device": self.device, "dtype": self.dtype}


def _source(option: str | None, env: str, setting: str) -> tuple[str, str]:
    """(value, where it came from) with the usual precedence; ('auto', '') when nothing is set."""
    if option not in (None, ""):
        return option.strip().lower(), f"--{setting} {option.strip()}"
    value = os.environ.get(env, "").strip()
    if value:
        return value.lower(), f"{env}={value}"
    from .config import load_settings, settings_path

    value = getattr(load_settings(), setting)
    if value:
        return value.strip().lower(), f"{setting} = {value!r} in {settings_path()}"
    return "auto", ""


def _torch_build() -> str:
    import torch

    cuda = getattr(torch.version, "cuda", None)
    return f"torch {torch.__version__}" + ("" if cuda else " (a CPU-only build)")


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def check_device(text: str, where: str = "") -> str:
    """A concrete torch device string for `text`, or a UsageError naming the fix."""
    import torch

    where = where or f"--device {text}"
    if text == "auto":
        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.current_device()}"
        return "mps" if _mps_available() else "cpu"
    if text == "cpu":
        return "cpu"
    if text == "mps":
        if not _mps_available():
            raise UsageError(f"{where}: this machine has no Apple MPS device; use --device cpu")
        return "mps"
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not m:
        raise UsageError(f"{where}: unknown device; use {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise UsageError(f"{where}: {_torch_build()} sees no CUDA GPU here; use --device cpu")
    count = torch.cuda.device_count()
    index = int(m[1]) if m[1] is not None else torch.cuda.current_device()
    if index >= count:
        raise UsageError(f"{where}: torch sees {count} GPU(s), cuda:0 … cuda:{count - 1}; use one of those")
    return f"cuda:{index}"


def bf16_supported(device: str) -> bool:
    import torch

    if device.startswith("cuda"):
        try:
            return bool(torch.cuda.is_bf16_supported())
        except Exception:  # old drivers/builds raise instead of answering
            return False
    return device == "cpu"


def check_dtype(text: str, device: str, where: str = "") -> str:
    where = where or f"--dtype {text}"
    if text == "auto":
        if device.startswith("cuda"):
            return "bf16" if bf16_supported(device) else "fp16"
        return "fp16" if device == "mps" else "fp32"
    name = _DTYPE_NAMES.get(text)
    if name is None:
        raise UsageError(f"{where}: unknown dtype; use {DTYPE_CHOICES}")
    if name == "bf16" and device.startswith("cuda") and not bf16_supported(device):
        raise UsageError(f"{where}: this GPU has no bf16 support; use --dtype fp16")
    return name


def resolve_placement(device: str | None = None, dtype: str | None = None) -> Placement:
    """The device and dtype a command runs with: its options, else the environment, else config."""
    dev_text, dev_where = _source(device, ENV_DEVICE, "device")
    dev = check_device(dev_text, dev_where or "--device auto")
    dt_text, dt_where = _source(dtype, ENV_DTYPE, "dtype")
    return Placement(dev, check_dtype(dt_text, dev, dt_where or "--dtype auto"))


def weight_dtype(precision: str):
    """The torch dtype frozen weights are kept in under training's --precision (no | fp16 | bf16)."""
    return Placement("cpu", PRECISION_DTYPE.get(precision, "fp32")).torch_dtype


def cuda_summary() -> dict:
    """What torch can see: CUDA/MPS availability and, per GPU, its name, memory and bf16 support."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": props.name, "memory": int(props.total_memory),
                         "capability": f"{props.major}.{props.minor}", "bf16": bf16_supported(f"cuda:{i}")})
    return {"cuda": bool(torch.cuda.is_available()), "cuda_version": getattr(torch.version, "cuda", None),
            "mps": _mps_available(), "gpus": gpus}


def same_placement(recorded: dict | None, now: Placement) -> bool | None:
    """Whether an output's recorded device kind and dtype equal `now` (None when it recorded none)."""
    if not recorded or not recorded.get("device"):
        return None
    kind = lambda d: d.split(":")[0]  # noqa: E731 - cuda:0 and cuda:1 of one model give the same pixels
    return kind(recorded["device"]) == kind(now.device) and recorded.get("dtype") == now.dtype
