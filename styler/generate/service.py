"""Generation requests end to end: resolve adapters, render one image per seed, store every image
as a blob with an output record (the full recipe), and optionally write PNGs whose text chunks A1111
and civitai read."""

from __future__ import annotations

import io
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from registry import Adapter, BlobStore, Output, Registry, parse_name

from .. import __version__
from ..errors import InputError, UsageError
from .engine import AdapterChoice, Session, check_seed

MAX_TOKENS = 77
MAX_STEPS = 1000
MAX_SIZE_FACTOR = 4  # sides beyond 4× the base's native size break down and can exhaust memory


def native_size(pipe) -> int:
    """The side the base was trained at: the UNet's sample size times the VAE's downsampling."""
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    return int(pipe.unet.config.sample_size) * factor


def check_size(req: "Request", pipe) -> None:
    limit = MAX_SIZE_FACTOR * native_size(pipe)
    if max(req.width, req.height) > limit:
        raise UsageError(f"--size {req.width}x{req.height} is beyond what this base supports (at most {limit} per side, "
                         f"{MAX_SIZE_FACTOR}× its native {native_size(pipe)}); render smaller and upscale")


@dataclass
class Request:
    prompt: str
    negative: str = ""
    steps: int = 30
    guidance: float = 7.5
    seed: int | None = None
    n: int = 1
    width: int = 512
    height: int = 512
    scheduler: str = "ddim"
    adapters: list = field(default_factory=list)  # [(spec "NAME[@v]", weight, te_weight|None)]
    kind: str = "txt2img"  # txt2img | img2img | inpaint
    content: str | None = None  # image path (img2img / inpaint)
    mask: str | None = None
    strength: float = 0.6
    batch: int = 1  # images per forward pass (each from its own seed: the same images as one at a time)
    adapter_steps: dict = field(default_factory=dict)  # adapter spec (as in `adapters`) -> training step to use
    extra: dict = field(default_factory=dict)  # e.g. {"grid": …, "sweep": …}

    def validate(self) -> None:
        if not self.prompt.strip():
            raise UsageError("the prompt is empty; say what to draw, e.g. \"a cat\"")
        if self.n < 1:
            raise UsageError(f"--n {self.n}: make at least one image (--n 1)")
        if self.batch < 1:
            raise UsageError(f"--batch {self.batch}: render at least one image per pass (--batch 1)")
        if self.steps < 1:
            raise UsageError(f"--steps {self.steps} must be >= 1 (20–50 is usual)")
        if self.steps > MAX_STEPS:
            raise UsageError(f"--steps {self.steps} is more than the {MAX_STEPS} the schedules are trained with")
        if not math.isfinite(self.guidance):
            raise UsageError(f"--guidance {self.guidance} must be a finite number (7.5 is usual; 1 turns CFG off)")
        if self.width % 8 or self.height % 8 or self.width < 8 or self.height < 8:
            raise UsageError(f"--size {self.width}x{self.height}: both sides must be multiples of 8 (e.g. 512x512)")
        if not 0 < self.strength <= 1:
            raise UsageError(f"--strength {self.strength} must be in (0, 1] (0.6 keeps the layout and changes the style)")
        if self.content and int(self.steps * self.strength) < 1:
            raise UsageError(f"--strength {self.strength:g} with --steps {self.steps} runs no denoising step "
                             f"(steps × strength < 1); raise --steps or --strength")
        if self.seed is not None:
            check_seed(self.seed)
            check_seed(self.seed + self.n - 1)


def resolve_choices(reg: Registry, specs, steps: dict | None = None) -> list[AdapterChoice]:
    """The adapters of a request; `steps` (spec -> training step) picks an earlier step's weights."""
    choices, seen = [], {}
    for spec, weight, te in specs:
        record = reg.resolve(Adapter, spec)
        if record.id in seen or record.name in {c.record.name for c in choices}:
            raise UsageError(f"{parse_name(spec).full} is given twice; give each adapter once with its total weight")
        seen[record.id] = spec
        choices.append(AdapterChoice(record, 1.0 if weight is None else weight, te, (steps or {}).get(spec)))
    return choices


