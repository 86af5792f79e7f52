"""`styler eval probe DATASET… --on X`: fit the linear style probe on the datasets' CLIP
embeddings and say which style X's images read as (e.g. whether a 0.5/0.5 mix reads as both)."""

from __future__ import annotations

from pathlib import Path

from registry import NotFound, Output, Registry, Score, is_id

from ..errors import UsageError
from .run import dataset_images, output_images


def _targets(on: str, reg: Registry):
    """(label, images, output ids) for a folder, a comma list of output ids, or an evaluated subject."""
    from ..data.images import IMAGE_EXTS, BadImage, load_image

    p = Path(on).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        images = []
        for f in files:
            try:
                images.append(load_image(f).image)
            except BadImage:
                continue
        if not images:
            raise UsageError(f"--on {p}: no usable images in that folder")
        return str(p), images, []
    parts = [x.strip() for x in on.split(",") if x.strip()]
    if parts and all(is_id(x) for x in parts):
        try:
            outs = [reg.get(Output, x.upper()) for x in parts]
        except NotFound as exc:
            raise UsageError(f"--on: {exc.message}") from None
        return on, output_images(outs, reg), [o.id for o in outs]
    from .run import SubjectQuery

    query = SubjectQuery([on], reg)
    scored = [s for s in reg.all(Score) if query(s.subject)]
    if not scored:
        raise UsageError(f"--on {on!r}: not a folder, output ids, or an evaluated adapter/mix; run `styler eval {on}` first")
    ids = scored[-1].output_ids
    outs = [reg.get(Output, i) for i in ids]
    return scored[-1].subject.get("name", on), output_images(outs, reg), ids


def run_probe(datasets: list[str], on: str, *, clip: str | None = None, registry: Registry | None = None,
              warn=None, placement=None) -> dict:
    from .features import ClipFeatures, resolve_clip
    from .probe import fit_probe, predict, summarize

    reg = registry or Registry()
    if len(datasets) < 2:
        raise UsageError("the probe needs at least two datasets (one per style) to tell apart")
    from ..models.resolve import resolve_base
    from .features import default_clip_for

    ref = resolve_clip(clip, fallback=default_clip_for([resolve_base(None).kind]) if not clip else None)
    if ref.note and warn:
        warn(ref.note)
    feats = ClipFeatures.open(ref, placement=placement)
    by_class, labels = {}, []
    for text in datasets:
        d, paths = dataset_images(text, reg)
        by_class[d.label] = feats.image_embeddings(paths)
        labels.append(d.label)
    probe = fit_probe(by_class)
    name, images, ids = _targets(on, reg)
    probs = predict(probe, feats.image_embeddings(images))
    summary = summarize(probe, probs)
    protocol = {"clip": {"name": ref.name, "hash": ref.hash, "meaningful": ref.meaningful, "world": ref.world}, "classes": probe.classes,
                "train_accuracy": probe.train_accuracy, "val_accuracy": probe.val_accuracy, "n": len(images)}
    for cls in probe.classes:
        reg.insert(Score(metric=f"probe:{cls}", value=float(summary["mean_probability"][cls]),
                         subject={"kind": "probe-target", "name": name}, output_ids=ids, protocol=protocol))
    return {"target": name, "classes": probe.classes, "train_accuracy": probe.train_accuracy,
            "val_accuracy": probe.val_accuracy, **summary}
