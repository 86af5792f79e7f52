"""Merging several adapters into one LoRA.

- concat: exact, for LoRAs. Per layer the downs are stacked and the ups concatenated with each
  adapter's weight·alpha/rank folded in, so B·A = Σ wᵢ·(αᵢ/rᵢ)·BᵢAᵢ; the ranks add up and alpha = rank.
  A LoHa's or LoKr's ΔW is not B·A, so concat refuses them rather than approximate.
- svd: Σ wᵢ·ΔWᵢ of any layer kinds, truncated per layer to rank R by SVD (the best rank-R
  approximation in the Frobenius norm); the relative error over all layers is reported.
"""

from __future__ import annotations

from ..errors import UsageError
from .lora import LAYER_NAMES, AdapterData, LoraLayer

METHODS = ("concat", "svd")


def _check(parts: list[tuple[str, AdapterData, float]]) -> None:
    if len(parts) < 2:
        raise UsageError("give at least two adapters to merge, e.g. a=0.5 b=0.5")
    for name, data, _ in parts:
        if data.kind != "lora":
            raise UsageError(f"{name} is a {data.kind} adapter; only LoRAs can be merged")
        if any(layer.magnitude is not None for layer in data.layers.values()):
            raise UsageError(f"{name} is a DoRA adapter; its update is not B·A, so it can't be merged exactly")


def merge_concat(parts: list[tuple[str, AdapterData, float]]) -> AdapterData:
    """Exact merge; `parts` are (name, data, weight)."""
    import torch

    _check(parts)
    for name, data, _ in parts:
        kinds = data.lycoris_kinds()
        if kinds:
            what = "/".join(LAYER_NAMES[k] for k in kinds)
            raise UsageError(f"{name} has {what} layers, whose ΔW is not B·A, so concat can't merge it exactly; "
                             f"mix it when rendering (`styler mix`, exact) or merge with --method svd --rank R "
                             f"(approximate, error reported)")
    keys = list(dict.fromkeys(k for _, data, _ in parts for k in data.layers))
    layers = {}
    for key in keys:
        downs, ups = [], []
        for _, data, w in parts:
            layer = data.layers.get(key)
            if layer is None or w == 0:
                continue
            downs.append(layer.down.float())
            ups.append(layer.up.float() * (w * layer.scale))
        if not downs:
            continue
        down, up = torch.cat(downs, 0), torch.cat(ups, 1)
        layers[key] = LoraLayer(key[0], key[1], down.contiguous(), up.contiguous(), float(down.shape[0]))
    return AdapterData("lora", layers, format="peft")


def merge_svd(parts: list[tuple[str, AdapterData, float]], rank: int) -> tuple[AdapterData, float]:
    """Rank-`rank` approximation of the weighted sum; returns (adapter, relative Frobenius error)."""
    import torch

    _check(parts)
    if rank < 1:
        raise UsageError(f"--rank {rank} must be >= 1")
    layers, err2, total2 = {}, 0.0, 0.0
    for key, delta in _weighted_deltas(parts).items():
        shape = delta.shape
        mat = delta.flatten(1).double()
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        r = min(rank, s.shape[0])
        root = s[:r].sqrt()
        up = (u[:, :r] * root).float()
        down = (root[:, None] * vh[:r]).float()
        approx = up.double() @ down.double()
        err2 += float(((mat - approx) ** 2).sum())
        total2 += float((mat ** 2).sum())
        if len(shape) == 4:
            down = down.reshape(r, shape[1], shape[2], shape[3])
            up = up.reshape(shape[0], r, 1, 1)
        layers[key] = LoraLayer(key[0], key[1], down.contiguous(), up.contiguous(), float(r))
    rel = (err2 / total2) ** 0.5 if total2 > 0 else 0.0
    return AdapterData("lora", layers, format="peft"), rel


def _weighted_deltas(parts: list[tuple[str, AdapterData, float]]) -> dict:
    """(component, module) -> Σ wᵢ·ΔWᵢ in fp32, for every module a part with weight ≠ 0 changes."""
    out = {}
    for name, data, w in parts:
        if w == 0:
            continue
        for key, layer in data.layers.items():
            have = out.get(key)
            d = layer.delta(None if have is None else have.shape) * w
            if have is not None and have.shape != d.shape:
                raise UsageError(f"{name}'s {key[0]}.{key[1]} has ΔW {list(d.shape)}, another adapter's is "
                                 f"{list(have.shape)}: they are for different bases")
            out[key] = d if have is None else have.add_(d)
    return out
