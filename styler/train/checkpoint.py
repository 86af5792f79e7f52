"""Training checkpoints: safetensors for tensors, JSON for the rest; no unsafe serialisation.

run_dir/checkpoints/step-0000020/ holds trainable.safetensors, optimizer.safetensors + .json,
scheduler.json, rng.safetensors + .json, scaler.json (the fp16 GradScaler's scale and growth
tracker, when there is one), state.json and, written last, the COMPLETE marker. It is
written as step-0000020.tmp-<random>, fsynced, then renamed into place; folders without the
marker are never used.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from styler.errors import InputError, StylerError, WriteError

FORMAT_VERSION = 1
MARKER = "COMPLETE"
_NAME = re.compile(r"^step-(\d+)$")


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def checkpoint_step(path: Path) -> int:
    m = _NAME.match(Path(path).name)
    if not m:
        raise InputError(f"{path} is not a checkpoint folder (expected a name like step-0000020)")
    return int(m.group(1))


# JSON encoding: tuples, non-string keys and (where allowed) tensors survive the round trip

def _encode(obj: Any, key: str, tensors: dict | None, what: str) -> Any:
    import torch

    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        if tensors is None:
            raise StylerError(f"cannot save the {what}: {key} (tensor) is not JSON-serialisable")
        name = key if key not in tensors else f"{key}#{len(tensors)}"
        tensors[name] = obj.detach().to("cpu").clone().contiguous()
        return {"__tensor__": name}
    if type(obj).__module__ == "numpy" and hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{key}.{i}", tensors, what) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{key}.{i}", tensors, what) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, f"{key}.{k}", tensors, what) for k, v in obj.items()}
        return {"__items__": [[_encode(k, f"{key}.<key>", tensors, what),
                               _encode(v, f"{key}.{k}", tensors, what)] for k, v in obj.items()]}
    raise StylerError(f"cannot save the {what}: {key} ({type(obj).__name__}) is not "
                      "JSON-serialisable")


def _decode(obj: Any, tensors: dict | None = None) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]  # KeyError is turned into InputError by the loader
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _write_file(path: Path, data: bytes) -> None:
    """Write bytes and fsync them; every checkpoint file goes through here."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_json(path: Path, obj: Any) -> None:
    _write_file(path, (json.dumps(obj, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))


def _write_tensors(path: Path, tensors: dict) -> None:
    from safetensors.torch import save

    _write_file(path, save(tensors, metadata={"format": str(FORMAT_VERSION)}))


def _fsync_dir(path: Path) -> None:
    try:  # not supported for folders on every platform
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _rng_state() -> tuple[dict, dict]:
    import numpy as np
    import torch

    tensors = {"torch": torch.get_rng_state().clone()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s.cpu().clone()
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return tensors, {"python": [version, list(internal), gauss],
                     "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def _scaler_state(scaler) -> dict | None:
    """A loss scaler's state (torch.amp.GradScaler and anything with the same state_dict), or None
    without one or when it is disabled (its state_dict is then empty)."""
    if scaler is None:
        return None
    sd = scaler.state_dict()
    return dict(sd) if sd else None


def save_checkpoint(run_dir: Path, step: int, *, trainable: dict, optimizer, lr_scheduler,
                    state: dict, rng: bool = True, scaler=None) -> Path:
    """Write a complete checkpoint for `step` atomically; returns its folder. `scaler`: the loss
    scaler of fp16 training (accelerator.scaler), whose scale a resume must continue from."""
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, not {step!r}")
    root = checkpoints_dir(run_dir)
    final = root / checkpoint_name(step)
    # build everything that can fail on content (not on disk) before touching the disk
    weights = {name: t.detach().to("cpu").clone().contiguous() for name, t in trainable.items()}
    opt_tensors: dict = {}
    opt_sd = optimizer.state_dict()
    opt_json = {
        "class": type(getattr(optimizer, "optimizer", optimizer)).__name__,
        "state": {str(i): _encode(s, f"state.{i}", opt_tensors, "optimizer state")
                  for i, s in opt_sd["state"].items()},
        "param_groups": _encode(opt_sd["param_groups"], "param_groups", opt_tensors,
                                "optimizer state"),
    }
    sched_json = None if lr_scheduler is None else _encode(
        lr_scheduler.state_dict(), "lr_scheduler", None, "learning-rate scheduler state")
    scaler_sd = _scaler_state(scaler)
    scaler_json = None if scaler_sd is None else _encode(scaler_sd, "scaler", None, "gradient scaler state")
    state_json = {"format": FORMAT_VERSION, "step": step, "rng": bool(rng), "scaler": scaler_json is not None,
                  "state": _encode({k: v for k, v in state.items() if k != "step"}, "state",
                                   None, "training state")}
    tmp: Path | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-", dir=root))
        _write_tensors(tmp / "trainable.safetensors", weights)
        _write_tensors(tmp / "optimizer.safetensors", opt_tensors)
        _write_json(tmp / "optimizer.json", opt_json)
        _write_json(tmp / "scheduler.json", sched_json)
        if rng:
            rng_tensors, rng_json = _rng_state()
            _write_tensors(tmp / "rng.safetensors", rng_tensors)
            _write_json(tmp / "rng.json", rng_json)
        if scaler_json is not None:
            _write_json(tmp / "scaler.json", scaler_json)
        _write_json(tmp / "state.json", state_json)
        _write_file(tmp / MARKER, f"step {step}\n".encode())
        _fsync_dir(tmp)
        if final.exists():  # saving the same step again (e.g. Ctrl-C right after a save)
            aside = Path(tempfile.mkdtemp(prefix=f"{final.name}.old-", dir=root))
            os.replace(final, aside / final.name)
            try:
                os.replace(tmp, final)
            except OSError:
                os.replace(aside / final.name, final)  # put the old one back
                raise
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, final)
        tmp = None
        _fsync_dir(root)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, OSError):
            raise
        last = latest_checkpoint(run_dir)
        tail = (f"the last good checkpoint is step {checkpoint_step(last)}" if last is not None
                else "there is no earlier checkpoint")
        reason = e.strerror or str(e) or type(e).__name__
        raise WriteError(f"could not save the checkpoint at step {step} ({reason}); {tail}") from e
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if _NAME.match(p.name) and p.is_dir() and (p / MARKER).is_file()]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def prune_checkpoints(run_dir: Path, keep: int) -> list[Path]:
    """Remove complete checkpoints beyond the `keep` newest, and every incomplete leftover."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0, not {keep}")
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    complete = list_checkpoints(run_dir)
    doomed = complete[:max(len(complete) - keep, 0)]
    leftovers = sorted(p for p in root.iterdir() if p.name.startswith("step-") and p not in complete)
    removed = []
    for p in doomed + leftovers:
        try:
            if p.is_dir() and not p.is_symlink():
                target = p
                if p in doomed:  # rename first so a half-removed one never looks complete
                    target = root / f"{p.name}.del-{os.urandom(4).hex()}"
                    os.replace(p, target)
                shutil.rmtree(target)
            else:
                p.unlink()
        except OSError as e:
            raise WriteError(f"could not remove the old checkpoint {p} "
                             f"({e.strerror or e})") from e
        removed.append(p)
    return removed


def _read_json(path: Path, name: str) -> Any:
    try:
        return json.loads((path / name).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"checkpoint {path} is missing {name}") from None
    except (OSError, ValueError) as e:
        raise InputError(f"checkpoint {path}: {name} is unreadable ({e})") from None


def _read_tensors(path: Path, name: str) -> dict:
    from safetensors.torch import load_file

    if not (path / name).is_file():
        raise InputError(f"checkpoint {path} is missing {name}")
    try:
        return load_file(str(path / name), device="cpu")
    except Exception as e:  # SafetensorError, OSError: a damaged file
        raise InputError(f"checkpoint {path}: {name} is unreadable ({e})") from None


def _check_complete(path: Path) -> None:
    if not path.is_dir():
        raise InputError(f"checkpoint {path} does not exist")
    if not (path / MARKER).is_file():
        raise InputError(f"checkpoint {path} is incomplete (no {MARKER} marker)")


def _read_meta(path: Path) -> dict:
    meta = _read_json(path, "state.json")
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise InputError(f"checkpoint {path}: state.json is damaged")
    if meta.get("format") != FORMAT_VERSION:
        raise InputError(f"checkpoint {path} has format {meta.get('format')!r}; this styler "
                         f"reads format {FORMAT_VERSION}")
    return meta


def read_checkpoint_state(path: Path) -> dict:
    """The caller's saved state plus `step`, without loading any tensors."""
    path = Path(path)
    _check_complete(path)
    meta = _read_meta(path)
    return {**_decode(meta["state"]), "step": meta["step"]}


