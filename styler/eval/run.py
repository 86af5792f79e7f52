"""`styler eval`: render (or reuse) images for an adapter or a mix and for the plain base with the
same prompts and seeds, score both the same way, and store Score records with their protocol."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from registry import Adapter, BlobStore, Dataset, Output, Registry, Score, parse_name

from ..errors import UsageError
from ..generate.service import Request, generate

DEFAULT_METRICS = ("clip_t", "style_sim", "cmmd", "fid", "kid")
DATASET_METRICS = {"style_sim", "fid", "kid", "cmmd"}
FALLBACK_PROMPTS = ("a cat", "a mountain landscape", "a portrait of a woman", "a bowl of fruit")


@dataclass
class Subject:
    kind: str  # adapter | mix | baseline
    name: str
    adapters: list = field(default_factory=list)  # [(Adapter record, weight)]

    def as_dict(self) -> dict:
        d = {"kind": self.kind, "name": self.name}
        if self.adapters:
            d["adapters"] = [{"id": a.id, "name": a.label, "weight": w} for a, w in self.adapters]
        if self.kind == "adapter":
            d["id"] = self.adapters[0][0].id
        return d

    @property
    def specs(self) -> list:
        return [(a.label, w, None) for a, w in self.adapters]


def parse_subject(text: str, reg: Registry) -> Subject:
    """`anime`, `anime@2`, `anime=0.5+watercolor=0.5`, or `baseline`."""
    from registry import parse_spec

    if text == "baseline":
        return Subject("baseline", "baseline")
    parts = [p for p in text.split("+") if p]
    adapters = []
    for p in parts:
        spec = parse_spec(p)
        w = spec.weight
        a = reg.resolve(Adapter, str(spec.name))
        if a.id in {x.id for x, _ in adapters}:
            raise UsageError(f"{a.label} is in the mix twice")
        adapters.append((a, 1.0 if w is None else w))
    if len(adapters) == 1 and adapters[0][1] == 1.0:
        return Subject("adapter", adapters[0][0].label, adapters)
    adapters.sort(key=lambda aw: aw[0].label)  # one name per mix, whatever order it was typed in
    return Subject("mix", "+".join(f"{a.label}={w:g}" for a, w in adapters), adapters)


def subject_key(subject: dict) -> tuple | None:
    """What identifies a scored subject (a Score's `subject`): its adapters' ids and weights, in no
    order; None for a baseline or a record without adapter ids."""
    if subject.get("kind") == "adapter" and subject.get("id"):
        return ((subject["id"], 1.0),)
    if subject.get("kind") == "mix" and subject.get("adapters"):
        return tuple(sorted((a.get("id"), round(float(a.get("weight", 1.0)), 6)) for a in subject["adapters"]))
    return None


class SubjectQuery:
    """Which scored subjects the names a user typed mean. A name matches a subject stored under
    exactly that name, or one with the same adapters and weights: `anime` is anime's latest version,
    and `a=0.5+b=0.5`, `b=0.5+a=0.5` and `a@1=0.5+b@1=0.5` (when 1 is the latest) are one mix."""

    def __init__(self, names, reg: Registry):
        self.names = list(names)
        self.keys: dict[tuple, str] = {}
        for name in self.names:
            try:
                subject = parse_subject(name, reg)
            except Exception:  # not an adapter or mix of this registry: matched by its exact name only
                continue
            key = subject_key(subject.as_dict())
            if key:
                self.keys[key] = name

    def which(self, subject: dict) -> str | None:
        """The typed name that `subject` answers, or None."""
        name = subject.get("name")
        if name in self.names:
            return name
        return self.keys.get(subject_key(subject))

    def __call__(self, subject: dict) -> bool:
        return self.which(subject) is not None


def adapter_captions(a: Adapter, reg: Registry) -> list[str]:
    """The non-empty captions of the dataset an adapter was trained on; [] when it has none."""
    if not a.dataset_id:
        return []
    try:
        d = reg.get(Dataset, a.dataset_id)
    except Exception:
        return []
    rows = [json.loads(x) for x in (reg.home / d.path / "captions.jsonl").read_text("utf-8").splitlines() if x.strip()]
    return [r["text"] for r in rows if r["text"]]


def default_prompts(subject: Subject, reg: Registry, n: int) -> list[str]:
    """The adapters' own dataset captions (their style words and triggers), else a small set."""
    lists = [c for c in (adapter_captions(a, reg) for a, _ in subject.adapters) if c]
    prompts = []
    for i in range(max((len(x) for x in lists), default=0)):
        prompts += [x[i] for x in lists if i < len(x)]
    return prompts[:n] or list(FALLBACK_PROMPTS)


def _clip_fallback(subject: Subject, base: str | None) -> str | None:
    """tiny when the subject's adapters (or, for the baseline, the base to render with) are the tiny base's."""
    from .features import default_clip_for

    kinds = [(a.base or {}).get("kind") for a, _ in subject.adapters]
    if not kinds:
        from ..models.resolve import resolve_base

        kinds = [resolve_base(base or None).kind]
    return default_clip_for(kinds)


def read_prompts(path: str | Path) -> list[str]:
    from ..data.captions import read_utf8

    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"--prompts {p} does not exist")
    prompts = [line.strip() for line in read_utf8(p, str(p)).splitlines() if line.strip() and not line.startswith("#")]
    if not prompts:
        raise UsageError(f"--prompts {p} has no prompts (one per line)")
    return prompts


