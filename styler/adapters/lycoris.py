"""LyCORIS LoHa and LoKr layers read from their key parts (kohya files: `lora_unet_<module>.hada_w1_a`
…; styler's stored files: `unet.<module>.hada_w1_a` …), checked and built into `LohaLayer` /
`LokrLayer` (lora.py). Key names and shapes are LyCORIS's (lycoris/modules/loha.py, lokr.py,
`custom_state_dict`, at KohakuBlueleaf/LyCORIS f49d30d6); what a missing alpha means is what
ComfyUI (comfy/weight_adapter/loha.py, lokr.py) applies: scale 1, the same as alpha = rank.

Refused, with the reason: DoRA LoHa/LoKr (`dora_scale`: LyCORIS applies the adapter's weight after
renormalising, ComfyUI inside it, so one file renders two ways), `lokr_t1` (written by no LyCORIS
version, read by no loader), a LoKr whose two low-rank factors have different ranks (LyCORIS scales
by w1's, ComfyUI by w2's), and the LyCORIS kinds styler does not fold: full (`diff`), OFT/BOFT,
(IA)³, GLoRA and norm layers.
"""

from __future__ import annotations

import re
from dataclasses import replace

from ..errors import InputError
from .lora import LohaLayer, LokrLayer, product_shape

LOHA_PARTS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
LOKR_PARTS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
PARTS = LOHA_PARTS + LOKR_PARTS
PART_PATTERN = "|".join(sorted(PARTS, key=len, reverse=True))

# a key part each other LyCORIS kind writes (lycoris/modules/*.py weight_list) -> that kind's name
OTHER_KINDS = {"diff": "full (whole ΔW)", "diff_b": "full (whole ΔW)", "oft_blocks": "OFT/BOFT",
               "oft_diag": "OFT", "rescale": "OFT/BOFT", "on_input": "(IA)³", "w_norm": "norm",
               "b_norm": "norm", "a1.weight": "GLoRA", "a2.weight": "GLoRA", "b1.weight": "GLoRA",
               "b2.weight": "GLoRA", "lokr_t1": "LoKr with a CP core on w1"}
READS = "styler reads LoRA/LoCon, LoHa and LoKr layers"


def other_kind(part: str) -> str | None:
    """The LyCORIS kind a key part belongs to, when it is one styler refuses."""
    return OTHER_KINDS.get(part)


def _shape(t) -> list[int]:
    return list(map(int, t.shape))


def _alpha(slot: dict, rank: int | None) -> float:
    if "alpha" in slot:
        return float(slot["alpha"].float().item())
    return float(rank) if rank is not None else 1.0


def build_layer(where: str, comp: str, module: str, slot: dict):
    """The LoHa/LoKr layer `slot` ({part: tensor}, with "alpha" and "magnitude" for `.dora_scale`)
    describes; None when it has no LyCORIS part (a LoRA). InputError for anything else."""
    loha = [k for k in slot if k in LOHA_PARTS]
    lokr = [k for k in slot if k in LOKR_PARTS]
    if not loha and not lokr:
        return None
    name = f"{where}: {comp}.{module}"
    lora = [k for k in slot if k in ("down", "up")]
    if (loha and lokr) or lora:
        raise InputError(f"{name} mixes {' and '.join(x for x, y in (('LoHa', loha), ('LoKr', lokr), ('LoRA', lora)) if y)} "
                         f"keys; one module takes one kind of layer")
    kind = "LoHa" if loha else "LoKr"
    if "magnitude" in slot:
        raise InputError(f"{name} is a DoRA {kind} layer (dora_scale), which styler does not read: LyCORIS and "
                         f"ComfyUI apply its weight differently; use a {kind} trained without weight decomposition")
    return _loha(name, comp, module, slot) if loha else _lokr(name, comp, module, slot)


def _need(name: str, slot: dict, parts: tuple[str, ...], kind: str) -> None:
    missing = [p for p in parts if p not in slot]
    if missing:
        raise InputError(f"{name} has no {missing[0]}; the {kind} layer is incomplete")


def _bad(name: str, kind: str, slot: dict):
    shapes = ", ".join(f"{k} {_shape(v)}" for k, v in slot.items() if k not in ("alpha",))
    return InputError(f"{name} has {kind} factors {shapes}, which do not make a {kind} layer")


def _pair_ok(a, b, t) -> bool:
    """a @ b (a [n, r], b [r, ...]) or the CP form (t [r, r, k…], a [r, n], b [r, m])."""
    if a.dim() != 2 or b.dim() not in (2, 3, 4, 5):
        return False
    if t is None:
        return a.shape[1] == b.shape[0]
    return b.dim() == 2 and t.dim() >= 3 and t.shape[0] == a.shape[0] and t.shape[1] == b.shape[0]


def _loha(name: str, comp: str, module: str, slot: dict) -> LohaLayer:
    _need(name, slot, LOHA_PARTS[:4], "LoHa")
    t1, t2 = slot.get("hada_t1"), slot.get("hada_t2")
    if (t1 is None) != (t2 is None):
        raise InputError(f"{name} has only one of hada_t1 and hada_t2; the LoHa layer is incomplete")
    layer = LohaLayer(comp, module, slot["hada_w1_a"], slot["hada_w1_b"], slot["hada_w2_a"], slot["hada_w2_b"],
                      0.0, t1, t2)
    if not (_pair_ok(layer.w1_a, layer.w1_b, t1) and _pair_ok(layer.w2_a, layer.w2_b, t2)) or \
            product_shape(layer.w1_a, layer.w1_b, t1) != product_shape(layer.w2_a, layer.w2_b, t2):
        raise _bad(name, "LoHa", slot)
    return replace(layer, alpha=_alpha(slot, layer.rank))


def _lokr(name: str, comp: str, module: str, slot: dict) -> LokrLayer:
    for whole, low in (("lokr_w1", ("lokr_w1_a", "lokr_w1_b")), ("lokr_w2", ("lokr_w2_a", "lokr_w2_b"))):
        if whole in slot and any(p in slot for p in low):
            raise InputError(f"{name} has both {whole} and {low[0]}/{low[1]}; a LoKr factor is one or the other")
        if whole not in slot:
            _need(name, slot, low, "LoKr")
    if "lokr_t2" in slot and "lokr_w2" in slot:
        raise InputError(f"{name} has lokr_t2 with a whole lokr_w2; the CP core belongs to lokr_w2_a/lokr_w2_b")
    g = slot.get
    layer = LokrLayer(comp, module, 0.0, g("lokr_w1"), g("lokr_w1_a"), g("lokr_w1_b"), g("lokr_w2"), g("lokr_w2_a"),
                      g("lokr_w2_b"), g("lokr_t2"))
    ok = (layer.w1.dim() == 2 if layer.w1 is not None else _pair_ok(layer.w1_a, layer.w1_b, None) and layer.w1_b.dim() == 2)
    ok = ok and (layer.w2.dim() >= 2 if layer.w2 is not None else _pair_ok(layer.w2_a, layer.w2_b, layer.t2))
    if not ok:
        raise _bad(name, "LoKr", slot)
    if layer.w1_b is not None and layer.w2_b is not None and layer.w1_b.shape[0] != layer.w2_b.shape[0]:
        raise InputError(f"{name} has low-rank LoKr factors of ranks {int(layer.w1_b.shape[0])} and "
                         f"{int(layer.w2_b.shape[0])}: LyCORIS and ComfyUI would scale it differently")
    return replace(layer, alpha=_alpha(slot, layer.rank))


STORED_KEY = re.compile(rf"^(unet|text_encoder)\.(.+)\.({PART_PATTERN}|alpha)$")
