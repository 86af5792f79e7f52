"""The job queue as the TUI uses it: payloads built from forms and recipes, and the queue calls.

The queue itself is `registry.jobs` (enqueue / cancel / retry / list_jobs); payloads follow what
`styler.worker` accepts (a generate payload is Request's fields plus `base`).
"""

from __future__ import annotations

from registry import Job, Output, Registry
from registry import jobs

ACTIVE = ("queued", "running")


def enqueue(reg: Registry, kind: str, payload: dict) -> Job:
    return jobs.enqueue(reg, kind, payload)


def cancel(reg: Registry, job_id: str) -> Job:
    return jobs.cancel(reg, job_id)


def retry(reg: Registry, job_id: str) -> Job:
    return jobs.retry(reg, job_id)


def list_jobs(reg: Registry) -> list[Job]:
    return list(jobs.list_jobs(reg))


# -- payloads ------------------------------------------------------------------------------------
def adapter_spec(entry: dict) -> str:
    """`name@version` for an output's adapter entry (exact version, never "latest")."""
    name = entry.get("name", "")
    return f"{name}@{entry['version']}" if entry.get("version") is not None else name


def _base(base: dict) -> str | None:
    """The base a recipe used, as the worker's `base` spec: tiny by name; any other base is
    whatever resolves now (None), as `styler regen` does."""
    return "tiny" if base.get("kind") == "tiny" or base.get("name") == "tiny" else None


def regen_payload(o: Output) -> dict:
    """A generate payload that renders this output again: same prompt, adapters, weights, seed."""
    payload = {
        "prompt": o.prompt,
        "adapters": [[adapter_spec(a), a.get("weight"), a.get("te_weight")] for a in o.adapters or []],
        "n": 1, "seed": o.seed, "steps": o.steps, "width": o.width, "height": o.height,
        "scheduler": o.scheduler or "ddim", "base": _base(o.base or {}),
        "negative": o.negative, "guidance": o.guidance,
    }
    # fields an imported or partial record lacks are left to the worker's defaults
    return {k: v for k, v in payload.items() if v is not None or k in ("seed", "base")}


class FormError(ValueError):
    """A form field that does not parse; the message names the field."""


def _int(text: str, field: str, *, minimum: int | None = None, optional: bool = False) -> int | None:
    text = (text or "").strip()
    if not text and optional:
        return None
    try:
        value = int(text)
    except ValueError:
        raise FormError(f"{field} must be a whole number, not {text!r}") from None
    if minimum is not None and value < minimum:
        raise FormError(f"{field} must be at least {minimum}")
    return value


def _float(text: str, field: str) -> float:
    try:
        return float((text or "").strip())
    except ValueError:
        raise FormError(f"{field} must be a number like 0.5, not {text!r}") from None


def parse_size(text: str) -> tuple[int | None, int | None]:
    text = (text or "").strip().lower()
    if not text:
        return None, None
    w, sep, h = text.partition("x")
    width = _int(w, "size width", minimum=8)
    height = _int(h if sep else w, "size height", minimum=8)
    if width % 8 or height % 8:
        raise FormError(f"size {text}: both sides must be multiples of 8 (e.g. 512x512)")
    return width, height


def mix_payload(prompt: str, weights: list[tuple[str, str]], *, n: str, seed: str, steps: str,
                size: str = "", scheduler: str = "ddim", base: str = "") -> dict:
    """A generate payload from the Queue form's text fields; raises FormError naming a bad field.

    Without a size, width and height are left out so the worker uses the base's native size."""
    if not prompt.strip():
        raise FormError("the prompt is empty; say what to draw, e.g. a cat")
    adapters = [[spec, _float(w, f"weight of {spec}"), None] for spec, w in weights]
    width, height = parse_size(size)
    payload = {"prompt": prompt, "adapters": adapters, "n": _int(n, "n", minimum=1),
               "seed": _int(seed, "seed", minimum=0, optional=True), "steps": _int(steps, "steps", minimum=1),
               "scheduler": scheduler.strip() or "ddim", "base": base.strip() or None}
    if width is not None:
        payload["width"], payload["height"] = width, height
    return payload


def eval_payload(subject: str, *, n: str, clip: str, metrics: str = "", against: str = "") -> dict:
    """An eval payload: subject, n, clip, metrics ("clip_t,fid" or None for the defaults), against."""
    if not subject.strip():
        raise FormError("the eval subject is empty: an adapter name, a mix like anime=0.5+ink=0.5, or baseline")
    chosen = ",".join(m.strip() for m in metrics.replace(",", " ").split() if m.strip())
    return {"subject": subject.strip(), "n": _int(n, "n", minimum=1), "clip": clip.strip() or None,
            "metrics": chosen or None, "against": against.strip() or None}
