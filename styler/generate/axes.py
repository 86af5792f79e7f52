"""The axes of an X/Y/Z grid (`styler grid --x/--y/--z`): what each one changes in a render request.

    guidance=5,7.5,10   steps=10,20   seed=1,2,3       the request's own numbers
    sampler=ddim,euler,dpm++                           a scheduler of the engine (engine.SCHEDULERS)
    prompt=cat,dog,owl                                 A1111's Prompt S/R: the first value must be in the
                                                       prompt (or the negative); each value replaces it
    scale=0,0.5,1                                      every adapter's weight (UNet and text encoder) × v
    unet-scale=0,1   te-scale=0,1                      every adapter's UNet weight × v / text-encoder weight = v
    weight:NAME=0,0.5,1                                the weight of the --adapter NAME (both parts)
    step=100,200   step:NAME=100,200                   the adapter's weights at that training step (its run's
                                                       checkpoints, and its final step)

Values are comma separated, read as a CSV row as A1111 reads them (quote a value that holds a comma).
Prompt S/R follows A1111's scripts/xyz_grid.py `apply_prompt` (AUTOMATIC1111/stable-diffusion-webui at
02d5a43c): str.replace of every occurrence, in the prompt and the negative prompt."""

from __future__ import annotations

import copy
import csv
import io
import math
from dataclasses import dataclass

from registry import parse_name

from ..errors import UsageError

NUMBER_AXES = ("guidance", "scale", "unet-scale", "te-scale")
WHOLE_AXES = ("steps", "seed", "step")
PLAIN_AXES = ("guidance", "scale", "steps", "seed", "sampler", "prompt", "step", "unet-scale", "te-scale")
TARGETED_AXES = ("weight", "step")  # weight:NAME=…, step:NAME=…
MULTIPLIERS = ("scale", "unet-scale")  # applied after the axes that set values, so they scale those
ADAPTER_AXES = ("scale", "unet-scale", "te-scale", "weight", "step")
FORMS = (f"NAME=v1,v2,… with NAME one of {', '.join(PLAIN_AXES)}, or weight:ADAPTER=v1,… / step:ADAPTER=v1,… "
         f"for one --adapter")


@dataclass(frozen=True)
class Axis:
    kind: str  # one of PLAIN_AXES or "weight"
    values: tuple
    target: str = ""  # the adapter a weight:/step: axis is about, as the user named it

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.target}" if self.target else self.kind

    def label(self, value) -> str:
        if self.kind == "prompt":
            return str(value)  # A1111 labels Prompt S/R cells with the value alone
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        if self.kind == "weight":
            return f"{parse_name(self.target).name} {shown}"
        return f"{self.kind} {shown}"


def _values(text: str) -> list[str]:
    return [v.strip() for row in csv.reader(io.StringIO(text)) for v in row if v.strip()]


