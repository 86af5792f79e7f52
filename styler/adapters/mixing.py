"""Exact weighted mixing of LoRAs, folded into the weights once per mix.

For every module any chosen adapter targets, the weight used is W + Σᵢ wᵢ·(αᵢ/rᵢ)·BᵢAᵢ, with the
sum accumulated in fp32 and cast once. (peft's add_weighted_adapter "linear" combines A and B
separately and adds cross terms: not this.) The pristine weights are kept, and every mix starts
from them, so any number of mixes never drifts (fuse/unfuse subtraction does: diffusers #5604).
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

        for e in entries:
            if any(layer.magnitude is not None for layer in e.data.layers.values()):
                raise UsageError(f"{e.name} is a DoRA adapter: its update is not W + w·ΔW, so it can't be mixed "
                                 f"exactly; train without --dora to mix it")
        self.restore()
        sums: dict[tuple[str, str], torch.Tensor] = {}
        with torch.no_grad():
            for e in entries:
                for key, layer in e.data.layers.items():
                    w = e.weight if layer.component == "unet" else e.text_weight
                    if w == 0:
                        continue
                    d = layer.delta()
                    weight = _module(self.pipe, *key).weight
                    if d.shape != weight.shape:
                        raise UsageError(f"{e.name} does not fit this base: {key[0]}.{key[1]} is "
                                         f"{list(weight.shape)}, the adapter's update is {list(d.shape)}")
                    sums[key] = sums[key].add_(d, alpha=w) if key in sums else d.mul_(w)
            for key, d in sums.items():
                weight = _module(self.pipe, *key).weight
                if key not in self.pristine:
                    self.pristine[key] = weight.detach().clone()
                w0 = self.pristine[key]
                weight.copy_((w0.float() + d.to(w0.device)).to(weight.dtype))
        self.active = set(sums)
        self.current = mix
        self.folds += bool(sums)
        return {"layers": len(sums)}

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
