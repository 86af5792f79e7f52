"""The canonical in-memory form of an adapter: one layer per targeted module, named by its path in
the live model (`pipe.unet` / `pipe.text_encoder` `.named_modules()`), whatever file format it came
from. Mixing, merging and every exporter work from this form.

Every layer has `component`, `module`, `key`, `kind`, `rank`, `alpha`, `magnitude` (DoRA, LoRA only)
and `delta(shape=None)`: its weight update ΔW in fp32, shaped like the module's weight. Kinds:

- `LoraLayer` ("lora", also LyCORIS LoCon): ΔW = (alpha / rank) · up @ down (Linear: [out, in];
  Conv2d: [out, in, kh, kw] with down [r, in, kh, kw] and up [out, r, 1, 1]).
- `LohaLayer` ("loha"): ΔW = (alpha / rank) · (w1_a @ w1_b) ⊙ (w2_a @ w2_b), rank = w1_b.shape[0];
  with CP factors (`hada_t1`/`hada_t2`, 3×3 convs) each factor is Σ t[i, j] · w_a[i] ⊗ w_b[j].
- `LokrLayer` ("lokr"): ΔW = scale · w1 ⊗ w2 (Kronecker), each factor either whole or a product
  `_a @ _b` (w2 also CP with `lokr_t2`); scale = alpha / rank only when a factor is low-rank (rank =
  its `_b`'s first dim, w2's when both are), else 1: what LyCORIS (the module forces alpha = dim
  when both are whole) and ComfyUI (alpha applies only with a decomposed factor) do.

The LyCORIS factors keep the names and layout of LyCORIS's files (lycoris/modules/loha.py, lokr.py
at KohakuBlueleaf/LyCORIS f49d30d6), with one change: a conv layer's flat `_b` factor
([r, in·kh·kw], and a whole LoKr w2 of [b, d·kh·kw]) is held with the module's kernel,
[r, in, kh, kw] (`with_kernel`), so ΔW has the module's shape without it. Kohya exports flatten it back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import ClassVar

COMPONENTS = ("unet", "text_encoder")


def _shaped(delta, shape):
    """`delta` reshaped to `shape` when that is the same weight laid out otherwise (same rows and
    size); as it is when not, so the caller's shape check names both shapes."""
    if shape is None or tuple(delta.shape) == tuple(shape):
        return delta
    if delta.numel() == math.prod(shape) and delta.shape[0] == shape[0]:
        return delta.reshape(shape)
    return delta


class _Layer:
    """What every layer kind shares: its key in AdapterData.layers, and alpha/rank as its scale
    (LokrLayer overrides the scale: 1 when both its factors are whole)."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.component, self.module)

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank


@dataclass(frozen=True)
class LoraLayer(_Layer):
    kind: ClassVar[str] = "lora"
    component: str  # "unet" | "text_encoder"
    module: str  # e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q" / "encoder.layers.0.self_attn.q_proj"
    down: object  # torch.Tensor, "A": [r, in] or [r, in, kh, kw]
    up: object  # torch.Tensor, "B": [out, r] or [out, r, 1, 1]
    alpha: float
    magnitude: object = None  # DoRA magnitude vector [out], when the adapter is DoRA

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


    def unit_scale(self) -> "LoraLayer":
        """The same ΔW with alpha = rank: alpha/rank folded into `up` (in fp32, cast back), for a
        file whose loaders may apply no alpha at all."""
        if float(self.alpha) == self.rank:
            return self
        return replace(self, up=(self.up.float() * self.scale).to(self.up.dtype), alpha=float(self.rank))

    @property
    def delta_shape(self) -> list[int]:
        return [int(self.up.shape[0]), *map(int, self.down.shape[1:])]

    def delta(self, shape=None):
        """ΔW in fp32, shaped like the module's weight."""
        import torch

        down, up = self.down.float(), self.up.float()
        if down.dim() == 2:
            return _shaped(self.scale * (up @ down), shape)
        # conv: down [r, in, kh, kw], up [out, r, 1, 1] -> [out, in, kh, kw]
        return _shaped(self.scale * torch.einsum("or,rikl->oikl", up.flatten(1), down), shape)


