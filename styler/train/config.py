"""The training configuration: one dataclass, settable from the command line and from a TOML file
with the same keys, validated in one place, and written into every run as config.toml."""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

METHODS = ("lora", "adalora", "dreambooth", "textual-inversion")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
PRECISIONS = ("no", "fp16", "bf16")
AUGMENTS = ("flip", "crop", "color")
OPTIMIZERS = ("adamw", "adamw8bit")
LOGGERS = ("tensorboard", "wandb")
# named target sets; anything else is a comma list of module-name suffixes
UNET_ATTN = ("to_q", "to_k", "to_v", "to_out.0")
UNET_CONV = ("conv1", "conv2", "conv_shortcut", "proj_in", "proj_out")
UNET_FF = ("ff.net.0.proj", "ff.net.2")
TARGET_SETS = {"attn": UNET_ATTN, "conv": UNET_CONV, "ff": UNET_FF}
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


@dataclass
class TrainConfig:
    """Everything a run needs; the saved config.toml of a run is enough to run it again."""

    dataset: str = ""
    base: str = ""
    method: str = "lora"
    name: str = ""  # adapter name; defaults to the dataset's
    rank: int = 16
    alpha: float | None = None  # defaults to rank (scale 1)
    targets: str = "attn"  # attn | attn+conv | attn+conv+ff | comma list of module names
    text_encoder: bool = False
    dora: bool = False
    lr: float = 1e-4
    lr_text: float | None = None  # defaults to lr
    scheduler: str = "constant"
    warmup: int = 0
    steps: int | None = None
    epochs: int | None = None
    batch: int = 1
    accum: int = 1
    resolution: int | None = None  # None: the base's native size (UNet sample_size x VAE factor)
    seed: int = 0
    precision: str = "no"
    grad_checkpointing: bool = False
    low_memory: bool = False  # attention slicing + VAE tiling + gradient checkpointing
    snr_gamma: float | None = None
    noise_offset: float = 0.0
    augment: list[str] = field(default_factory=list)
    # aspect-ratio buckets (styler/train/buckets.py); the run pins the values it resolved
    buckets: bool = False
    min_bucket_reso: int | None = None  # None: resolution / 2 (kohya's 256 at 512)
    max_bucket_reso: int | None = None  # None: resolution × 2
    bucket_reso_steps: int | None = None  # None: the base's step (VAE factor × UNet downsampling: 64 on SD-1.5)
    no_upscale: bool = False  # buckets never enlarge an image (kohya's --bucket_no_upscale)
    # captions, changed per sample and step from the seed (styler/train/captions.py)
    shuffle_caption: bool = False
    keep_tokens: int = 0  # the first N comma-separated tags stay in place when shuffling
    caption_dropout: float = 0.0  # probability that a sample trains with the empty caption
    cache_latents: bool = True
    loader_workers: int | None = None  # DataLoader worker processes for the uncached path; None: auto
    optimizer: str = "adamw"
    max_grad_norm: float = 1.0
    validate_every: int = 0
    validation_prompts: list[str] = field(default_factory=list)
    validation_steps: int = 20  # sampler steps for validation images
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    log_with: str | None = None
    log_every: int = 10  # plain progress line every N steps when not on a terminal
    processes: int = 1
    # dreambooth
    instance_prompt: str = ""
    class_prompt: str = ""
    class_images: int = 50
    prior_weight: float = 1.0
    # textual inversion
    token: str = ""  # the new token; defaults to the dataset's trigger word
    init_token: str = ""  # an existing token whose embedding starts the new one
    vectors: int = 1
    # adalora (peft's AdaLoraConfig; None: derived from --rank and the run's steps, see adalora.py)
    adalora_init_rank: int | None = None  # every layer's rank at the start (default 1.5 × target)
    adalora_target_rank: int | None = None  # the average rank per layer the budget ends at (default --rank)
    adalora_tinit: float | None = None  # fraction of the steps before pruning starts (default 0.1)
    adalora_tfinal: float | None = None  # fraction of the steps at the end with the ranks fixed (default 0.2)
    adalora_interval: int | None = None  # steps between two reallocations (peft's deltaT; default 1)
    adalora_orth_reg: float | None = None  # weight of the orthogonality penalty on P and Q (default 0.5)
    adalora_beta1: float | None = None  # EMA of the sensitivity (default 0.85)
    adalora_beta2: float | None = None  # EMA of its uncertainty (default 0.85)

    @property
    def effective_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else float(self.rank)

    @property
    def effective_lr_text(self) -> float:
        return self.lr_text if self.lr_text is not None else self.lr

    def unet_target_modules(self) -> list[str]:
        return resolve_targets(self.targets)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def resolve_targets(spec: str) -> list[str]:
    """`attn+conv` → module-name suffixes; a comma list of module names is checked as given."""
    known = sorted({m for group in TARGET_SETS.values() for m in group})
    hint = f"use attn, conv, ff joined by '+' (e.g. attn+conv) or a comma list of: {', '.join(known)}"
    if "," not in spec:
        parts = spec.split("+")
        if all(p in TARGET_SETS for p in parts):
            return list(dict.fromkeys(m for p in parts for m in TARGET_SETS[p]))
        if "+" in spec:
            bad = [p for p in parts if p not in TARGET_SETS]
            raise UsageError(f"unknown --targets part {', '.join(map(repr, bad))}; {hint}")
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise UsageError(f"unknown --targets {', '.join(bad) or repr(spec)}; {hint}")
    return names


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config; keys may use '-' or '_'. Unknown keys are an error that lists the known ones."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"--config {p} does not exist")
    try:
        data = tomllib.loads(p.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {p} is not valid TOML ({exc})") from None
    data = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise UsageError(f"--config {p}: unknown key(s) {', '.join(unknown)}; known keys are the `styler train` options")
    return data


def build_config(toml_values: dict[str, Any] | None = None, **cli_values: Any) -> TrainConfig:
    """Defaults, then the TOML file, then options given on the command line (None = not given)."""
    values: dict[str, Any] = {}
    values.update(toml_values or {})
    values.update({k: v for k, v in cli_values.items() if v is not None})
    for key, value in values.items():
        if key not in FIELDS:
            raise UsageError(f"unknown training option {key!r}")
    if isinstance(values.get("augment"), str):
        values["augment"] = [a.strip() for a in values["augment"].split(",") if a.strip()]
    if isinstance(values.get("validation_prompts"), str):
        values["validation_prompts"] = [values["validation_prompts"]]
    try:
        cfg = TrainConfig(**values)
    except TypeError as exc:
        raise UsageError(f"bad training option: {exc}") from None
    validate(cfg)
    return cfg


def _check_type(cfg: TrainConfig) -> None:
    for name, f in FIELDS.items():
        value = getattr(cfg, name)
        kind = str(f.type)
        if value is None:
            continue
        if kind.startswith("int") and (not isinstance(value, int) or isinstance(value, bool)):
            raise UsageError(f"{name} must be a whole number, got {value!r}")
        if kind.startswith("float") and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise UsageError(f"{name} must be a number, got {value!r}")
        if kind == "bool" and not isinstance(value, bool):
            raise UsageError(f"{name} must be true or false, got {value!r}")
        if kind == "str" and not isinstance(value, str):
            raise UsageError(f"{name} must be text, got {value!r}")
        if kind.startswith("list") and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise UsageError(f"{name} must be a list of text, got {value!r}")


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0  # nan and inf fail too (nan > 0 is False, inf > 0 is not)


def _non_negative(x: float) -> bool:
    return math.isfinite(x) and x >= 0


def validate(cfg: TrainConfig) -> None:
    """Every check that needs no model or dataset: one UsageError naming the option and the fix."""
    _check_type(cfg)

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise UsageError(message)

    need(cfg.method in METHODS, f"unknown --method {cfg.method!r}; use one of {', '.join(METHODS)}")
    if cfg.name:  # here, not when the adapter is registered at the end of a finished run
        from registry import InvalidName, parse_name

        try:
            parse_name(cfg.name, allow_version=False)
        except InvalidName as exc:
            raise UsageError(f"--name: {exc.message}") from None
    need(cfg.rank > 0, f"--rank must be > 0 (got {cfg.rank}); 4–32 is usual for styles")
    need(cfg.alpha is None or _positive(cfg.alpha), f"--alpha must be > 0 and finite (got {cfg.alpha}); it defaults to --rank")
    need(_positive(cfg.lr), f"--lr must be > 0 and finite (got {cfg.lr:g}); 1e-4 is usual for LoRA")
    need(cfg.lr_text is None or _positive(cfg.lr_text),
         f"--lr-text must be > 0 and finite (got {cfg.lr_text}); it defaults to --lr")
    need(cfg.resolution is None or cfg.resolution >= 8 and cfg.resolution % 8 == 0,
         f"--resolution {cfg.resolution} must be a multiple of 8 (the VAE downsamples 8×), e.g. 512")
    need(cfg.batch >= 1, f"--batch must be >= 1 (got {cfg.batch})")
    need(cfg.accum >= 1, f"--accum must be >= 1 (got {cfg.accum})")
    need(cfg.warmup >= 0, "--warmup must be >= 0")
    need(not (cfg.steps is not None and cfg.epochs is not None), "give --steps or --epochs, not both")
    need(cfg.steps is None or cfg.steps >= 1, f"--steps must be >= 1 (got {cfg.steps})")
    need(cfg.epochs is None or cfg.epochs >= 1, f"--epochs must be >= 1 (got {cfg.epochs})")
    need(cfg.scheduler in SCHEDULERS, f"unknown --scheduler {cfg.scheduler!r}; use one of {', '.join(SCHEDULERS)}")
    need(cfg.precision in PRECISIONS, f"unknown --precision {cfg.precision!r}; use no, fp16 or bf16")
    need(cfg.optimizer in OPTIMIZERS, f"unknown --optimizer {cfg.optimizer!r}; use adamw or adamw8bit")
    bad = [a for a in cfg.augment if a not in AUGMENTS]
    need(not bad, f"unknown --augment {', '.join(bad)}; use a comma list of {', '.join(AUGMENTS)}")
    need(cfg.keep_tokens >= 0, f"--keep-tokens must be >= 0 (got {cfg.keep_tokens}); it counts the leading "
         "comma-separated tags --shuffle-caption leaves in place (e.g. 1 for a trigger word)")
    need(0.0 <= cfg.caption_dropout <= 1.0, f"--caption-dropout must be between 0 and 1 (got {cfg.caption_dropout:g}); "
         "it is the probability of training a sample on the empty caption (0.05–0.1 is usual)")
    if not cfg.buckets:
        given = [f"--{n.replace('_', '-')}" for n in ("min_bucket_reso", "max_bucket_reso", "bucket_reso_steps",
                                                      "no_upscale") if getattr(cfg, n) not in (None, False)]
        need(not given, f"{given[0] if given else ''} only applies to --buckets; add --buckets or drop it")
    for n in ("min_bucket_reso", "max_bucket_reso", "bucket_reso_steps"):
        value = getattr(cfg, n)
        need(value is None or value >= 8 and value % 8 == 0,
             f"--{n.replace('_', '-')} {value} must be a multiple of 8, the VAE's factor (bucket sides become "
             "latents 1/8 the size); 64 is SD-1.5's step")
    need(cfg.log_with in (None, *LOGGERS), f"unknown --log-with {cfg.log_with!r}; use tensorboard or wandb")
    need(cfg.snr_gamma is None or _positive(cfg.snr_gamma), f"--snr-gamma must be > 0 and finite (got {cfg.snr_gamma}); 5 is usual")
    need(_non_negative(cfg.noise_offset),
         f"--noise-offset must be >= 0 and finite (got {cfg.noise_offset}); 0.05–0.1 is usual")
    need(cfg.processes >= 1, "--processes must be >= 1")
    need(cfg.loader_workers is None or cfg.loader_workers >= 0, f"--loader-workers must be >= 0 (got {cfg.loader_workers})")
    need(cfg.validate_every >= 0 and cfg.checkpoint_every >= 0, "--validate-every/--checkpoint-every must be >= 0")
    need(cfg.keep_checkpoints >= 1, f"--keep-checkpoints must be >= 1 (got {cfg.keep_checkpoints})")
    need(_non_negative(cfg.max_grad_norm), f"max_grad_norm must be >= 0 and finite (got {cfg.max_grad_norm}; "
         "0 turns clipping off)")
    need(cfg.vectors >= 1, "--vectors must be >= 1")
    need(_non_negative(cfg.prior_weight), f"--prior-weight must be >= 0 and finite (got {cfg.prior_weight}); 1 is usual")
    need(cfg.class_images >= 1, f"--class-images must be >= 1 (got {cfg.class_images})")
    if cfg.method != "textual-inversion":
        cfg.unet_target_modules()  # raises on unknown target names
    from .adalora import validate_adalora

    validate_adalora(cfg)
    if cfg.method == "textual-inversion":
        need(not cfg.text_encoder, "--text-encoder trains a LoRA on the text encoder; it cannot be combined with "
             "--method textual-inversion (which trains only the new token's embedding)")
        need(not cfg.dora, "--dora applies to LoRA methods, not textual-inversion")
        need(cfg.targets == "attn", "--targets applies to LoRA methods, not textual-inversion")
    if cfg.method == "dreambooth":
        need(bool(cfg.class_prompt), "--method dreambooth needs --class-prompt (e.g. 'a photo of a dog' or 'calligraphy')")
