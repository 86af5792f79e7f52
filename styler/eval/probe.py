"""A linear style probe on CLIP image embeddings: multinomial logistic regression, one class per
style, trained full-batch (L-BFGS, float64) with class-balanced loss weights.

Features are standardised for training and the scaling is folded back into ``weight``/``bias``,
so a probe applies to raw embeddings: ``softmax(emb @ weight.T + bias)``. Saved as safetensors
(``weight``, ``bias``) with the rest as JSON in the header metadata; no pickle anywhere."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from styler.errors import InputError, UsageError

if TYPE_CHECKING:
    from torch import Tensor

META_KEY = "styler_probe"
MIN_PER_CLASS = 2  # to train at all
MIN_FOR_VAL = 5  # every class needs this many for a validation split


@dataclass
class StyleProbe:
    classes: list[str]
    weight: Tensor  # [C, D], applies to raw embeddings
    bias: Tensor  # [C]
    train_accuracy: float
    val_accuracy: float | None = None


def _check(embeddings_by_class: dict) -> tuple[list[str], list[Tensor]]:
    import torch

    classes = [str(c) for c in embeddings_by_class]
    if len(classes) < 2:
        raise UsageError(f"a style probe needs at least 2 classes, got {len(classes)}"
                         + (f" ({classes[0]!r})" if classes else ""))
    tensors, dim = [], None
    for name, emb in zip(classes, embeddings_by_class.values()):
        emb = torch.as_tensor(emb).detach().to("cpu", torch.float64)
        if emb.ndim != 2:
            raise UsageError(f"class {name!r}: embeddings must be [n, D], got shape {tuple(emb.shape)}")
        if emb.shape[0] < MIN_PER_CLASS:
            raise UsageError(f"class {name!r} has {emb.shape[0]} sample(s); a style probe needs at least "
                             f"{MIN_PER_CLASS} per class")
        if dim is not None and emb.shape[1] != dim:
            raise UsageError(f"class {name!r}: embedding size {emb.shape[1]} differs from {dim}")
        if not torch.isfinite(emb).all():
            raise UsageError(f"class {name!r}: embeddings contain NaN or infinity")
        dim = emb.shape[1]
        tensors.append(emb)
    return classes, tensors


def _accuracy(weight, bias, x, y) -> float:
    return float(((x @ weight.T + bias).argmax(1) == y).double().mean()) if len(y) else float("nan")


def fit_probe(embeddings_by_class: dict[str, Tensor], *, seed: int = 0, epochs: int = 300, lr: float = 1.0,
              weight_decay: float = 1e-2, val_fraction: float = 0.2) -> StyleProbe:
    """Train a probe on ``{class: [n_c, D] embeddings}`` (class order is kept). When every class has
    at least 5 samples and ``val_fraction`` > 0, a seeded per-class split is held out and scored.
    ``epochs`` caps the L-BFGS iterations; ``weight_decay`` is the L2 penalty on the (standardised)
    weights. Same inputs and seed give the same probe."""
    import torch
    import torch.nn.functional as F

    classes, tensors = _check(embeddings_by_class)
    gen = torch.Generator().manual_seed(int(seed))
    train_x, train_y, val_x, val_y = [], [], [], []
    split = val_fraction > 0 and all(len(t) >= MIN_FOR_VAL for t in tensors)
    for c, emb in enumerate(tensors):
        order = torch.randperm(len(emb), generator=gen)
        n_val = min(len(emb) - MIN_PER_CLASS, max(1, round(len(emb) * val_fraction))) if split else 0
        val_x.append(emb[order[:n_val]])
        train_x.append(emb[order[n_val:]])
        val_y.append(torch.full((n_val,), c, dtype=torch.long))
        train_y.append(torch.full((len(emb) - n_val,), c, dtype=torch.long))
    x, y = torch.cat(train_x), torch.cat(train_y)
    n_classes, dim = len(classes), x.shape[1]

    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    z = (x - mean) / std
    counts = torch.bincount(y, minlength=n_classes).double()
    class_w = counts.sum() / (n_classes * counts)  # balanced: each class weighs the same in total

    w = torch.zeros(n_classes, dim, dtype=torch.float64)
    b = torch.zeros(n_classes, dtype=torch.float64)
    opt = torch.optim.LBFGS([w, b], lr=lr, max_iter=max(1, int(epochs)), history_size=20,
                            tolerance_grad=1e-10, tolerance_change=1e-14, line_search_fn="strong_wolfe")
    sample_w = class_w[y] / class_w[y].sum()
    onehot = F.one_hot(y, n_classes).double()

    def closure():  # weighted cross-entropy + L2, with its gradient written out (no autograd)
        logits = z @ w.T + b
        log_p = torch.log_softmax(logits, dim=1)
        loss = -(sample_w * (log_p * onehot).sum(1)).sum() + 0.5 * weight_decay * (w * w).sum()
        g = sample_w[:, None] * (log_p.exp() - onehot)
        w.grad = g.T @ z + weight_decay * w
        b.grad = g.sum(0)
        return loss

    with torch.no_grad():
        opt.step(closure)
    weight = w / std  # fold the standardisation in
    bias = b - weight @ mean
    if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        raise UsageError("the style probe diverged; try a smaller learning rate or more weight decay")
    val_acc = _accuracy(weight, bias, torch.cat(val_x), torch.cat(val_y)) if split else None
    return StyleProbe(classes, weight.float(), bias.float(), _accuracy(weight, bias, x, y), val_acc)


def predict(probe: StyleProbe, emb: Tensor) -> Tensor:
    """[N, C] class probabilities (float32) for [N, D] (or one [D]) embeddings."""
    import torch

    emb = torch.as_tensor(emb).detach().to("cpu", torch.float64)
    if emb.ndim == 1:
        emb = emb[None]
    if emb.ndim != 2 or emb.shape[1] != probe.weight.shape[1]:
        raise UsageError(f"embeddings of shape {tuple(emb.shape)} do not fit a probe of size "
                         f"{probe.weight.shape[1]} (different CLIP model?)")
    logits = emb @ probe.weight.double().T + probe.bias.double()
    return torch.softmax(logits, dim=1).float()


def summarize(probe: StyleProbe, probs: Tensor) -> dict:
    """``{"n", "mean_probability": {class: p}, "argmax_share": {class: share}}`` for [N, C] probs."""
    import torch

    probs = torch.as_tensor(probs).detach().to("cpu", torch.float64)
    if probs.ndim != 2 or probs.shape[1] != len(probe.classes):
        raise UsageError(f"probabilities of shape {tuple(probs.shape)} do not match "
                         f"{len(probe.classes)} probe classes")
    n = probs.shape[0]
    mean = probs.mean(0) if n else torch.full((len(probe.classes),), float("nan"), dtype=torch.float64)
    share = (torch.bincount(probs.argmax(1), minlength=len(probe.classes)).double() / n if n
             else torch.full((len(probe.classes),), float("nan"), dtype=torch.float64))
    return {"n": int(n),
            "mean_probability": {c: float(v) for c, v in zip(probe.classes, mean)},
            "argmax_share": {c: float(v) for c, v in zip(probe.classes, share)}}


def save_probe(probe: StyleProbe, path: str | os.PathLike) -> Path:
    """Write ``path`` (a .safetensors file) atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {"version": 1, "classes": list(probe.classes), "train_accuracy": probe.train_accuracy,
            "val_accuracy": probe.val_accuracy}
    tensors = {"weight": probe.weight.detach().float().contiguous(),
               "bias": probe.bias.detach().float().contiguous()}
    from ..files import atomic_write

    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={META_KEY: json.dumps(meta, ensure_ascii=False)}))


def load_probe(path: str | os.PathLike) -> StyleProbe:
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[META_KEY])
            weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
    except FileNotFoundError:
        raise InputError(f"no style probe at {path}") from None
    except Exception as exc:  # garbage, truncated, not ours
        raise InputError(f"{path} is not a style probe file ({type(exc).__name__})") from None
    classes = [str(c) for c in meta.get("classes", [])]
    if weight.ndim != 2 or bias.shape != (weight.shape[0],) or len(classes) != weight.shape[0]:
        raise InputError(f"{path}: probe tensors do not match its {len(classes)} classes")
    val = meta.get("val_accuracy")
    train = meta.get("train_accuracy")
    return StyleProbe(classes, weight.float(), bias.float(),
                      float(train) if train is not None else math.nan,
                      float(val) if val is not None else None)
