"""Exact weighted mixing of adapters, folded into the weights once per mix.

For every module any chosen adapter targets, the weight used is W + Σᵢ wᵢ·ΔWᵢ, with the sum
accumulated in fp32 and cast once. ΔW is each layer's own (lora.py): (αᵢ/rᵢ)·BᵢAᵢ for a LoRA, the
Hadamard product of a LoHa, the Kronecker product of a LoKr, so LoRAs, LoHas and LoKrs mix exactly. (peft's add_weighted_adapter "linear" combines A and B
separately and adds cross terms: not this.) The pristine weights are kept, and every mix starts
from them, so any number of mixes never drifts (fuse/unfuse subtraction does: diffusers #5604).

A DoRA layer at weight w is folded as peft computes it (peft/tuners/lora/dora.py at commit
5d602fdb: the norm is taken per output row, over everything else, of the weight with the scaled
update, and the adapter weight scales the update inside the norm, as `set_scale` scales `scaling`):
W' = m · (W + w·ΔW) / ‖W + w·ΔW‖_row, ΔW = (α/r)·BA, the bias unchanged. That has no additive form, so a
module changed by a DoRA layer can't take a second adapter; a DoRA adapter mixes exactly with
adapters on other modules. Weight 0 leaves a module as the base has it, for DoRA too (peft at scale
0 would still rescale W by m/‖W‖).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from .lora import AdapterData

WARN_ABOVE = 2.0


@dataclass(frozen=True)
class MixEntry:
    """One adapter in a mix, with its UNet and text-encoder weights."""

    name: str
    data: AdapterData
    weight: float
    te_weight: float | None = None  # None: same as `weight`

    @property
    def text_weight(self) -> float:
        return self.weight if self.te_weight is None else self.te_weight


def _module(pipe, component: str, path: str):
    root = getattr(pipe, component)
    try:
        return root.get_submodule(path)
    except AttributeError:
        raise UsageError(f"the base model has no {component} module {path}; the adapter is for another architecture") from None


def _dora(merged, magnitude):
    """m · V / ‖V‖ per output row (peft's DoRA weight; V = W + w·ΔW), in fp32."""
    import torch

    shape = [-1] + [1] * (merged.dim() - 1)
    norm = merged.flatten(1).norm(p=2, dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    return merged * (magnitude.float().to(merged.device).reshape(-1) / norm).reshape(shape)


class WeightMixer:
    """Applies mixes to one pipeline; `restore()` puts every touched weight back bit for bit."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.pristine: dict[tuple[str, str], object] = {}
        self.active: set[tuple[str, str]] = set()
        self.current: tuple = ()  # the mix folded in now (() = none)
        self.folds = 0  # how many times a non-empty mix was computed (a repeated mix costs nothing)

    @staticmethod
    def mix_key(entries: list[MixEntry]) -> tuple:
        return tuple(sorted((e.name, id(e.data), float(e.weight), float(e.text_weight)) for e in entries))

    def apply(self, entries: list[MixEntry]) -> dict[str, int]:
        """Fold the mix into the weights (restoring the previous mix first); the mix already folded
        in is kept as it is."""
        import torch

        mix = self.mix_key(entries)
        if mix == self.current:
            return {"layers": len(self.active)}

        parts: dict[tuple[str, str], list] = {}  # module -> [(entry, layer, weight)]
        for e in entries:
            for key, layer in e.data.layers.items():
                w = e.weight if layer.component == "unet" else e.text_weight
                if w != 0:
                    parts.setdefault(key, []).append((e, layer, w))
        for key, found in parts.items():
            dora = [e.name for e, layer, _ in found if layer.magnitude is not None]
            if dora and len(found) > 1:
                other = next(e.name for e, _, _ in found if e.name != dora[0])
                raise UsageError(f"{dora[0]} is a DoRA adapter and {other} also changes {key[0]}.{key[1]}: DoRA "
                                 f"renormalises the whole weight, so the two have no exact mix there; use "
                                 f"{dora[0]} alone or with adapters on other layers")
        self.restore()
        new: dict[tuple[str, str], torch.Tensor] = {}
        with torch.no_grad():
            for key, found in parts.items():
                weight = _module(self.pipe, *key).weight
                total = None
                for e, layer, w in found:
                    d = layer.delta(weight.shape)
                    if d.shape != weight.shape:
                        raise UsageError(f"{e.name} does not fit this base: {key[0]}.{key[1]} is "
                                         f"{list(weight.shape)}, the adapter's update is {list(d.shape)}")
                    total = total.add_(d, alpha=w) if total is not None else d.mul_(w)
                merged = weight.detach().float() + total.to(weight.device)  # restored above: W is pristine
                if found[0][1].magnitude is not None:  # then it is the only one (checked above)
                    merged = _dora(merged, found[0][1].magnitude)
                new[key] = merged
            for key, merged in new.items():
                weight = _module(self.pipe, *key).weight
                if key not in self.pristine:
                    self.pristine[key] = weight.detach().clone()
                weight.copy_(merged.to(device=weight.device, dtype=weight.dtype))
        self.active = set(new)
        self.current = mix
        self.folds += bool(new)
        return {"layers": len(new)}

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for key in self.active:
                _module(self.pipe, *key).weight.copy_(self.pristine[key])
        self.active = set()
        self.current = ()


def check_weights(entries: list[MixEntry], warn) -> None:
    """Warn for unusual weights; refuse the same adapter twice."""
    seen = set()
    for e in entries:
        if e.name in seen:
            raise UsageError(f"{e.name} is in the mix twice; give each adapter once with its total weight")
        seen.add(e.name)
        for w in (e.weight, e.text_weight):
            if abs(w) > WARN_ABOVE:
                warn(f"weight {w:g} for {e.name} is beyond ±{WARN_ABOVE:g}; images usually break down")
