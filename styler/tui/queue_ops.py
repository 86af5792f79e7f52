"""The job queue as the TUI uses it: payloads built from forms and recipes, and the queue calls.

The queue itself is `registry.jobs` (enqueue / cancel / retry / list_jobs); generate payloads are
built and checked by `styler.generate.jobs`, the same code `styler jobs add-mix` uses.
"""

from __future__ import annotations

from registry import Job, Output, Registry
from registry import jobs

ACTIVE = ("queued", "running")


def enqueue(reg: Registry, kind: str, payload: dict) -> Job:
    """Queue a job; a generate payload is checked first as `styler jobs add-mix` checks it."""
    if kind == "generate":
        from ..generate.jobs import enqueue_generate

        return enqueue_generate(reg, payload)
    if kind == "train":  # the form's options, checked and pinned as `styler train --queue` does
        from ..train.config import build_config
        from ..train.jobs import enqueue_train

        return enqueue_train(reg, build_config(payload))
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
    from ..generate.jobs import generate_payload

    adapters = [(adapter_spec(a), a.get("weight"), a.get("te_weight")) for a in o.adapters or []]
    size = (o.width, o.height) if o.width and o.height else None
    given = {"negative": o.negative, "steps": o.steps, "guidance": o.guidance, "scheduler": o.scheduler}
    # fields an imported or partial record lacks are left to the defaults a worker would use
    payload = generate_payload(o.prompt, adapters, n=1, seed=o.seed, size=size, base=_base(o.base or {}),
                               **{k: v for k, v in given.items() if v is not None})
    steps = {adapter_spec(a): int(a["train_step"]) for a in o.adapters or [] if a.get("train_step") is not None}
    if steps:  # a grid's step= cell: that training step's weights, not the adapter's final ones
        payload["adapter_steps"] = steps
    return payload


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


def mix_payload(prompt: str, weights: list[tuple[str, str]], *, n: str, seed: str, steps: str,
                size: str = "", scheduler: str = "ddim", base: str = "") -> dict:
    """A generate payload from the Queue form's text fields, built as `styler jobs add-mix` builds
    it (styler.generate.jobs); raises FormError naming a bad field.

    Without a size, width and height are left out so the worker uses the base's native size."""
    from registry import RegistryError

    from ..errors import StylerError
    from ..generate.jobs import generate_payload

    fields = {"n": _int(n, "n", minimum=1), "seed": _int(seed, "seed", minimum=0, optional=True),
              "steps": _int(steps, "steps", minimum=1)}
    try:
        return generate_payload(prompt, weights, size=size, scheduler=scheduler.strip(), base=base.strip() or None,
                                **fields)
    except (StylerError, RegistryError) as exc:
        raise FormError(exc.message) from None


def eval_payload(subject: str, *, n: str, clip: str, metrics: str = "", against: str = "") -> dict:
    """An eval payload: subject, n, clip, metrics ("clip_t,fid" or None for the defaults), against."""
    if not subject.strip():
        raise FormError("the eval subject is empty: an adapter name, a mix like anime=0.5+ink=0.5, or baseline")
    chosen = ",".join(m.strip() for m in metrics.replace(",", " ").split() if m.strip())
    return {"subject": subject.strip(), "n": _int(n, "n", minimum=1), "clip": clip.strip() or None,
            "metrics": chosen or None, "against": against.strip() or None}


def _float(text: str, field: str) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise FormError(f"{field} must be a number like 1e-4, not {text!r}") from None


def train_values(dataset: str, *, name: str = "", method: str = "", steps: str = "", rank: str = "", lr: str = "",
                 lr_text: str = "", base: str = "", resolution: str = "") -> dict:
    """`styler train` options from the Queue form's train fields (empty: the option's default);
    raises FormError naming a field that does not parse. The rest is checked when it is queued."""
    from ..train.config import METHODS

    if not dataset.strip():
        raise FormError("the dataset to train on is empty: a dataset name like calligraphy/mifu (see the Datasets tab)")
    method = method.strip()
    if method and method not in METHODS:
        raise FormError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    values = {"dataset": dataset.strip(), "name": name.strip() or None, "method": method or None,
              "steps": _int(steps, "steps", minimum=1, optional=True), "rank": _int(rank, "rank", minimum=1, optional=True),
              "lr": _float(lr, "lr"), "lr_text": _float(lr_text, "lr-text"), "base": base.strip() or None,
              "resolution": _int(resolution, "resolution", minimum=8, optional=True)}
    return {k: v for k, v in values.items() if v is not None}
