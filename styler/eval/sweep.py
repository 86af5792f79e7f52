"""`styler eval probe DATASET… --sweep A:B`: mix two adapters from all-A to all-B and measure, at
each weight, which style the style probe reads the images as.

At weight t the mix is A=(1-t) + B=t; every cell renders the same prompts and seeds, so the only
thing that changes along the row is the mix. The prompts are both datasets' captions without either
one's style words, with both triggers where the captions have theirs (`_prompts`). The probe
(fitted on the datasets' CLIP embeddings) classifies each image; a cell's "share for A" is the
fraction of its images whose most likely class is A's dataset. The result carries the Spearman rank
correlation between t and that share (-1: A's style fades monotonically as B takes over) and a
chart: the first SHEET_ROWS seeds' images per cell (one row per seed, so no single image stands for
a cell) over a line plot of each class's share."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from registry import Adapter, Dataset, Registry, new_id, parse_name

from ..errors import UsageError

SWEEP = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho with average ranks for ties; nan when either side is constant."""

    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return r

    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    if sx == 0 or sy == 0:
        return float("nan")
    return sum((a - mx) * (b - my) for a, b in zip(rx, ry)) / (sx * sy)


def rho_text(rho: float) -> str:
    """Spearman's rho for people: `-0.98`, or why there is none."""
    return "undefined (the share is the same at every weight)" if math.isnan(rho) else f"{rho:+.2f}"


def parse_sweep(text: str) -> tuple[str, str]:
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise UsageError(f"--sweep {text!r}: give two adapters as A:B, e.g. --sweep demo/calligraphy:demo/watercolor")
    return parts[0].strip(), parts[1].strip()


STYLE_TAG_SHARE = 0.8  # a tag in at least this share of a dataset's captions is one of its style tags


def style_tags(captions: list[str]) -> set[str]:
    """A dataset's constant tags: the comma-separated parts found in at least STYLE_TAG_SHARE of its
    captions, such as its trigger and its style words ("watercolor painting"); none for fewer than
    two captions."""
    if len(captions) < 2:
        return set()
    counts = Counter(t for c in captions for t in {x.strip() for x in c.split(",") if x.strip()})
    return {t for t, k in counts.items() if k >= STYLE_TAG_SHARE * len(captions)}


SHEET_ROWS = 4  # seeds shown per cell in the chart


def _prompts(a: Adapter, b: Adapter, reg: Registry, n: int) -> list[str]:
    """Both datasets' captions, interleaved, without either dataset's style tags, with both triggers
    where the captions have theirs (in front, or at the end): the content varies, and no word names
    one style more than the other, so only the mix moves the style. (With each caption's own style
    words, half the prompts asked for A's style and half for B's whatever the weights: on the
    built-in world the sweep from calligraphy to watercolor then read calligraphy for 19 % of the
    all-calligraphy images and its Spearman was -0.28; without them, -0.98.) A caption that is all
    style tags keeps its style words."""
    from .run import FALLBACK_PROMPTS, adapter_captions

    lists = [adapter_captions(x, reg) for x in (a, b)]
    drop = style_tags(lists[0]) | style_tags(lists[1]) | {t for t in (a.trigger, b.trigger) if t}
    triggers = list(dict.fromkeys(t for t in (a.trigger, b.trigger) if t))
    last = _triggers_last(lists, triggers)

    def join(kept: list[str]) -> str:
        return ", ".join(kept + triggers if last else triggers + kept)

    out = []
    for i in range(max(len(x) for x in lists)):
        for captions in lists:
            if i < len(captions):
                tags = [t.strip() for t in captions[i].split(",") if t.strip()]
                kept = [t for t in tags if t not in drop] or [t for t in tags if t not in triggers]
                out.append(join(kept))
    out = out or [join([p]) for p in FALLBACK_PROMPTS]
    return [out[i % len(out)] for i in range(n)]


def _triggers_last(lists: list[list[str]], triggers: list[str]) -> bool:
    """Whether the datasets' captions end with their trigger more often than they start with it
    (the built-in world's do; kohya-style captions lead with it): the sweep's prompts put the
    triggers where the adapters learnt them."""
    first = last = 0
    for captions in lists:
        for c in captions:
            tags = [t.strip() for t in c.split(",") if t.strip()]
            if len(tags) > 1:
                first += tags[0] in triggers
                last += tags[-1] in triggers
    return last > first