def _product(a, b, t=None):
    """One low-rank factor in fp32: a @ b (b's trailing kernel dims kept), or with a CP core t
    [r, r, kh, kw] and a [r, out], b [r, in]: Σᵢⱼ t[i, j] · a[i] ⊗ b[j] -> [out, in, kh, kw]."""
    import torch

    if t is not None:
        return torch.einsum("ij...,jr,ip->pr...", t.float(), b.float(), a.float())
    return (a.float() @ b.float().flatten(1)).reshape(int(a.shape[0]), *b.shape[1:])


def product_shape(a, b, t=None) -> list[int]:
    if t is not None:
        return [int(a.shape[1]), int(b.shape[1]), *map(int, t.shape[2:])]
    return [int(a.shape[0]), *map(int, b.shape[1:])]


def _with_kernel(t, shape):
    """A flat [n, in·kh·kw] factor as [n, in, kh, kw] for a module weight of `shape`."""
    if t is None or t.dim() != 2 or len(shape) != 4 or t.shape[1] != math.prod(shape[1:]):
        return t
    return t.reshape(int(t.shape[0]), *map(int, shape[1:]))


def _flat(t):
    """The inverse of `_with_kernel`: the layout LyCORIS writes ([n, in·kh·kw])."""
    return t.flatten(1) if t is not None and t.dim() > 2 else t


@dataclass(frozen=True)
class LohaLayer(_Layer):
    """A LyCORIS LoHa layer (see the module docstring)."""

    kind: ClassVar[str] = "loha"
    magnitude: ClassVar[None] = None
    component: str
    module: str
    w1_a: object  # hada_w1_a: [out, r]; [r, out] with CP
    w1_b: object  # hada_w1_b: [r, in] or [r, in, kh, kw]; [r, in] with CP
    w2_a: object
    w2_b: object
    alpha: float
    t1: object = None  # hada_t1: [r, r, kh, kw] (CP)
    t2: object = None

    @property
    def rank(self) -> int:
        return int(self.w1_b.shape[0])


    @property
    def delta_shape(self) -> list[int]:
        return product_shape(self.w1_a, self.w1_b, self.t1)

    def delta(self, shape=None):
        """ΔW in fp32, shaped like the module's weight."""
        m1 = _product(self.w1_a, self.w1_b, self.t1)
        m2 = _product(self.w2_a, self.w2_b, self.t2)
        return _shaped(self.scale * (m1 * m2), shape)

    def with_kernel(self, shape) -> "LohaLayer":
        if self.t1 is not None:
            return self
        return replace(self, w1_b=_with_kernel(self.w1_b, shape), w2_b=_with_kernel(self.w2_b, shape))

    def tensors(self, flat: bool = True) -> dict:
        """The factors by their LyCORIS names; `flat`: in LyCORIS's layout (conv `_b` factors flat)."""
        out = {"hada_w1_a": self.w1_a, "hada_w1_b": self.w1_b, "hada_w2_a": self.w2_a, "hada_w2_b": self.w2_b}
        if self.t1 is not None:
            out["hada_t1"], out["hada_t2"] = self.t1, self.t2
        elif flat:
            out["hada_w1_b"], out["hada_w2_b"] = _flat(self.w1_b), _flat(self.w2_b)
        return out


