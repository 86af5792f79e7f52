"""Planning a run: resolve dataset and base, count steps, fail fast on anything wrong, and the
deterministic data order the loop follows (the same for a resumed or data-parallel run)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from registry import Dataset, Registry

from ..errors import UsageError
from .config import TrainConfig

DEFAULT_STEPS = 1000


@dataclass
class Plan:
    """What a run will do; printed by --dry-run, used by the loop."""

    cfg: TrainConfig
    dataset: Dataset
    n_train: int
    n_val: int
    total_steps: int
    epochs: float
    samples_per_step: int
    base: object = None
    base_identity: dict = field(default_factory=dict)
    trainable_params: int = 0
    memory_bytes: int = 0
    notes: list[str] = field(default_factory=list)
    stream: object = None  # SquareStream or BucketStream: (epoch, index) of each stream position
    buckets: object = None  # the BucketSpec with --buckets
    train_sizes: list | None = None  # with --buckets: each train image's (width, height) bucket
    val_sizes: list | None = None

    @property
    def epoch_len(self) -> int:
        """Samples in one epoch (with buckets, the refills of each bucket's last batch count)."""
        return self.stream.epoch_len if self.stream is not None else self.n_train

    def bucket_table(self) -> list[str]:
        from .buckets import describe

        return describe(self.buckets, self.train_sizes) if self.buckets is not None else []

    def as_dict(self) -> dict:
        out = {"dataset": self.dataset.label, "base": self.base_identity, "method": self.cfg.method,
               "train_images": self.n_train, "val_images": self.n_val, "steps": self.total_steps,
               "epochs": round(self.epochs, 2), "samples_per_step": self.samples_per_step,
               "trainable_params": self.trainable_params, "memory_estimate_bytes": self.memory_bytes,
               "notes": self.notes, "config": self.cfg.to_dict()}
        if self.buckets is not None:
            from .buckets import bucket_counts

            out["buckets"] = [{"width": w, "height": h, "images": n} for (w, h), n in bucket_counts(self.train_sizes)]
        return out


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix-style, so nearby inputs give unrelated seeds)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h ^= (p + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2)) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


def sample_order(seed: int, epoch: int, n: int) -> list[int]:
    import torch

    return torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(seed, epoch, 7))).tolist()


def stream_indices(seed: int, n: int, start: int, count: int) -> list[tuple[int, int]]:
    """(epoch, dataset index) for positions [start, start+count) of the endless shuffled stream."""
    out, cache = [], {}
    for pos in range(start, start + count):
        epoch, k = divmod(pos, n)
        if epoch not in cache:
            cache[epoch] = sample_order(seed, epoch, n)
        out.append((epoch, cache[epoch][k]))
    return out


VALIDATION_PROMPTS = 2  # captions taken from the dataset when --validate-every has no --validation-prompt