def parse_axis(text: str) -> Axis:
    """`guidance=5,7.5,10` → Axis("guidance", (5.0, 7.5, 10.0)); `weight:anime=0,1` names an adapter."""
    head, sep, rest = text.partition("=")
    kind, colon, target = head.strip().partition(":")
    if not sep or (colon and (kind not in TARGETED_AXES or not target.strip())) or (not colon and kind not in PLAIN_AXES):
        raise UsageError(f"grid axis {text!r}: use {FORMS}")
    target = target.strip()
    raw = _values(rest)
    if not raw:
        raise UsageError(f"grid axis {head}: no values; e.g. {head}={_EXAMPLES.get(kind, '1,2')}")
    if len(set(raw)) != len(raw):
        raise UsageError(f"grid axis {head}: {', '.join(sorted({v for v in raw if raw.count(v) > 1}))} is given twice")
    if kind == "sampler":
        from .engine import SCHEDULERS

        bad = [v for v in raw if v not in SCHEDULERS]
        if bad:
            raise UsageError(f"grid axis sampler: unknown {bad[0]!r}; use {', '.join(SCHEDULERS)}")
        return Axis(kind, tuple(raw))
    if kind == "prompt":
        return Axis(kind, tuple(raw))
    whole = kind in WHOLE_AXES
    try:
        values = [int(v) if whole else float(v) for v in raw]
    except ValueError:
        raise UsageError(f"grid axis {head}: values must be {'whole numbers' if whole else 'numbers'}: {rest!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise UsageError(f"grid axis {head}: values must be finite numbers: {rest!r}")
    if kind in ("steps", "step") and min(values) < 1:
        raise UsageError(f"grid axis {head}: {min(values)} is not a step; use 1 or more")
    return Axis(kind, tuple(values), target)


_EXAMPLES = {"guidance": "5,7.5,10", "steps": "10,20", "seed": "1,2,3", "sampler": "ddim,euler", "prompt": "cat,dog",
             "step": "100,200", "weight": "0,0.5,1", "scale": "0,0.5,1", "unet-scale": "0,1", "te-scale": "0,1"}


def adapter_spec(req, target: str, axis: str) -> str:
    """The --adapter entry an axis names (by NAME or NAME@V), as the request holds it."""
    want = parse_name(target)
    specs = [s for s, _, _ in req.adapters]
    for s in specs:
        have = parse_name(s)
        if have.full == want.full or (want.version is None and have.name == want.name):
            return s
    given = ", ".join(parse_name(s).full for s in specs) or "none"
    raise UsageError(f"grid axis {axis}: {target} is not one of the --adapter entries ({given}); "
                     f"add --adapter {want.name} or name one of those")


def check_axes(req, axes: list[Axis]) -> None:
    """What needs the request: adapters for the adapter axes, the S/R term in the prompt, no axis twice."""
    names = [a.name for a in axes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"grid axis {twice[0]} is given twice (--x/--y/--z); give each axis once")
    for a in axes:
        if a.kind in ADAPTER_AXES and not req.adapters:
            raise UsageError(f"a grid over {a.name!r} needs at least one --adapter")
        if a.target:
            adapter_spec(req, a.target, a.name)
        elif a.kind == "step" and len(req.adapters) > 1:
            names = ", ".join(f"step:{parse_name(s).name}=…" for s, _, _ in req.adapters)
            raise UsageError(f"grid axis step: {len(req.adapters)} adapters are given; say whose steps ({names})")
        if a.kind == "prompt":
            first = a.values[0]
            if first not in req.prompt and first not in (req.negative or ""):
                raise UsageError(f"grid axis prompt: {first!r} is not in the prompt {req.prompt!r} (nor the negative); "
                                 f"the first value is the text each value replaces, e.g. prompt=cat,dog,owl for \"a cat\"")


def step_target(req, axis: Axis) -> str:
    return adapter_spec(req, axis.target, axis.name) if axis.target else req.adapters[0][0]


def cell_request(req, cell: list[tuple[Axis, object]]):
    """A copy of `req` for one cell (n = 1): the axes that set a value first, then the multipliers."""
    r = copy.deepcopy(req)
    r.n = 1
    for axis, value in sorted(cell, key=lambda av: av[0].kind in MULTIPLIERS):
        _apply(r, axis, value)
    return r


def _apply(r, axis: Axis, value) -> None:
    kind = axis.kind
    if kind in ("guidance", "steps", "seed"):
        setattr(r, kind, value)
    elif kind == "sampler":
        r.scheduler = value
    elif kind == "prompt":
        first = axis.values[0]
        r.prompt = r.prompt.replace(first, value)
        r.negative = (r.negative or "").replace(first, value)
    elif kind == "scale":
        r.adapters = [(s, _w(w) * value, None if te is None else te * value) for s, w, te in r.adapters]
    elif kind == "unet-scale":  # the text encoder keeps the weight it had
        r.adapters = [(s, _w(w) * value, _w(w) if te is None else te) for s, w, te in r.adapters]
    elif kind == "te-scale":
        r.adapters = [(s, _w(w), value) for s, w, _ in r.adapters]
    elif kind == "weight":
        spec = adapter_spec(r, axis.target, axis.name)
        r.adapters = [(s, value if s == spec else w, te) for s, w, te in r.adapters]
    elif kind == "step":
        r.adapter_steps = {**r.adapter_steps, step_target(r, axis): value}
    else:  # parse_axis admits no other kind
        raise ValueError(kind)


def _w(w) -> float:
    return 1.0 if w is None else w