@dataclass(frozen=True)
class LokrLayer(_Layer):
    """A LyCORIS LoKr layer (see the module docstring): w1 is `w1` or `w1_a @ w1_b`, w2 is `w2`,
    `w2_a @ w2_b` or the CP product of `t2`, `w2_a`, `w2_b`."""

    kind: ClassVar[str] = "lokr"
    magnitude: ClassVar[None] = None
    component: str
    module: str
    alpha: float
    w1: object = None  # lokr_w1: [a, c]
    w1_a: object = None  # [a, r]
    w1_b: object = None  # [r, c]
    w2: object = None  # lokr_w2: [b, d] or [b, d, kh, kw]
    w2_a: object = None  # [b, r]; [r, b] with CP
    w2_b: object = None  # [r, d] or [r, d, kh, kw]; [r, d] with CP
    t2: object = None  # [r, r, kh, kw]

    @property
    def rank(self) -> int | None:
        """The low-rank factors' rank; None when both factors are whole."""
        b = self.w2_b if self.w2_b is not None else self.w1_b
        return None if b is None else int(b.shape[0])

    @property
    def scale(self) -> float:
        return 1.0 if self.rank is None else float(self.alpha) / self.rank


    def _w1_shape(self) -> list[int]:
        return list(map(int, self.w1.shape)) if self.w1 is not None else [int(self.w1_a.shape[0]), int(self.w1_b.shape[1])]

    def _w2_shape(self) -> list[int]:
        return list(map(int, self.w2.shape)) if self.w2 is not None else product_shape(self.w2_a, self.w2_b, self.t2)

    @property
    def delta_shape(self) -> list[int]:
        (a, c), (b, d, *k) = self._w1_shape(), self._w2_shape()
        return [a * b, c * d, *k]

    def delta(self, shape=None):
        """ΔW in fp32, shaped like the module's weight."""
        import torch

        w1 = self.w1.float() if self.w1 is not None else self.w1_a.float() @ self.w1_b.float()
        w2 = self.w2.float() if self.w2 is not None else _product(self.w2_a, self.w2_b, self.t2)
        w1 = w1.reshape(*w1.shape, *[1] * (w2.dim() - w1.dim()))
        return _shaped(self.scale * torch.kron(w1.contiguous(), w2.contiguous()), shape)  # kron views its inputs

    def with_kernel(self, shape) -> "LokrLayer":
        if self.t2 is not None:
            return self
        # w1 ⊗ w2 of a flat [b, d·kh·kw] w2 is the same ΔW as with w2 [b, d, kh, kw] (Kronecker of
        # the [a, c, 1, 1] w1): the kernel belongs to w2's input side
        inner = [shape[0] // self._w1_shape()[0], shape[1] // self._w1_shape()[1], *shape[2:]] if len(shape) == 4 else shape
        return replace(self, w2=_with_kernel(self.w2, inner), w2_b=_with_kernel(self.w2_b, inner))

    def tensors(self, flat: bool = True) -> dict:
        """The factors by their LyCORIS names; `flat`: in LyCORIS's layout (a low-rank conv w2_b flat;
        a whole conv w2 keeps its kernel, as LyCORIS writes it)."""
        out = {}
        if self.w1 is not None:
            out["lokr_w1"] = self.w1
        else:
            out["lokr_w1_a"], out["lokr_w1_b"] = self.w1_a, self.w1_b
        if self.w2 is not None:
            out["lokr_w2"] = self.w2
        else:
            out["lokr_w2_a"] = self.w2_a
            out["lokr_w2_b"] = _flat(self.w2_b) if flat and self.t2 is None else self.w2_b
            if self.t2 is not None:
                out["lokr_t2"] = self.t2
        return out


LAYER_NAMES = {"lora": "LoRA", "loha": "LoHa", "lokr": "LoKr"}


@dataclass
class AdapterData:
    """Everything read from one adapter file."""

    kind: str  # "lora" (any layer kinds) | "textual-inversion"
    layers: dict = field(default_factory=dict)  # (component, module) -> LoraLayer | LohaLayer | LokrLayer
    embeddings: dict = field(default_factory=dict)  # token -> tensor [n_vectors, dim]
    metadata: dict = field(default_factory=dict)  # the file's safetensors metadata
    format: str = ""  # what it was read from: "peft" | "diffusers" | "kohya" | "textual-inversion"

    def unit_scale(self) -> "AdapterData":
        """Every LoRA layer with alpha = rank and the same ΔW (`LoraLayer.unit_scale`); others as they are."""
        return replace(self, layers={k: layer.unit_scale() if layer.kind == "lora" else layer
                                     for k, layer in self.layers.items()})

    def components(self) -> set[str]:
        return {c for c, _ in self.layers}

    def layer_kinds(self) -> set[str]:
        return {layer.kind for layer in self.layers.values()}

    def lycoris_kinds(self) -> list[str]:
        """The LyCORIS kinds among the layers ("loha", "lokr"), sorted."""
        return sorted(self.layer_kinds() - {"lora"})

    @property
    def method(self) -> str:
        """What the registry calls it: "loha" / "lokr" when every layer is one, "lycoris" for other
        mixes with LoHa/LoKr layers, else "lora"."""
        kinds = self.layer_kinds()
        if not kinds & {"loha", "lokr"}:
            return "lora"
        return kinds.pop() if len(kinds) == 1 else "lycoris"