def make_plan(cfg: TrainConfig, reg: Registry, *, check_device: bool = True) -> Plan:
    """Resolve the dataset and base and count steps — every check that fails fast, so a refused run
    writes nothing (check_device=False: a plan for another machine, e.g. --dry-run of an fp16 run on
    a laptop). The base's files, resolution, targets, rank and tokens are checked by preflight
    without loading its weights."""
    from ..models.resolve import base_identity, resolve_base
    from .data import check_cache_compatible, load_items
    from .preflight import check_base

    dataset = reg.resolve(Dataset, cfg.dataset)
    items = load_items(dataset, reg.home, "train")
    n_val = len(load_items(dataset, reg.home, "val")) if dataset.n_val else 0
    if len(items) < cfg.batch:
        raise UsageError(f"{dataset.label} has {len(items)} training image(s), fewer than --batch {cfg.batch}; "
                         f"lower --batch or add images")
    check_cache_compatible(cfg.augment, cfg.cache_latents)
    if check_device:
        _check_precision(cfg.precision)
    if cfg.optimizer == "adamw8bit":
        _check_8bit()
    if cfg.log_with:
        _check_logger(cfg.log_with)
    if cfg.buckets:
        _check_bucketable(dataset)
    per_step = cfg.batch * cfg.accum * cfg.processes
    if cfg.method == "textual-inversion" and not (cfg.token or dataset.trigger):
        raise UsageError(f"--method textual-inversion needs --token, and {dataset.label} has no trigger word")
    base = resolve_base(cfg.base or None)
    layout = check_base(cfg, base, trigger=dataset.trigger)
    from .buckets import BucketStream, SquareStream

    spec = train_sizes = val_sizes = None
    if cfg.buckets:
        spec, train_sizes, val_sizes = _plan_buckets(cfg, layout, items, load_items(dataset, reg.home, "val") if n_val else [])
        stream = BucketStream(cfg.seed, train_sizes, per_step)  # one bucket per optimizer step
    else:
        stream = SquareStream(cfg.seed, len(items))
    if cfg.steps:
        total = cfg.steps
    elif cfg.epochs:
        total = math.ceil(cfg.epochs * stream.epoch_len / per_step)
    else:
        total = DEFAULT_STEPS
    schedule_note = None
    if cfg.method == "adalora":
        from .adalora import schedule

        schedule_note = schedule(cfg, total).describe()  # refuses a run too short to prune in
    if cfg.validate_every and not cfg.validation_prompts:  # the dataset's own captions, held-out first
        val = load_items(dataset, reg.home, "val") if dataset.n_val else []
        cfg.validation_prompts = list(dict.fromkeys(it.text for it in [*val, *items] if it.text.strip()))[:VALIDATION_PROMPTS]
    # pin what was resolved, so the run's config.toml trains the same run again later
    cfg.dataset = dataset.label
    cfg.base = cfg.base or (base.name if base.kind in ("tiny", "hf") else str(base.path))
    plan = Plan(cfg, dataset, len(items), n_val, total, total * per_step / stream.epoch_len, per_step, base,
                base_identity(base), stream=stream, buckets=spec, train_sizes=train_sizes, val_sizes=val_sizes)
    if base.detail:
        plan.notes.append(base.detail)
    if schedule_note:
        plan.notes.append(schedule_note)
    if cfg.keep_tokens and not cfg.shuffle_caption:
        plan.notes.append(f"--keep-tokens {cfg.keep_tokens} does nothing without --shuffle-caption (it names the tags "
                          "shuffling leaves in place)")
    return plan


def _check_bucketable(dataset: Dataset) -> None:
    """--buckets needs the whole pictures: a version imported with a square center crop has none."""
    options, stats = dataset.options or {}, dataset.stats or {}
    if options.get("size") and options.get("crop", "center") == "center" and not options.get("buckets") \
            and stats.get("cropped"):
        size = options["size"]
        raise UsageError(f"{dataset.label} was center-cropped to {size}×{size} at import ({stats['cropped']} non-square "
                         f"image(s) lost their edges), so there are no aspect ratios to bucket; import the folder again "
                         f"with `styler data add {dataset.name} FOLDER --buckets`, or train without --buckets")


def _plan_buckets(cfg: TrainConfig, layout, items, val_items):
    """The run's bucket rules (defaults pinned into cfg) and each image's bucket."""
    from .buckets import assign_buckets, base_step, resolve_spec
    from .preflight import check_buckets

    spec = resolve_spec(cfg.resolution, step=cfg.bucket_reso_steps, min_side=cfg.min_bucket_reso,
                        max_side=cfg.max_bucket_reso, no_upscale=cfg.no_upscale, vae_scale=layout.vae_scale,
                        default_step=base_step(layout.vae_scale, len(layout.unet.config.down_block_types)))
    cfg.bucket_reso_steps, cfg.min_bucket_reso, cfg.max_bucket_reso = spec.step, spec.min_side, spec.max_side
    train_sizes = assign_buckets([it.path for it in items], spec)
    val_sizes = assign_buckets([it.path for it in val_items], spec) if val_items else []
    check_buckets(layout, train_sizes + val_sizes)
    return spec, train_sizes, val_sizes


def _check_precision(precision: str) -> None:
    import torch

    if precision == "fp16" and not torch.cuda.is_available():
        # without a GPU accelerate neither autocasts nor scales fp16, and fp16 weights cannot run on the CPU
        raise UsageError("--precision fp16 needs a CUDA GPU; on the CPU use --precision bf16 or no")


