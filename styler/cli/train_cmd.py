"""`styler train DATASET[@v]`: LoRA, DreamBooth-LoRA and textual inversion with a live display."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import err, escape, human_bytes, note, out, print_json, registry


def _opt(help: str, *names: str, **kw):
    return typer.Option(*names, help=help, show_default=False, **kw)


def train(
    dataset: Annotated[Optional[str], typer.Argument(help="Dataset NAME[@VERSION] to train on.", show_default=False)] = None,
    base: Annotated[Optional[str], _opt("Base model: tiny, an HF repo id, a folder or a .safetensors file.")] = None,
    method: Annotated[Optional[str], _opt("lora (default) | adalora | dreambooth | textual-inversion.")] = None,
    name: Annotated[Optional[str], _opt("Adapter name (default: the dataset's); each run adds a version.")] = None,
    rank: Annotated[Optional[int], _opt("LoRA rank (default 16).")] = None,
    alpha: Annotated[Optional[float], _opt("LoRA alpha (default: = rank, i.e. scale 1).")] = None,
    targets: Annotated[Optional[str], _opt("attn (default) | attn+conv | attn+conv+ff | comma list of module names.")] = None,
    text_encoder: Annotated[Optional[bool], _opt("Also train a LoRA on the text encoder.", "--text-encoder/--no-text-encoder")] = None,
    dora: Annotated[Optional[bool], _opt("Use DoRA (weight-decomposed LoRA).", "--dora/--no-dora")] = None,
    lr: Annotated[Optional[float], _opt("Learning rate (default 1e-4).")] = None,
    lr_text: Annotated[Optional[float], _opt("Text-encoder learning rate (default: --lr).")] = None,
    scheduler: Annotated[Optional[str], _opt("LR schedule: constant | constant_with_warmup | linear | cosine | cosine_with_restarts | polynomial.")] = None,
    warmup: Annotated[Optional[int], _opt("Warm-up steps.")] = None,
    steps: Annotated[Optional[int], _opt("Optimizer steps (default 1000).")] = None,
    epochs: Annotated[Optional[int], _opt("Epochs instead of --steps.")] = None,
    batch: Annotated[Optional[int], _opt("Batch size per process (default 1).")] = None,
    accum: Annotated[Optional[int], _opt("Gradient accumulation steps (default 1).")] = None,
    resolution: Annotated[Optional[int], _opt("Training resolution, a multiple of 8 (default: the base's native size: 512 for SD-1.5, 64 for tiny).")] = None,
    seed: Annotated[Optional[int], _opt("Random seed (default 0).")] = None,
    precision: Annotated[Optional[str], _opt("Mixed precision: no | fp16 | bf16.")] = None,
    grad_checkpointing: Annotated[Optional[bool], _opt("Gradient checkpointing (less memory, slower).", "--grad-checkpointing/--no-grad-checkpointing")] = None,
    low_memory: Annotated[Optional[bool], _opt("Attention slicing + VAE tiling + gradient checkpointing.", "--low-memory/--no-low-memory")] = None,
    snr_gamma: Annotated[Optional[float], _opt("Min-SNR loss weighting gamma (5 is usual).")] = None,
    noise_offset: Annotated[Optional[float], _opt("Noise offset (0.05–0.1 helps very dark/bright styles).")] = None,
    augment: Annotated[Optional[str], _opt("Comma list of flip, crop, color.")] = None,
    buckets: Annotated[Optional[bool], _opt("Aspect-ratio buckets: each image trains at the width×height (within --resolution² pixels) nearest its own shape; a batch holds one bucket.", "--buckets/--no-buckets", rich_help_panel="Aspect-ratio buckets")] = None,
    min_bucket_reso: Annotated[Optional[int], _opt("With --buckets: the smallest bucket side (default --resolution / 2).", rich_help_panel="Aspect-ratio buckets")] = None,
    max_bucket_reso: Annotated[Optional[int], _opt("With --buckets: the largest bucket side (default --resolution × 2).", rich_help_panel="Aspect-ratio buckets")] = None,
    bucket_reso_steps: Annotated[Optional[int], _opt("With --buckets: bucket sides are multiples of this (default: the base's own, 64 on SD-1.5, 32 on tiny).", rich_help_panel="Aspect-ratio buckets")] = None,
    no_upscale: Annotated[Optional[bool], _opt("With --buckets: never enlarge an image; its bucket is the largest of its shape that fits (min/max bucket sides do not apply).", "--no-upscale", "--bucket-no-upscale", rich_help_panel="Aspect-ratio buckets")] = None,
    shuffle_caption: Annotated[Optional[bool], _opt("Shuffle the comma-separated tags of each caption at every step.", "--shuffle-caption/--no-shuffle-caption", rich_help_panel="Captions")] = None,
    keep_tokens: Annotated[Optional[int], _opt("With --shuffle-caption: the first N tags stay in place (e.g. 1 for a trigger word).", rich_help_panel="Captions")] = None,
    caption_dropout: Annotated[Optional[float], _opt("Probability that a sample trains on the empty caption (0–1; 0.05–0.1 is usual).", rich_help_panel="Captions")] = None,
    cache_latents: Annotated[Optional[bool], _opt("Encode images with the VAE once (default on).", "--cache-latents/--no-cache-latents")] = None,
    loader_workers: Annotated[Optional[int], _opt("DataLoader worker processes that load and augment images when latents are not cached (default: min(4, CPUs per process − 1)); 0 loads in the training process.")] = None,
    optimizer: Annotated[Optional[str], _opt("adamw (default) | adamw8bit (bitsandbytes + CUDA).")] = None,
    validate_every: Annotated[Optional[int], _opt("Validation images and held-out loss every N steps.")] = None,
    validation_prompt: Annotated[Optional[list[str]], _opt("Prompt for validation images (repeatable).")] = None,
    checkpoint_every: Annotated[Optional[int], _opt("Save a resumable checkpoint every N steps.")] = None,
    keep_checkpoints: Annotated[Optional[int], _opt("Keep the newest N checkpoints (default 3); a grid's step= axis renders those.")] = None,
    resume: Annotated[Optional[str], _opt("Continue a stopped run (its id; interrupted or failed) from its last checkpoint, or from step 0 if it saved none; with --steps N, until step N.")] = None,
    config: Annotated[Optional[Path], _opt("A TOML file with the same keys as these options.")] = None,
    log_with: Annotated[Optional[str], _opt("Also log to tensorboard or wandb.")] = None,
    processes: Annotated[Optional[int], _opt("Data-parallel processes (default 1).")] = None,
    instance_prompt: Annotated[Optional[str], _opt("DreamBooth: the prompt for every instance image.")] = None,
    class_prompt: Annotated[Optional[str], _opt("DreamBooth: the class prompt for prior images.")] = None,
    class_images: Annotated[Optional[int], _opt("DreamBooth: how many class images (default 50).")] = None,
    prior_weight: Annotated[Optional[float], _opt("DreamBooth: prior-preservation loss weight (default 1).")] = None,
    token: Annotated[Optional[str], _opt("Textual inversion: the new token (default: the dataset's trigger word).")] = None,
    init_token: Annotated[Optional[str], _opt("Textual inversion: an existing word to start from.")] = None,
    vectors: Annotated[Optional[int], _opt("Textual inversion: vectors per token (default 1).")] = None,
    adalora_init_rank: Annotated[Optional[int], _opt("AdaLoRA: every layer's rank at the start (default 1.5 × the target rank).", rich_help_panel="AdaLoRA")] = None,
    adalora_target_rank: Annotated[Optional[int], _opt("AdaLoRA: the average rank per layer it prunes to (default --rank).", rich_help_panel="AdaLoRA")] = None,
    adalora_tinit: Annotated[Optional[float], _opt("AdaLoRA: fraction of the steps before pruning starts (default 0.1).", rich_help_panel="AdaLoRA")] = None,
    adalora_tfinal: Annotated[Optional[float], _opt("AdaLoRA: fraction of the steps at the end with the ranks fixed (default 0.2).", rich_help_panel="AdaLoRA")] = None,
    adalora_interval: Annotated[Optional[int], _opt("AdaLoRA: steps between two rank reallocations (default 1).", rich_help_panel="AdaLoRA")] = None,
    adalora_orth_reg: Annotated[Optional[float], _opt("AdaLoRA: weight of the orthogonality penalty (default 0.5).", rich_help_panel="AdaLoRA")] = None,
    adalora_beta1: Annotated[Optional[float], _opt("AdaLoRA: EMA factor of the importance scores (default 0.85).", rich_help_panel="AdaLoRA")] = None,
    adalora_beta2: Annotated[Optional[float], _opt("AdaLoRA: EMA factor of their uncertainty (default 0.85).", rich_help_panel="AdaLoRA")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved plan and exit.")] = False,
    queue: Annotated[bool, typer.Option("--queue", help="Queue the run for `styler worker` (one per GPU) instead of training now.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable result.")] = False,
) -> None:
    """Train an adapter on a dataset, with live progress and memory panels."""
    from ..errors import UsageError
    from ..train.config import build_config, load_toml

    values = dict(base=base, method=method, name=name, rank=rank, alpha=alpha, targets=targets,
                  text_encoder=text_encoder, dora=dora, lr=lr, lr_text=lr_text, scheduler=scheduler, warmup=warmup,
                  steps=steps, epochs=epochs, batch=batch, accum=accum, resolution=resolution, seed=seed,
                  precision=precision, grad_checkpointing=grad_checkpointing, low_memory=low_memory, snr_gamma=snr_gamma,
                  noise_offset=noise_offset, augment=augment, buckets=buckets, min_bucket_reso=min_bucket_reso,
                  max_bucket_reso=max_bucket_reso, bucket_reso_steps=bucket_reso_steps, no_upscale=no_upscale,
                  shuffle_caption=shuffle_caption, keep_tokens=keep_tokens, caption_dropout=caption_dropout,
                  cache_latents=cache_latents, loader_workers=loader_workers, optimizer=optimizer,
                  validate_every=validate_every, validation_prompts=validation_prompt or None,
                  checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints, log_with=log_with, processes=processes,
                  instance_prompt=instance_prompt, class_prompt=class_prompt, class_images=class_images,
                  prior_weight=prior_weight, token=token, init_token=init_token, vectors=vectors,
                  adalora_init_rank=adalora_init_rank, adalora_target_rank=adalora_target_rank,
                  adalora_tinit=adalora_tinit, adalora_tfinal=adalora_tfinal, adalora_interval=adalora_interval,
                  adalora_orth_reg=adalora_orth_reg, adalora_beta1=adalora_beta1, adalora_beta2=adalora_beta2)
    file_values = load_toml(config) if config else {}
    if dataset is None and not resume:
        dataset = file_values.get("dataset")
        if not dataset:
            raise UsageError("give the DATASET to train on (or --resume RUN)")
    if resume:
        from ..train.config import TrainConfig

        cfg = TrainConfig(**{k: v for k, v in {**file_values, **values}.items() if v is not None})
    else:
        cfg = build_config(file_values, dataset=dataset, **values)
    from ..train.parallel import launcher_env

    launched = launcher_env()  # torchrun / accelerate launch started this process as one of several
    if launched is not None:
        rank, world = launched
        given = processes if processes is not None else file_values.get("processes")
        if given is not None and given != world:
            raise UsageError(f"--processes {given} does not match the launcher's WORLD_SIZE={world}; under torchrun "
                             "or accelerate launch the launcher sets the process count, so drop --processes")
        if not resume:
            cfg = build_config({**cfg.to_dict(), "processes": world})
    reg = registry()
    if queue:
        return _queue(cfg, reg, resume=resume, dry_run=dry_run, launched=launched is not None, as_json=as_json)
    if dry_run:
        if launched is None or launched[0] == 0:
            _dry_run(cfg, reg, as_json)
        return
    if launched is not None:
        from ..train.trainer import train as run_train

        rank, world = launched
        # every process trains its share; rank 0 alone writes the run, checkpoints and the adapter, and prints
        outcome = run_train(cfg, registry=reg, console=err if rank == 0 else None, resume=resume, rank=rank, world=world)
        if rank != 0:
            return
        _report(outcome, as_json)
        return
    processes = cfg.processes
    if resume:  # a run resumes with the process count it was started with (same global batch)
        from registry import Run

        processes = reg.get(Run, resume).config.get("processes", 1)
    if processes > 1:
        from ..train.parallel import train_parallel

        outcome = train_parallel(cfg, registry=reg, console=err, resume=resume)
    else:
        from ..train.trainer import train as run_train

        outcome = run_train(cfg, registry=reg, console=err, resume=resume)
    _report(outcome, as_json)


def _queue(cfg, reg, *, resume, dry_run: bool, launched: bool, as_json: bool) -> None:
    from ..errors import UsageError
    from ..train.jobs import describe, enqueue_train

    if resume:
        raise UsageError("--queue starts a new run; a queued run that stopped resumes by itself in the next worker "
                         "(`styler jobs ls`), and `styler train --resume RUN` continues one here")
    if dry_run:
        raise UsageError("--queue and --dry-run: give one (--dry-run prints the plan without training or queueing)")
    if launched:
        raise UsageError("--queue under torchrun or accelerate launch: queue from a plain `styler train` instead")
    job = enqueue_train(reg, cfg)  # bad datasets, bases or options fail now, and nothing is queued
    if as_json:
        print_json(job.to_dict())
        return
    out.print(job.id)
    note(f"queued training {describe(job.payload)}; run `styler worker` to train it, `styler jobs ls` to follow it")


def _report(outcome, as_json: bool) -> None:
    a = outcome.adapter
    if as_json:
        print_json({"run": outcome.run.to_dict(), "adapter": a.to_dict() if a else None})
        return
    out.print(f"trained [bold]{escape(a.label)}[/] ({a.method}) in run {outcome.run.id}; final loss {outcome.final_loss:.4f}")
    note(f"see it with `styler adapters show {a.label}`")


def _dry_run(cfg, reg, as_json: bool) -> None:
    from ..train.plan import build_pipeline, make_plan

    plan = make_plan(cfg, reg, check_device=False)
    build_pipeline(plan, "cpu")
    if as_json:
        print_json(plan.as_dict())
        return
    d = plan.as_dict()
    out.print(f"[bold]plan[/] {escape(cfg.method)} on {escape(d['dataset'])} with base {escape(d['base'].get('name', '?'))}")
    out.print(f"  images     {d['train_images']} train, {d['val_images']} val")
    out.print(f"  steps      {d['steps']} × {d['samples_per_step']} samples = {d['epochs']} epochs")
    out.print(f"  trainable  {d['trainable_params']:,} parameters")
    out.print(f"  memory     ~{human_bytes(d['memory_estimate_bytes'])} for weights and optimizer state (activations extra)")
    for line in plan.bucket_table():
        out.print(f"  {escape(line)}")
    for n in d["notes"]:
        note(n)