def probe_sweep(datasets: list[str], a: str, b: str, *, n: int = 8, seed: int = 0, values=SWEEP, steps: int = 20,
                guidance: float = 7.5, clip: str | None = None, registry: Registry | None = None,
                out_dir: str | Path | None = None, warn=None, placement=None, scheduler: str = "ddim") -> dict:
    from ..device import resolve_placement
    from ..generate.engine import Session, check_scheduler
    from ..generate.service import Request, check_out_dir, generate
    from .features import ClipFeatures, resolve_clip
    from .probe import fit_probe, predict
    from .run import dataset_images, output_images

    reg = registry or Registry()
    check_scheduler(scheduler)
    if len(datasets) < 2:
        raise UsageError("the probe needs at least two datasets (one per style) to tell apart")
    if n < 1:
        raise UsageError(f"--n {n}: render at least one image per cell")
    check_out_dir(out_dir)
    adapters = [reg.resolve(Adapter, x) for x in (a, b)]
    if adapters[0].id == adapters[1].id:
        raise UsageError(f"--sweep {a}:{b}: name two different adapters")
    ds = [reg.resolve(Dataset, d) for d in datasets]
    labels = [d.label for d in ds]
    own = []
    for ad in adapters:
        match = [d.label for d in ds if d.id == ad.dataset_id]
        if not match:
            raise UsageError(f"{ad.label} was not trained on any of {', '.join(labels)}; give its dataset too, so "
                             "the probe has its style as a class")
        own.append(match[0])
    from .features import default_clip_for

    ref = resolve_clip(clip, fallback=default_clip_for([(x.base or {}).get("kind") for x in adapters]))
    if ref.note and warn:
        warn(ref.note)
    placement = placement or resolve_placement()
    feats = ClipFeatures.open(ref, placement=placement)
    by_class = {}
    for d in ds:
        _, paths = dataset_images(d.label, reg)
        by_class[d.label] = feats.image_embeddings(paths)
    probe = fit_probe(by_class)
    prompts = _prompts(*adapters, reg, n)
    base = adapters[0].base.get("name") if adapters[0].base.get("kind") == "tiny" else None
    session = Session.open(base, placement)
    native = 64 if session.base.kind == "tiny" else 512
    cells, columns = [], []
    for t in values:
        mix = [(adapters[0].label, round(1 - t, 6), None), (adapters[1].label, round(t, 6), None)]
        outs, tag = [], {"probe_sweep": {"a": adapters[0].label, "b": adapters[1].label, "t": t}}
        for i, prompt in enumerate(prompts):
            req = Request(prompt=prompt, seed=seed + i, n=1, steps=steps, guidance=guidance, width=native,
                          height=native, scheduler=scheduler, adapters=mix, extra=tag)
            outs += generate(req, registry=reg, session=session, out_dir=out_dir, warn=warn)
        images = output_images(outs, reg)
        columns.append(images[:SHEET_ROWS])
        probs = predict(probe, feats.image_embeddings(images))
        top = probs.argmax(1).tolist()
        share = {c: sum(1 for k in top if probe.classes[k] == c) / len(top) for c in probe.classes}
        mean = {c: float(probs[:, j].mean()) for j, c in enumerate(probe.classes)}
        cells.append({"t": t, "weights": {adapters[0].label: 1 - t, adapters[1].label: t},
                      "share": share, "mean_probability": mean, "outputs": [o.id for o in outs]})
    share_a = [c["share"][own[0]] for c in cells]
    rho = spearman([c["t"] for c in cells], share_a)
    chart = _chart([[col[j] for col in columns] for j in range(len(columns[0]))], cells, own, probe.classes, rho,
                   adapters)
    folder = Path(out_dir).expanduser() if out_dir else reg.home / "grids"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"probe-sweep-{new_id()}.png"
    chart.save(path, format="PNG")
    return {"a": adapters[0].label, "b": adapters[1].label, "classes": probe.classes, "a_class": own[0],
            "b_class": own[1], "probe_val_accuracy": probe.val_accuracy, "n": n, "steps": steps,
            "guidance": guidance, "scheduler": scheduler, "cells": cells,
            "spearman_a": rho, "chart": str(path), "clip": ref.name}


def _chart(rows, cells, own, classes, rho, adapters):
    """`rows`: one list of images (a cell each) per seed."""
    from PIL import Image, ImageDraw

    from ..generate.grid import make_grid

    names = [parse_name(x.label).name for x in adapters]
    labels = [f"{names[0]} {1 - c['t']:g} / {names[1]} {c['t']:g}" for c in cells]
    first = rows[0][0]
    cell = max(128, first.width)
    strip = make_grid(rows, col_labels=labels, title="probe sweep: " + " → ".join(x.label for x in adapters),
                      cell_size=(cell, round(cell * first.height / first.width)))
    w, h = strip.width, 220
    plot = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(plot)
    left, right, top, bottom = 60, w - 20, 20, h - 40
    d.rectangle((left, top, right, bottom), outline=(160, 160, 160))
    for k in (0, 0.5, 1):
        y = bottom - k * (bottom - top)
        d.line((left - 4, y, left, y), fill=(80, 80, 80))
        d.text((left - 36, y - 6), f"{k:.1f}", fill=(40, 40, 40))
    colours = [(230, 120, 20), (50, 110, 200), (120, 120, 120), (60, 160, 80), (160, 60, 160)]
    n = len(cells)
    xs = [left + (right - left) * (i + 0.5) / n for i in range(n)]
    order = own + [c for c in classes if c not in own]
    for j, cls in enumerate(order):
        pts = [(x, bottom - c["share"][cls] * (bottom - top)) for x, c in zip(xs, cells)]
        colour = colours[j % len(colours)]
        d.line(pts, fill=colour, width=3 if cls in own else 1)
        for x, y in pts:
            d.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        lx = left + 8 + 150 * j
        d.rectangle((lx, bottom + 16, lx + 8, bottom + 24), fill=colour)
        d.text((lx + 12, bottom + 14), cls, fill=colour)
    d.text((left + 8, top + 4), f"share of images the probe calls each style; Spearman(weight of B, share {own[0]}) = "
           f"{rho_text(rho)}", fill=(40, 40, 40))
    out = Image.new("RGB", (w, strip.height + h), "white")
    out.paste(strip, (0, 0))
    out.paste(plot, (0, strip.height))
    return out