def _check_8bit() -> None:
    import torch

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UsageError("--optimizer adamw8bit needs bitsandbytes (pip install bitsandbytes); use --optimizer adamw") from None
    if not torch.cuda.is_available():
        raise UsageError("--optimizer adamw8bit needs a CUDA GPU; on CPU use --optimizer adamw")


def _check_logger(name: str) -> None:
    import importlib.util

    if importlib.util.find_spec(name) is None:
        raise UsageError(f"--log-with {name} needs the {name} package (pip install {name})")


def memory_estimate(pipe, optimized_params: int, optimizer: str = "adamw") -> int:
    """Every weight in the dtype it is held in (frozen ones in the weight dtype, trainable ones in
    fp32), plus an fp32 gradient and the AdamW moments for each optimised parameter (4 + 8 bytes;
    4 + 2 with 8-bit Adam). Activations come on top and grow with batch × resolution²."""
    weights = sum(p.numel() * p.element_size() for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters())
    per_param = 4 + (2 if optimizer == "adamw8bit" else 8)
    return int(weights + optimized_params * per_param)


def hold_weights(pipe, precision: str, method_name: str):
    """Cast frozen weights to the weight dtype of --precision and keep trainable ones in fp32, as
    diffusers' train_text_to_image_lora.py does (the forward runs under autocast).

    The VAE stays fp32 under fp16: fp16 tops out at 65504, and some SD VAEs (SDXL's, and fine-tunes
    derived from it) overflow to NaN when encoding in fp16; it only encodes (once, with the latent
    cache), so fp32 costs ~160 MB for SD-1.5. bf16 has fp32's range, so under bf16 it is cast too.
    For textual inversion the trainable tensor is the text encoder's whole embedding matrix, so the
    text encoder stays fp32 (as in diffusers' textual_inversion.py)."""
    import torch

    from ..device import weight_dtype

    dtype = weight_dtype(precision)
    if dtype == torch.float32:
        return
    modules = [pipe.unet] + ([pipe.text_encoder] if method_name != "textual-inversion" else [])
    if precision != "fp16":
        modules.append(pipe.vae)
    for m in modules:
        # tensor by tensor rather than module.to(dtype): that also casts the trainable tensors, and
        # diffusers 0.42 warns on every such call; modules a model keeps in fp32 stay fp32
        keep = tuple(getattr(m, "_keep_in_fp32_modules", None) or ())
        for name, t in [*m.named_parameters(), *m.named_buffers()]:
            if t.is_floating_point() and not t.requires_grad and not any(k in name.split(".") for k in keep):
                t.data = t.data.to(dtype)


def build_pipeline(plan: Plan, device: str):
    """Load the base, let the method add what it trains, hold the weights in the dtypes of
    --precision, and fill in the plan's counts."""
    from ..models.load import load_pipeline
    from .methods import make_method

    import torch

    pipe = load_pipeline(plan.base, device="cpu")
    method = make_method(plan.cfg, trigger=plan.dataset.trigger, total_steps=plan.total_steps)
    torch.manual_seed(plan.cfg.seed)  # peft draws the LoRA A init from the global generator
    method.prepare(pipe)  # in fp32, so the initial LoRA/embedding values are the same under every precision
    hold_weights(pipe, plan.cfg.precision, plan.cfg.method)
    plan.trainable_params = method.summary()["trainable_params"]
    optimized = sum(p.numel() for g in method.param_groups() for p in g["params"])
    plan.memory_bytes = memory_estimate(pipe, optimized, plan.cfg.optimizer)
    from ..models.load import quiet

    with quiet():  # diffusers warns about fp16 weights on the CPU, which only --dry-run does
        pipe.to(device)
    if plan.cfg.grad_checkpointing or plan.cfg.low_memory:
        pipe.unet.enable_gradient_checkpointing()
        if plan.cfg.text_encoder:
            te = pipe.text_encoder  # transformers 5 renamed it; older versions have only the first
            getattr(te, "activation_checkpointing_enable", te.gradient_checkpointing_enable)()
    pipe.vae.enable_slicing()  # encode batches one image at a time: same result, less peak memory
    if plan.cfg.low_memory:
        pipe.enable_attention_slicing()
        pipe.vae.enable_tiling()
    return pipe, method