def _placement_key(device: str, dtype: str) -> tuple:
    """Device kind and dtype; outputs from before styler recorded them were all rendered on the CPU in fp32."""
    return ((device or "cpu").split(":")[0], dtype or "fp32")


def _recipe_key(o: Output) -> tuple:
    return (o.base.get("hash"), o.prompt, o.negative, o.seed, o.steps, o.guidance, o.width, o.height, o.scheduler,
            tuple(sorted((a["id"], float(a["weight"]), float(a["te_weight"])) for a in o.adapters)), o.kind,
            o.content_blob, (o.params or {}).get("strength"), _placement_key(o.device, o.dtype))


def render_set(subject: Subject, prompts: list[str], seeds: list[int], settings: dict, reg: Registry, session,
               warn, contents: list | None = None, strength: float | None = None, batch: int = 1) -> list[Output]:
    """One image per (prompt, seed) pair — transferred from contents[i] when given — reusing outputs
    that already have the same recipe (on the same kind of device, in the same dtype). The missing
    text-to-image ones render `batch` per forward pass."""
    from ..generate.service import MAX_TOKENS, prompt_cut, render_and_store, resolve_choices

    existing = {}
    for o in reg.all(Output):
        existing.setdefault(_recipe_key(o), o)
    outputs: list[Output | None] = [None] * len(prompts)
    todo: list[tuple[int, Request, int]] = []
    blobs = BlobStore(reg.home)
    where = _placement_key(session.placement.device, session.placement.dtype)
    for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
        req = Request(prompt=prompt, seed=seed, n=1, adapters=subject.specs, **settings)
        content_blob = None
        if contents:
            req.content, req.strength = str(contents[i]), strength
            content_blob = _content_digest(contents[i], blobs)
        w, h = _content_size(contents[i]) if contents else (req.width, req.height)
        want = (session.identity.get("hash"), prompt, "", seed, req.steps, req.guidance, w, h,
                req.scheduler, tuple(sorted((a.id, float(w_), float(w_)) for a, w_ in subject.adapters)),
                "img2img" if contents else "txt2img", content_blob, strength if contents else None, where)
        if want in existing:
            outputs[i] = existing[want]
            continue
        req.extra = {"eval": subject.name}
        if contents:  # each transfer has its own content image: one at a time
            outputs[i] = existing[want] = generate(req, registry=reg, session=session, warn=warn)[0]
        else:
            req.batch = batch
            req.validate()
            todo.append((i, req, seed))
    if todo:
        for prompt in dict.fromkeys(r.prompt for _, r, _ in todo):
            cut = prompt_cut(session.pipe, prompt)
            if cut:
                warn(f"the prompt is longer than {MAX_TOKENS} tokens; this part is cut: {cut!r}")
        session.set_scheduler(todo[0][1].scheduler)
        recorded = session.apply(resolve_choices(reg, subject.specs), reg, warn)
        made = render_and_store([(r, seed) for _, r, seed in todo], session, recorded, reg)
        for (i, _, _), out in zip(todo, made):
            outputs[i] = out
    return outputs


def _content_size(path) -> tuple[int, int]:
    from ..data.images import load_image

    im = load_image(Path(path)).image
    return im.width // 8 * 8, im.height // 8 * 8