def load_checkpoint(path: Path, *, trainable: dict, optimizer, lr_scheduler,
                    restore_rng: bool = True, scaler=None) -> dict:
    """Validate a checkpoint, then restore it in place; returns the saved state (with `step`).
    A `scaler` (enabled) gets the saved scale back; a checkpoint saved without one (an older styler,
    or a run that had none) leaves it as it is."""
    import torch

    path = Path(path)
    _check_complete(path)
    meta = _read_meta(path)
    weights = _read_tensors(path, "trainable.safetensors")
    for name in sorted(set(weights) | set(trainable)):
        if name not in trainable:
            raise InputError(f"checkpoint {path} does not match the model: {name!r} is in the "
                             f"checkpoint but not among the {len(trainable)} trainable tensors")
        if name not in weights:
            raise InputError(f"checkpoint {path} does not match the model: trainable tensor "
                             f"{name!r} is not in the checkpoint ({len(weights)} tensors)")
        if tuple(weights[name].shape) != tuple(trainable[name].shape):
            raise InputError(f"checkpoint {path} does not match the model: {name!r} has shape "
                             f"{list(weights[name].shape)} in the checkpoint but "
                             f"{list(trainable[name].shape)} in the model")
    opt_json = _read_json(path, "optimizer.json")
    opt_tensors = _read_tensors(path, "optimizer.safetensors")
    try:
        opt_sd = {"state": {int(k): _decode(v, opt_tensors) for k, v in opt_json["state"].items()},
                  "param_groups": _decode(opt_json["param_groups"], opt_tensors)}
        saved_sizes = [len(g["params"]) for g in opt_sd["param_groups"]]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(f"checkpoint {path}: optimizer.json is damaged ({e!r})") from None
    sizes = [len(g["params"]) for g in optimizer.param_groups]
    if saved_sizes != sizes:
        raise InputError(f"checkpoint {path} has optimizer state for {sum(saved_sizes)} "
                         f"parameters in {len(saved_sizes)} group(s), but the optimizer has "
                         f"{sum(sizes)} in {len(sizes)} group(s)")
    cls = type(getattr(optimizer, "optimizer", optimizer)).__name__
    if opt_json.get("class") not in (None, cls):
        raise InputError(f"checkpoint {path} was saved with optimizer {opt_json['class']}, "
                         f"not {cls}")
    sched = _decode(_read_json(path, "scheduler.json"))
    if lr_scheduler is not None and sched is None:
        raise InputError(f"checkpoint {path} has no learning-rate scheduler state")
    rng_tensors = rng_json = None
    if restore_rng and meta.get("rng"):
        rng_tensors = _read_tensors(path, "rng.safetensors")
        rng_json = _read_json(path, "rng.json")
        if "torch" not in rng_tensors or not isinstance(rng_json, dict):
            raise InputError(f"checkpoint {path}: the saved random state is damaged")
    scaler_sd = None
    if _scaler_state(scaler) is not None and meta.get("scaler"):
        scaler_sd = _decode(_read_json(path, "scaler.json"))
        if not isinstance(scaler_sd, dict) or not isinstance(scaler_sd.get("scale"), (int, float)):
            raise InputError(f"checkpoint {path}: scaler.json is damaged")
    # everything is validated: restore
    try:
        optimizer.load_state_dict(opt_sd)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise InputError(f"checkpoint {path}: the optimizer state does not fit ({e})") from None
    if lr_scheduler is not None:
        lr_scheduler.load_state_dict(sched)
    with torch.no_grad():
        for name, t in trainable.items():
            t.copy_(weights[name].to(device=t.device, dtype=t.dtype))
    if scaler_sd is not None:
        scaler.load_state_dict(scaler_sd)
    if rng_tensors is not None:
        _restore_rng(rng_tensors, rng_json)
    return {**_decode(meta["state"]), "step": meta["step"]}


def _restore_rng(tensors: dict, info: dict) -> None:
    import torch

    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            if f"cuda.{i}" in tensors:
                torch.cuda.set_rng_state(tensors[f"cuda.{i}"], i)
    if info.get("python"):
        version, internal, gauss = info["python"]
        random.setstate((version, tuple(internal), gauss))
    if info.get("numpy"):
        import numpy as np

        kind, keys, pos, has_gauss, cached = info["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