def prompt_cut(pipe, prompt: str) -> str | None:
    """The part of the prompt past 77 tokens, which CLIP never sees (None when it fits)."""
    from ..train.data import truncated_prompts

    cut = truncated_prompts(pipe.tokenizer, [prompt])
    return cut[0][1] if cut else None


def _load_image(path: str, what: str):
    from ..data.images import BadImage, load_image

    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{what} {p} does not exist")
    try:
        return load_image(p).image
    except BadImage as exc:
        raise InputError(f"{what} {p} is not a usable image: {exc}") from None


def prepare_content(req: Request, warn):
    """Content image (and mask) sized for the model: multiples of 8; a mask of another size is
    resized to the content's (and said so)."""
    from PIL import Image

    image = _load_image(req.content, "content image")
    w, h = image.width // 8 * 8, image.height // 8 * 8
    if (w, h) != image.size:
        warn(f"content image is {image.width}x{image.height}; cropped to {w}x{h} (multiples of 8)")
        image = image.crop((0, 0, w, h))
    mask = None
    if req.mask:
        mask = _load_image(req.mask, "mask").convert("L")
        if mask.size != image.size:
            warn(f"mask is {mask.width}x{mask.height} but the content is {w}x{h}; the mask was stretched to "
                 f"{w}x{h} (white = repaint, black = keep)")
            mask = mask.resize(image.size, Image.Resampling.NEAREST)
    return image, mask


def check_out_dir(out_dir: str | Path | None) -> Path | None:
    """--out must be a folder (or not exist yet) that can be written; checked before any rendering."""
    import tempfile

    from ..errors import WriteError

    if not out_dir:
        return None
    path = Path(out_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file; give a folder for the PNGs (it is created if missing)")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"--out {path}: {probe} is a file, so the folder can't be made there")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise WriteError(f"--out {path}: cannot write in {probe} ({exc.strerror or exc}); choose another folder") from None
    return path


def generate(req: Request, *, registry: Registry | None = None, session: Session | None = None,
             out_dir: str | Path | None = None, warn=None, placement=None) -> list[Output]:
    """Render req.n images, req.batch per forward pass, and register each one; returns their output
    records. Without a session, the base is loaded on `placement` (default: resolve_placement())."""
    reg, session, recorded, image, mask = prepare(req, registry=registry, session=session, out_dir=out_dir,
                                                  warn=warn, placement=placement)
    first = req.seed if req.seed is not None else random.SystemRandom().randint(0, 2**32 - req.n)
    jobs = [(req, first + i) for i in range(req.n)]
    return render_and_store(jobs, session, recorded, reg, out_dir=out_dir, image=image, mask=mask)


def prepare(req: Request, *, registry: Registry | None = None, session: Session | None = None,
            out_dir: str | Path | None = None, warn=None, placement=None):
    """Everything `generate` does before it renders (checks, adapters resolved, base loaded,
    scheduler set, the mix folded in); returns (registry, session, recorded adapters, content
    image, mask). `styler explain` renders through it too, so both draw the same image."""
    warn = warn or (lambda m: None)
    req.validate()
    check_out_dir(out_dir)
    reg = registry or Registry()
    choices = resolve_choices(reg, req.adapters, req.adapter_steps)
    image = mask = None
    if req.content:
        image, mask = prepare_content(req, warn)
        req.kind = "inpaint" if mask is not None else "img2img"
        req.width, req.height = image.size
    session = session or Session.open(req.extra.get("base"), placement)
    check_size(req, session.pipe)
    cut = prompt_cut(session.pipe, req.prompt)
    if cut:
        warn(f"the prompt is longer than {MAX_TOKENS} tokens; this part is cut: {cut!r}")
    session.set_scheduler(req.scheduler)
    recorded = session.apply(choices, reg, warn)
    return reg, session, recorded, image, mask


def render_and_store(jobs: list[tuple[Request, int]], session: Session, recorded: list[dict], reg: Registry, *,
                     out_dir=None, image=None, mask=None, on_output=None) -> list[Output]:
    """Render (request, seed) pairs that share everything but prompt and seed — jobs[0][0].batch
    per forward pass — with the adapters already applied, and store each image with its record.
    `on_output(record)` runs after each record is stored (the worker's progress)."""
    req0 = jobs[0][0] if jobs else None
    outputs: list[Output] = []
    if req0 is None:
        return outputs
    blobs = BlobStore(reg.home)
    content_blob = mask_blob = None
    if image is not None:
        content_blob = blobs.put_bytes(_png_bytes(image))
        mask_blob = blobs.put_bytes(_png_bytes(mask)) if mask is not None else None
    out_path = Path(out_dir).expanduser() if out_dir else None
    if out_path:
        out_path.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(jobs), max(1, req0.batch)):
        chunk = jobs[start:start + max(1, req0.batch)]
        images = session.render_batch(prompts=[r.prompt for r, _ in chunk], negative=req0.negative,
                                      seeds=[seed for _, seed in chunk], steps=req0.steps, guidance=req0.guidance,
                                      width=req0.width, height=req0.height, image=image,
                                      strength=req0.strength if image is not None else None, mask=mask)
        for (req, seed), img in zip(chunk, images):
            record = _store(req, seed, img, session, recorded, reg, blobs, content_blob, mask_blob,
                            image is not None, out_path)
            outputs.append(record)
            if on_output is not None:
                on_output(record)
    return outputs


