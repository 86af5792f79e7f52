"""A run's validation images as one contact sheet: a row per validation prompt, a column per step,
at `runs/<id>/samples/sheet.png`. Training rewrites it (atomically) after each validation;
`styler runs samples RUN` builds it again for any run from the images in the registry."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import PngImagePlugin

from registry import BlobStore, NotFound, Output, Registry, Run

from ..errors import InputError, UsageError

SHEET_NAME = "sheet.png"
SHEET_KEY = "styler.sheet"  # PNG text chunk: which prompts and steps the sheet shows
MAX_COLUMNS = 16  # more steps than this: evenly spaced ones, the first and the latest always among them
MAX_CELL = 256  # cells are thumbnails: a 512 px run's sheet of 16 steps stays ~4k px wide


@dataclass(frozen=True)
class SampleSheet:
    path: Path
    prompts: list[str]  # the rows, in the run's validation-prompt order
    steps: list[int]  # the columns shown
    all_steps: list[int]  # every step with validation images (steps is a subset when it had to be cut)


def sheet_path(home: Path, run_id: str) -> Path:
    return Path(home) / "runs" / run_id / "samples" / SHEET_NAME


def find_run(reg: Registry, ref: str) -> Run:
    """A run by its id or a unique end of it (the dashboard shows the last 8 characters)."""
    ref = ref.strip().upper()
    try:
        return reg.get(Run, ref)
    except NotFound:
        pass
    hits = [r for r in reg.all(Run) if len(ref) >= 4 and r.id.endswith(ref)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise UsageError(f"run {ref!r} matches {len(hits)} runs ({', '.join(h.id for h in hits[:3])}…); give more of its id")
    raise NotFound(f"no run with id {ref!r}; list runs with `styler registry ls runs`")


def pick_columns(steps: list[int], limit: int) -> list[int]:
    """At most `limit` of `steps` (0: all), evenly spaced, keeping the first and the last."""
    if not limit or len(steps) <= limit:
        return list(steps)
    if limit == 1:
        return [steps[-1]]
    picked = {steps[round(i * (len(steps) - 1) / (limit - 1))] for i in range(limit)}
    return sorted(picked)


def _cell_size(image) -> tuple[int, int]:
    """At least 128 px (labels fit under small images), at most MAX_CELL, aspect kept."""
    side = min(image.size)
    scale = max(128 / side, 1.0) if side < 128 else min(1.0, MAX_CELL / max(image.size))
    return max(1, round(image.width * scale)), max(1, round(image.height * scale))


def build_sample_sheet(reg: Registry, run: Run, *, upto: int | None = None,
                       max_columns: int = MAX_COLUMNS) -> SampleSheet:
    """Draw the sheet of `run`'s validation images (those of steps <= `upto` when given: a resumed
    run's images from the attempt that stopped are not its own past that point) and write it in one
    rename. A prompt/step rendered twice (a resumed run) shows its newest image."""
    from ..files import atomic_write
    from ..generate.grid import make_grid

    outs = [o for o in reg.find(Output, run_id=run.id) if o.kind == "validation" and o.blob]
    outs = [o for o in outs if upto is None or _step(o) <= upto]
    if not outs:
        raise InputError(f"run {run.id} has no validation images; train with --validate-every N "
                         f"(and --validation-prompt TEXT, or the dataset's captions are used)")
    newest: dict[tuple, Output] = {}
    for o in sorted(outs, key=lambda o: o.id):  # ULIDs sort by time: later ones win
        newest[(_row(o), _step(o))] = o
    rows = sorted({key for key, _ in newest}, key=lambda r: (r[1] is None, r[1] or 0, r[0]))
    all_steps = sorted({step for _, step in newest})
    steps = pick_columns(all_steps, max_columns)
    blobs = BlobStore(reg.home)
    images = []
    for row in rows:
        line = []
        for step in steps:
            o = newest.get((row, step))
            line.append(_open(blobs, o.blob) if o is not None else None)
        images.append(line)
    first = next((im for line in images for im in line if im is not None), None)
    if first is None:
        raise InputError(f"run {run.id}: none of its validation images can be read (damaged blobs?); "
                         f"run `styler registry verify`")
    prompts = [prompt for prompt, _ in rows]
    sheet = make_grid(images, row_labels=prompts, col_labels=[f"step {s}" for s in steps],
                      title=f"run {run.id}", x_name="step", y_name="prompt", cell_size=_cell_size(first))
    path = sheet_path(reg.home, run.id)
    info = PngImagePlugin.PngInfo()
    info.add_itxt(SHEET_KEY, json.dumps({"run_id": run.id, "prompts": prompts, "steps": steps,
                                         "all_steps": all_steps}, ensure_ascii=False))
    atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG", pnginfo=info),
                 error=f"cannot write the sample sheet {path}")
    return SampleSheet(path, prompts, steps, all_steps)


def read_sheet_info(path: Path) -> dict | None:
    """What a sheet says it shows ({run_id, prompts, steps, all_steps}), or None for no readable sheet."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return json.loads(im.text.get(SHEET_KEY, "null")) or None
    except (OSError, ValueError, AttributeError):
        return None


def _step(o: Output) -> int:
    return int((o.params or {}).get("train_step") or 0)


def _row(o: Output) -> tuple[str, int | None]:
    """A row is a prompt with its seed: validation prompt k is rendered with seed VALIDATION_SEED + k,
    so the seed keeps the run's prompt order (and two equal prompts apart)."""
    return o.prompt, o.seed


def _open(blobs: BlobStore, digest: str):
    from PIL import Image

    try:
        with Image.open(blobs.path(digest)) as im:
            return im.convert("RGB")
    except Exception:  # noqa: BLE001 - a missing or damaged blob is a grey cell, not a failed sheet
        return None
