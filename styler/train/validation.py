"""Validation images during training: rendered with the weights as they are at that step, saved
under the run folder (with the same PNG metadata as generated images, plus the run and step) and
registered as outputs of the run; after each validation the run's sample sheet (prompts × steps,
styler.train.samples) is drawn again."""

from __future__ import annotations

from registry import BlobStore, Output

VALIDATION_SEED = 1234
VALIDATION_GUIDANCE = 7.5


def render_validation(trainer, step: int) -> list[str]:
    """Render each validation prompt once; returns the new output ids."""
    import io

    import torch

    from ..generate.pngmeta import GenParams, save_png
    from ..generate.service import recipe

    pipe, cfg, reg = trainer.pipe, trainer.cfg, trainer.reg
    was = [m.training for m in trainer.models]
    for m in trainer.models:
        m.eval()
    pipe.set_progress_bar_config(disable=True)
    ids = []
    try:
        for k, prompt in enumerate(cfg.validation_prompts):
            seed = VALIDATION_SEED + k
            g = torch.Generator().manual_seed(seed)
            with torch.no_grad(), trainer.acc.autocast():
                image = pipe(prompt, num_inference_steps=cfg.validation_steps, height=cfg.resolution,
                             width=cfg.resolution, guidance_scale=VALIDATION_GUIDANCE, generator=g).images[0]
            record = Output(kind="validation", prompt=prompt, seed=seed,
                            steps=cfg.validation_steps, guidance=VALIDATION_GUIDANCE,
                            width=cfg.resolution, height=cfg.resolution, scheduler=type(pipe.scheduler).__name__,
                            base=trainer.plan.base_identity, run_id=trainer.handle.id, params={"train_step": step})
            base = trainer.plan.base_identity
            params = GenParams(prompt=prompt, steps=cfg.validation_steps, guidance=VALIDATION_GUIDANCE, seed=seed,
                               width=image.width, height=image.height, sampler=record.scheduler,
                               model_name=base.get("name", ""), model_hash=base.get("hash", ""),
                               extra={"infotext": {"Styler run": trainer.handle.id, "Train step": step}})
            buf = io.BytesIO()
            save_png(image, buf, params, {**recipe(record), "run_id": trainer.handle.id, "train_step": step})
            digest = BlobStore(reg.home).put_bytes(buf.getvalue())
            (trainer.handle.dir / "samples" / f"step-{step:07d}-{k}.png").write_bytes(buf.getvalue())
            out = reg.insert(record.replace(blob=digest))
            ids.append(out.id)
    finally:
        for m, w in zip(trainer.models, was):
            m.train(w)
    _rewrite_sheet(trainer, step)
    return ids


def _rewrite_sheet(trainer, step: int) -> None:
    """The run's sample sheet with this step's column; a sheet that can't be written is said, not fatal
    (the images themselves are stored)."""
    from ..errors import StylerError
    from .samples import build_sample_sheet

    try:
        build_sample_sheet(trainer.reg, trainer.handle.run, upto=step)
    except StylerError as exc:
        trainer._say(f"the sample sheet was not updated: {exc.message}")
