"""Training jobs: `styler train ... --queue`, the dashboard's train form and `styler study` queue a
run for `styler worker` instead of training at once.

A train payload is {"config": the TrainConfig as a run stores it}, checked and pinned when queued
(the dataset's version, the base), so the worker trains what was asked then. The worker runs it
through `styler.train.trainer.train`, the code `styler train` runs, and keeps the run's id in the
job's result: a job given back (SIGTERM, Ctrl-C) or recovered from a dead worker resumes that run
from its last checkpoint, as `styler train --resume RUN` would.
"""

from __future__ import annotations

import copy

from registry import Job, Registry

from ..errors import UsageError
from .config import FIELDS, TrainConfig, build_config


def check_queueable(cfg: TrainConfig) -> None:
    """What a queued run cannot do: a worker trains in its one process on its one device."""
    if cfg.processes != 1:
        raise UsageError(f"--queue with --processes {cfg.processes}: a worker trains in one process on its device; "
                         "drop --processes, or start one `styler worker --device cuda:N` per GPU")


def train_payload(cfg: TrainConfig, reg: Registry) -> dict:
    """The payload of a train job for `cfg`: checked (dataset, base, options) as `styler train` checks
    it before it writes anything, with the dataset version and base pinned. Raises the error the CLI
    shows; the device checks (e.g. --precision fp16 needs a GPU) wait for the worker's device."""
    from .plan import make_plan

    check_queueable(cfg)
    pinned = copy.deepcopy(cfg)
    make_plan(pinned, reg, check_device=False)  # pins dataset@version and base into `pinned`
    return {"config": pinned.to_dict()}


def config_from_payload(payload: dict) -> TrainConfig:
    """The TrainConfig a train job runs; a payload without one, or with unknown options, is a UsageError."""
    values = (payload or {}).get("config")
    if not isinstance(values, dict) or not values.get("dataset"):
        raise UsageError("train job: the payload needs a config with a dataset (queue it with `styler train DATASET --queue`)")
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise UsageError(f"train job: unknown option(s) {', '.join(unknown)}; the keys are the `styler train` options")
    return build_config(values)


def enqueue_train(reg: Registry, cfg: TrainConfig, *, after: list[str] | None = None) -> Job:
    """Check and queue one training run; nothing is queued when a check fails."""
    from registry import jobs

    return jobs.enqueue(reg, "train", train_payload(cfg, reg), after=after)


def describe(payload: dict) -> str:
    """A train job in a few words: `calligraphy/mifu@1 → mifu lora 1000 steps`."""
    c = (payload or {}).get("config") or {}
    steps = f"{c['steps']} steps" if c.get("steps") else f"{c['epochs']} epochs" if c.get("epochs") else "default steps"
    name = c.get("name") or str(c.get("dataset", "?")).split("@")[0]
    return f"{c.get('dataset', '?')} → {name} {c.get('method', 'lora')} {steps}"
