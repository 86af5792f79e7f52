"""Generate jobs: the one payload builder behind `styler jobs add-mix`, the TUI's Queue form and its
regen key, and the one reader the worker turns a payload into a Request with.

A payload is Request's fields, as JSON: prompt, negative, adapters ([[name, weight, te_weight|None]]
with the name as `registry.parse_spec` normalises it, e.g. `anime@7`, `anime` for @latest), n, seed,
steps, guidance, scheduler, base, and width/height only when a size was asked for (otherwise the
worker renders at the base's native size). The reader also takes what older or hand-written payloads
carry: `size` (N, "WxH" or [W, H]) and adapters as spec strings.
"""

from __future__ import annotations

import dataclasses
import re

from registry import AdapterSpec, Job, Registry, parse_name, parse_spec, parse_weight

from ..errors import UsageError

_SIZE = re.compile(r"(\d+)(?:x(\d+))?")


def parse_size(size, *, what: str = "--size") -> tuple[int, int] | None:
    """`N`, `"WxH"` (any case, spaces around ignored) or `[W, H]` as (width, height); None for no size.
    Multiples of 8 are checked with the rest of the request (`Request.validate`)."""
    if size is None or (isinstance(size, str) and not size.strip()):
        return None
    text = "x".join(map(str, size)) if isinstance(size, (list, tuple)) else str(size)
    m = _SIZE.fullmatch(text.strip().lower())
    if not m:
        raise UsageError(f"{what} {size!r}: use WIDTHxHEIGHT, e.g. 512x512, or one number for a square")
    return int(m[1]), int(m[2] or m[1])


def adapter_entry(item) -> list:
    """One payload adapter, [name, weight, te_weight|None], from a spec string (`anime@2=0.5`), an
    AdapterSpec, or a (name, weight[, te_weight]) sequence whose weights may be text or numbers."""
    if isinstance(item, str):
        item = parse_spec(item)
    if isinstance(item, AdapterSpec):
        return [str(item.name), 1.0 if item.weight is None else item.weight, None]
    if not isinstance(item, (list, tuple)) or not 1 <= len(item) <= 3 or not isinstance(item[0], str):
        raise UsageError(f"adapter {item!r}: use \"NAME[@V]=WEIGHT\" or [NAME, WEIGHT, TE_WEIGHT]")
    name_text, weight, te = (list(item) + [None, None])[:3]
    name = parse_name(name_text)
    w = 1.0 if weight is None else parse_weight(weight, name_text)
    t = None if te is None else parse_weight(te, f"{name_text} (text encoder)")
    return [str(name), w, t]


def generate_payload(prompt: str, adapters=(), *, negative: str = "", n: int = 1, seed: int | None = None,
                     steps: int = 30, guidance: float = 7.5, scheduler: str = "ddim", size=None,
                     base: str | None = None) -> dict:
    """A checked generate payload (see the module docstring); raises the error the CLI shows for a
    bad prompt, adapter, number, size or scheduler."""
    payload = {"prompt": prompt, "negative": negative or "", "adapters": [adapter_entry(a) for a in adapters],
               "n": n, "seed": seed, "steps": steps, "guidance": guidance, "scheduler": scheduler or "ddim",
               "base": base or None}
    wh = parse_size(size)
    if wh is not None:
        payload["width"], payload["height"] = wh
    check_payload(payload)
    return payload


def check_payload(payload: dict):
    """The Request a payload makes, validated as a render would (the base's size limit aside)."""
    from .engine import SCHEDULERS

    req = request_from_payload(payload)
    if req.scheduler not in SCHEDULERS:
        raise UsageError(f"unknown --scheduler {req.scheduler!r}; use one of {', '.join(SCHEDULERS)}")
    req.validate()
    return req


def request_from_payload(payload: dict, *, native: int = 512):
    """A generate Request from a job payload: Request's fields, plus `base` (kept in `extra`) and
    `size` instead of width/height; without either, the base's native size."""
    from .service import Request

    p = dict(payload)
    size = p.pop("size", None)
    base = p.pop("base", None)
    known = {f.name for f in dataclasses.fields(Request)}
    unknown = sorted(set(p) - known)
    if unknown:
        raise UsageError(f"generate job: unknown field(s) {', '.join(unknown)}; use {', '.join(sorted(known | {'size', 'base'}))}")
    if "prompt" not in p:
        raise UsageError("generate job: the payload needs a prompt")
    wh = parse_size(size, what="generate job: size")
    if wh is not None:
        p["width"], p["height"] = wh
    p.setdefault("width", native)
    p.setdefault("height", native)
    p["adapters"] = [tuple(adapter_entry(a)) for a in p.get("adapters") or []]
    if base is not None:
        p["extra"] = {**p.get("extra", {}), "base": base}
    return Request(**p)


def enqueue_generate(reg: Registry, payload: dict) -> Job:
    """Check a payload (numbers, size, scheduler, every adapter exists and is given once) and queue
    it; nothing is queued when a check fails."""
    from registry import jobs

    from .service import resolve_choices

    resolve_choices(reg, check_payload(payload).adapters)  # unknown or repeated adapters fail now, not in a worker
    return jobs.enqueue(reg, "generate", payload)