def _store(req: Request, seed: int, img, session: Session, recorded, reg: Registry, blobs: BlobStore,
           content_blob, mask_blob, transfer: bool, out_path: Path | None) -> Output:
    from ..adapters.library import infotext_adapters
    from .pngmeta import GenParams, save_png

    record = Output(kind=req.kind, prompt=req.prompt, negative=req.negative, seed=seed, steps=req.steps,
                    guidance=req.guidance, width=img.width, height=img.height, scheduler=req.scheduler,
                    base=session.identity, adapters=recorded, content_blob=content_blob,
                    device=session.placement.device, dtype=session.placement.dtype,
                    params={"strength": req.strength if transfer else None, "mask_blob": mask_blob,
                            "styler_version": __version__, **{k: v for k, v in req.extra.items() if k != "base"}})
    params = GenParams(prompt=req.prompt, negative=req.negative, steps=req.steps, guidance=req.guidance,
                       seed=seed, width=img.width, height=img.height, sampler=req.scheduler,
                       model_name=session.identity.get("name", ""), model_hash=session.identity.get("hash", ""),
                       adapters=infotext_adapters(recorded, registry=reg),
                       strength=req.strength if transfer else None, kind=req.kind)
    buf = io.BytesIO()
    save_png(img, buf, params, recipe(record))
    digest = blobs.put_bytes(buf.getvalue())
    record = record.replace(blob=digest)
    written = None
    if out_path:  # the PNG first: a failed write leaves no output record behind (the blob is prunable)
        from ..files import write_bytes_atomic

        written = write_bytes_atomic(out_path / out_file_name(record), buf.getvalue(),
                                     error=f"cannot write the PNG into --out {out_path}")
    try:
        return reg.insert(record)
    except BaseException:
        if written is not None:
            written.unlink(missing_ok=True)
        raise


def out_file_name(o: Output) -> str:
    """The PNG's name under --out: the id; a sweep's or grid's cell also names its adapters,
    weights and seed first (``anime-0.8_watercolor-0.2_seed0_<id>.png``), so the files sort and
    read as the sheet does."""
    params = o.params or {}
    if not (params.get("sweep") or params.get("grid")):
        return f"{o.id}.png"
    parts = [f"{a.get('name', '?')}-{float(a.get('weight', 1)):g}" for a in o.adapters] or ["base"]
    # a grid's other axes too (weights, scales and the seed are in the name already)
    cell = [f"{k.partition(':')[0]}-{str(v)[:40]}" for k, v in (params.get("grid") or {}).items()
            if k not in ("scale", "unet-scale", "seed") and not k.startswith("weight:")]
    stem = "_".join(parts + [f"seed{o.seed}"] + cell)
    stem = "".join(c if c.isalnum() or c in "-._" else "-" for c in stem)
    return f"{stem}_{o.id}.png"


def recipe(o: Output) -> dict:
    """What the PNG's styler chunk holds: enough to make the image again."""
    keys = ("id", "kind", "prompt", "negative", "seed", "steps", "guidance", "width", "height", "scheduler",
            "base", "adapters", "content_blob", "params", "device", "dtype")
    data = asdict(o)
    return {"styler": __version__, **{k: data[k] for k in keys}}


def _png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