def _content_digest(path, blobs: BlobStore) -> str:
    """The blob digest generate() stores for this content image (PNG of its usable crop)."""
    from ..data.images import load_image

    im = load_image(Path(path)).image
    w, h = im.width // 8 * 8, im.height // 8 * 8
    buf = io.BytesIO()
    im.crop((0, 0, w, h)).save(buf, format="PNG")
    return hashlib.sha256(buf.getvalue()).hexdigest()


def content_files(path: str | Path) -> list[Path]:
    from ..data.images import IMAGE_EXTS

    p = Path(path).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if files:
            return files
        raise UsageError(f"--content {p}: no images in that folder")
    raise UsageError(f"--content {p} does not exist")


def evaluate_transfer(text: str, content: str | Path, *, strength: float = 0.6, seed: int = 0, prompt: str | None = None,
                      clip: str | None = None, steps: int = 20, guidance: float = 7.5, base: str | None = None,
                      registry: Registry | None = None, warn=None, placement=None, scheduler: str = "ddim") -> dict:
    """Style transfer scores: content_sim and ssim for the subject and the baseline (the same
    transfer without adapters), and style_strength = (1 − cs_subject) / (1 − cs_baseline)."""
    import math

    from ..generate.engine import Session
    from . import metrics as M
    from .features import ClipFeatures, resolve_clip

    warn = warn or (lambda m: None)
    reg = registry or Registry()
    from ..generate.engine import check_scheduler

    check_scheduler(scheduler)
    subject = parse_subject(text, reg)
    if subject.kind == "baseline":
        raise UsageError("transfer scores compare an adapter or a mix with the baseline; name an adapter or a mix")
    files = content_files(content)
    clip_ref = resolve_clip(clip, fallback=_clip_fallback(subject, base))
    if clip_ref.note:
        warn(clip_ref.note)
    prompt = prompt or (default_prompts(subject, reg, 1)[0])
    seeds = [seed + i for i in range(len(files))]
    from ..device import resolve_placement

    placement = placement or resolve_placement()
    session = Session.open(base, placement)
    settings = {"steps": steps, "guidance": guidance, "scheduler": scheduler}
    features = ClipFeatures.open(clip_ref, placement=placement)
    from ..data.images import load_image

    content_images = [load_image(f).image for f in files]
    content_images = [im.crop((0, 0, im.width // 8 * 8, im.height // 8 * 8)) for im in content_images]
    content_emb = features.image_embeddings(content_images)
    protocol = {"clip": {"name": clip_ref.name, "hash": clip_ref.hash, "meaningful": clip_ref.meaningful,
                         "world": clip_ref.world, **features.placement.as_dict()}, **placement.as_dict(), "n": len(files), "strength": strength, "prompt": prompt, "seeds": [seeds[0], seeds[-1]], "steps": steps,
                "guidance": guidance, "scheduler": scheduler, "base": session.identity, "transfer": True}
    sims, results, subject_outs, outputs = {}, {}, [], {}
    for subj in (subject, Subject("baseline", "baseline (transfer)")):
        outs = render_set(subj, [prompt] * len(files), seeds, settings, reg, session, warn, contents=files,
                          strength=strength)
        images = output_images(outs, reg)
        emb = features.image_embeddings(images, keys=[o.blob for o in outs])
        cs = M.mean(M.content_sim(content_emb, emb))
        values = {"content_sim": cs,
                  "ssim": M.mean([M.ssim(_unit(c), _unit(o)) for c, o in zip(content_images, images)])}
        sims[subj.kind] = cs
        if subj is subject:
            subject_outs = outs
        results[subj.name] = values
        outputs[subj.name] = [o.id for o in outs]
        for m, v in values.items():
            reg.insert(Score(metric=m, value=float(v), subject=subj.as_dict(), output_ids=[o.id for o in outs],
                             protocol=protocol))
    strength_value = M.style_strength(sims[subject.kind], sims["baseline"])
    if math.isnan(strength_value):
        warn("style_strength skipped: the baseline did not move away from the content at all")
    else:
        results[subject.name]["style_strength"] = strength_value
        reg.insert(Score(metric="style_strength", value=float(strength_value), subject=subject.as_dict(),
                         output_ids=[o.id for o in subject_outs], protocol=protocol))
    return {"scores": results, "protocol": protocol, "outputs": outputs}


def _unit(image):
    """A PIL image as a 1×3×H×W float tensor in [0, 1] (what metrics.ssim takes)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def output_images(outputs: list[Output], reg: Registry):
    from PIL import Image

    blobs = BlobStore(reg.home)
    images = []
    for o in outputs:
        with blobs.open(o.blob) as fh:
            images.append(Image.open(io.BytesIO(fh.read())).convert("RGB"))
    return images


def _triggers(subject: Subject) -> tuple[str, ...]:
    return tuple(a.trigger for a, _ in subject.adapters if getattr(a, "trigger", None))


def _with_legibility(chosen: list[str], explicit: bool, prompts: list[str], subject: Subject, warn) -> list[str]:
    """Legibility joins the default metrics when the prompts ask for Chinese characters and the OCR
    extra is installed (else one warning says how to get it); asked for with prompts that ask for
    none, it is skipped with a warning."""
    from .legibility import OCR_HINT, ocr_available, target_characters

    wants_text = any(target_characters(p, _triggers(subject)) for p in prompts)
    if "legibility" in chosen:
        if not wants_text:
            warn("legibility is skipped: no prompt asks for Chinese characters (besides 书法 and trigger words)")
            return [m for m in chosen if m != "legibility"]
        if not ocr_available():
            raise UsageError(f"the legibility metric needs an OCR model; {OCR_HINT}")
        return chosen
    if explicit or not wants_text:
        return chosen
    if not ocr_available():
        warn(f"the prompts ask for Chinese characters; to score how legible they are, {OCR_HINT}")
        return chosen
    return [*chosen, "legibility"]


def _fitting_metrics(chosen: list[str], n: int, n_ref: int, dim: int, explicit: bool, warn) -> list[str]:
    """The metrics whose minimum sample size n (generated) and n_ref (reference) meet; asked-for
    ones below it are refused, default ones skipped with one warning, before anything renders.
    Those kept but below their comfortable size get one caution each."""
    from . import metrics as M

    kept, skipped = [], []
    for m in chosen:
        need = M.eval_minimum(m, dim)
        if min(n, n_ref) >= need:
            kept.append(m)
            note = M.small_sample_warning(m, min(n, n_ref), dim if m == "fid" else None)
            if note:
                warn(note)
            continue
        side = f"--n {n}" if n < need else f"the reference set's {n_ref} images"
        if explicit:
            raise UsageError(f"{m} needs at least {need} images per side, {side} is fewer; "
                             + ("raise --n" if n < need else "use a larger --against dataset"))
        skipped.append(f"{m} (needs {need})")
    if skipped:
        warn(f"skipped {', '.join(skipped)}: too few images per side (--n {n}, reference {n_ref}); see `styler eval --help`")
    return kept


def dataset_images(label: str, reg: Registry):
    from ..train.data import load_items

    d = reg.resolve(Dataset, label)
    items = load_items(d, reg.home, "all")
    if not items:
        raise UsageError(f"{d.label} has no usable images to compare against")
    return d, [it.path for it in items]


def evaluate(text: str, *, prompts_file=None, n: int = 8, seed: int = 0, metrics: str | None = None,
             against: str | None = None, clip: str | None = None, steps: int = 20, guidance: float = 7.5,
             size: int | None = None, base: str | None = None, batch: int = 1, registry: Registry | None = None,
             warn=None, placement=None, prompts: list[str] | None = None, seeds: list[int] | None = None,
             scheduler: str = "ddim") -> dict:
    """Score a subject and the baseline; returns {subject name: {metric: value}} plus the protocol.
    Images render and CLIP runs on `placement` (default: resolve_placement()). `prompts` (instead of
    a file) and `seeds` (one per image, instead of seed, seed + 1, …; n is their number) let a caller
    render a set it chose, e.g. a study's prompts × seeds."""
    from ..device import resolve_placement

    placement = placement or resolve_placement()
    if batch < 1:
        raise UsageError(f"--batch {batch}: render at least one image per pass (--batch 1)")
    from ..generate.engine import Session
    from . import metrics as M
    from .features import ClipFeatures, resolve_clip

    warn = warn or (lambda m: None)
    reg = registry or Registry()
    if seeds is not None:
        seeds = [int(s) for s in seeds]
        n = len(seeds)
    if n < 1:
        raise UsageError(f"--n {n}: evaluate at least one image")
    from ..generate.engine import check_scheduler

    check_scheduler(scheduler)
    chosen = M.parse_metrics(metrics) if metrics else list(DEFAULT_METRICS)
    explicit = metrics is not None
    subject = parse_subject(text, reg)
    ref_label = against
    if ref_label is None and subject.kind == "adapter" and subject.adapters[0][0].dataset_id:
        try:
            ref_label = reg.get(Dataset, subject.adapters[0][0].dataset_id).label
        except Exception:
            ref_label = None
    if ref_label is None and DATASET_METRICS & set(chosen):
        if explicit:
            raise UsageError(f"{', '.join(sorted(DATASET_METRICS & set(chosen)))} compare with a dataset; give --against DATASET")
        warn("no dataset to compare with (give --against DATASET); style_sim, fid, kid and cmmd are skipped")
        chosen = [m for m in chosen if m not in DATASET_METRICS]
    clip_ref = resolve_clip(clip, fallback=_clip_fallback(subject, base))
    if clip_ref.note:
        warn(clip_ref.note)
    chosen_seeds = seeds is not None
    if not prompts:
        prompts = read_prompts(prompts_file) if prompts_file else default_prompts(subject, reg, n)
    plist = [prompts[i % len(prompts)] for i in range(n)]
    chosen = _with_legibility(chosen, explicit, plist, subject, warn)
    seeds = seeds if chosen_seeds else [seed + i for i in range(n)]
    session = Session.open(base, placement)
    side = size or (64 if session.base.kind == "tiny" else 512)
    settings = {"steps": steps, "guidance": guidance, "width": side, "height": side, "scheduler": scheduler}
    from ..generate.service import check_size

    check_size(Request(prompt="-", **settings), session.pipe)
    Request(prompt="-", **settings).validate()
    features = ClipFeatures.open(clip_ref, placement=placement)
    ref_emb = None
    protocol = {"clip": {"name": clip_ref.name, "hash": clip_ref.hash, "meaningful": clip_ref.meaningful,
                         "world": clip_ref.world, **features.placement.as_dict()}, **placement.as_dict(),
                "n": n, "seeds": [seeds[0], seeds[-1]], "prompts_sha256": hashlib.sha256("\n".join(plist).encode()).hexdigest(),
                "steps": steps, "guidance": guidance, "size": side, "scheduler": scheduler, "resize": "shorter side to the CLIP input, center crop",
                "base": session.identity, **({"seed_list": seeds} if chosen_seeds else {})}
    if "legibility" in chosen:
        from .legibility import OCR_SIDE, engine_version

        protocol["ocr"] = {"engine": engine_version(), "side": OCR_SIDE}
    if ref_label and DATASET_METRICS & set(chosen):
        d, ref_paths = dataset_images(ref_label, reg)
        protocol["against"] = {"name": d.label, "id": d.id, "content_hash": d.content_hash, "n": len(ref_paths)}
        chosen = _fitting_metrics(chosen, n, len(ref_paths), features.model.config.projection_dim, explicit, warn)
        if DATASET_METRICS & set(chosen):
            ref_emb = features.image_embeddings(ref_paths)
    results, outputs = {}, {}
    # a baseline is only comparable with subjects scored against the same reference dataset
    baseline = Subject("baseline", f"baseline vs {protocol['against']['name']}" if "against" in protocol else "baseline")
    if subject.kind == "baseline":
        subject = baseline
    for subj in ([subject] if subject.kind == "baseline" else [subject, baseline]):
        outs = render_set(subj, plist, seeds, settings, reg, session, warn, batch=batch)
        images = output_images(outs, reg)
        emb = features.image_embeddings(images, keys=[o.blob for o in outs])
        values = {}
        for m in chosen:
            if m == "clip_t":
                values[m] = M.mean(M.clip_t(emb, features.text_embeddings(plist)))
            elif m == "style_sim":
                values[m] = M.style_sim(emb, ref_emb)
            elif m == "legibility":
                from .legibility import legibility

                values[m] = legibility(images, plist, _triggers(subject))[0]
            elif m in ("fid", "kid", "cmmd"):
                kid_subset = M.eval_kid_subset(min(len(outs), ref_emb.shape[0]))
                values[m] = {"fid": lambda: M.fid(emb, ref_emb), "cmmd": lambda: M.cmmd(emb, ref_emb),
                             "kid": lambda: M.kid(emb, ref_emb, subset_size=kid_subset)[0]}[m]()
        for m, v in values.items():
            reg.insert(Score(metric=m, value=float(v), subject=subj.as_dict(), output_ids=[o.id for o in outs],
                             protocol=protocol))
        results[subj.name] = values
        outputs[subj.name] = [o.id for o in outs]
    return {"scores": results, "protocol": protocol, "outputs": outputs}
