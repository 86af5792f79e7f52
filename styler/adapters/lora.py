"""The canonical in-memory form of a LoRA: one `LoraLayer` per targeted module, named by its path
in the live model (`pipe.unet` / `pipe.text_encoder` `.named_modules()`), whatever file format it
came from. Mixing, merging and every exporter work from this form.

A layer's weight update is ΔW = (alpha / rank) · up @ down, reshaped to the module's weight
(Linear: [out, in]; Conv2d: [out, in, kh, kw] with down [r, in, kh, kw] and up [out, r, 1, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

COMPONENTS = ("unet", "text_encoder")


@dataclass(frozen=True)
class LoraLayer:
    component: str  # "unet" | "text_encoder"
    module: str  # e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q" / "encoder.layers.0.self_attn.q_proj"
    down: object  # torch.Tensor, "A": [r, in] or [r, in, kh, kw]
    up: object  # torch.Tensor, "B": [out, r] or [out, r, 1, 1]
    alpha: float
    magnitude: object = None  # DoRA magnitude vector [out], when the adapter is DoRA

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank

    @property
    def key(self) -> tuple[str, str]:
        return (self.component, self.module)

    def unit_scale(self) -> "LoraLayer":
        """The same ΔW with alpha = rank: alpha/rank folded into `up` (in fp32, cast back), for a
        file whose loaders may apply no alpha at all."""
        if float(self.alpha) == self.rank:
            return self
        return replace(self, up=(self.up.float() * self.scale).to(self.up.dtype), alpha=float(self.rank))

    def delta(self):
        """ΔW in fp32, shaped like the module's weight."""
        import torch

        down, up = self.down.float(), self.up.float()
        if down.dim() == 2:
            return self.scale * (up @ down)
        # conv: down [r, in, kh, kw], up [out, r, 1, 1] -> [out, in, kh, kw]
        return self.scale * torch.einsum("or,rikl->oikl", up.flatten(1), down)


@dataclass
class AdapterData:
    """Everything read from one adapter file."""

    kind: str  # "lora" | "textual-inversion"
    layers: dict = field(default_factory=dict)  # (component, module) -> LoraLayer
    embeddings: dict = field(default_factory=dict)  # token -> tensor [n_vectors, dim]
    metadata: dict = field(default_factory=dict)  # the file's safetensors metadata
    format: str = ""  # what it was read from: "peft" | "diffusers" | "kohya" | "textual-inversion"

    def unit_scale(self) -> "AdapterData":
        """Every layer with alpha = rank and the same ΔW (`LoraLayer.unit_scale`)."""
        return replace(self, layers={k: layer.unit_scale() for k, layer in self.layers.items()})

    def components(self) -> set[str]:
        return {c for c, _ in self.layers}
