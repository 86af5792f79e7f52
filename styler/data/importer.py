"""`styler data add`: validate every file, preprocess, and commit a new dataset version — all or
nothing. Work happens in `datasets/.tmp-<id>/`; one rename plus one record commit it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from registry import Dataset, Registry, new_id, parse_name, sha256_file

from ..errors import InputError, UsageError, WriteError
from . import captions as cap
from .images import IMAGE_EXTS, BadImage, fit_within, laplacian_variance, load_image, prepare

CROPS = ("center", "none")
MAX_LISTED = 5


@dataclass(frozen=True)
class ImportOptions:
    prefix: str = ""
    trigger: str = ""
    caption_from: str = "auto"
    template: str = ""
    min_sharpness: float | None = None
    size: int | None = None
    crop: str = "center"
    val_split: float = 0.0
    strict: bool = False
    buckets: bool = False  # keep whole pictures for `train --buckets`: --size bounds their area, no crop


@dataclass
class ImportReport:
    record: Dataset
    dropped: list[dict] = field(default_factory=list)  # {"file", "reason"}
    missing_captions: list[str] = field(default_factory=list)
    orphan_captions: list[str] = field(default_factory=list)
    same_as: str | None = None  # an earlier version with identical content

    def warnings(self) -> list[str]:
        out = []
        bad = [d for d in self.dropped if not d["reason"].startswith("blurry")]
        blurry = [d for d in self.dropped if d["reason"].startswith("blurry")]
        if bad:
            out.append(f"skipped {len(bad)} file(s): " + _listing(f"{d['file']} ({d['reason']})" for d in bad))
        if blurry:
            out.append(f"dropped {len(blurry)} blurry image(s) below --min-sharpness: " + _listing(d["file"] for d in blurry))
        if self.missing_captions:
            out.append(f"{len(self.missing_captions)} image(s) have no caption (trained with prefix/trigger only): " + _listing(self.missing_captions))
        if self.orphan_captions:
            out.append(f"{len(self.orphan_captions)} caption(s) name images that are not there: " + _listing(self.orphan_captions))
        if self.same_as:
            out.append(f"the content is identical to {self.same_as}")
        stats, options = self.record.stats or {}, self.record.options or {}
        size = options.get("size")
        if stats.get("upscaled"):
            out.append(f"{stats['upscaled']} image(s) were smaller than --size {size} and were upscaled (blurrier "
                       "training data); use a smaller --size, or leave --size out to keep the images as they are")
        if stats.get("cropped"):
            out.append(f"{stats['cropped']} non-square image(s) were center-cropped to {size}x{size}, losing their "
                       "edges; --crop none keeps the whole picture (longer side = --size), and --buckets keeps it for "
                       "`styler train --buckets`")
        return out


def _listing(items) -> str:
    items = list(items)
    shown = "; ".join(items[:MAX_LISTED])
    return shown + (f"; … and {len(items) - MAX_LISTED} more (see manifest.json)" if len(items) > MAX_LISTED else "")


def _validate_options(o: ImportOptions) -> None:
    if o.crop not in CROPS:
        raise UsageError(f"unknown --crop {o.crop!r}; use center or none")
    if o.size is not None and (o.size < 8 or o.size % 8):
        raise UsageError(f"--size {o.size} must be a multiple of 8 and at least 8 (e.g. 512)")
    if not 0.0 <= o.val_split < 1.0:
        raise UsageError(f"--val-split {o.val_split} must be in [0, 1) (e.g. 0.1)")
    if o.min_sharpness is not None and o.min_sharpness < 0:
        raise UsageError("--min-sharpness must be >= 0 (e.g. 100)")
    if o.caption_from not in cap.SOURCES:
        raise UsageError(f"unknown --caption-from {o.caption_from!r}; use one of {', '.join(cap.SOURCES)}")


def _scan(src: Path) -> tuple[list[str], set[str]]:
    files: set[str] = set()
    for root, dirs, names in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in names:
            if not n.startswith("."):
                files.add((Path(root) / n).relative_to(src).as_posix())
    images = sorted(f for f in files if f.lower().endswith(IMAGE_EXTS))
    return images, files


def add_dataset(
    name: str,
    src: str | os.PathLike,
    options: ImportOptions = ImportOptions(),
    *,
    registry: Registry | None = None,
    progress: Callable[[int, int], None] | None = None,
    source_label: str | None = None,
) -> ImportReport:
    """Import SRC as the next version of dataset NAME and register it."""
    parsed = parse_name(name, allow_version=False)
    _validate_options(options)
    src = Path(src).expanduser()
    if not src.exists():
        raise InputError(f"{src} does not exist; give a folder of images")
    if not src.is_dir():
        raise InputError(f"{src} is not a folder; give a folder of images (with captions beside them)")
    images, files = _scan(src)
    if not files:
        raise InputError(f"{src} is empty; put images (and captions) in it")
    if not images:
        others = _listing(sorted(files))
        raise InputError(f"no images in {src} (looked for {', '.join(IMAGE_EXTS)}); found only: {others}")

    captions = cap.collect(src, images, files, options.caption_from, options.template)
    reg = registry or Registry()
    home = reg.home
    reg.versions(Dataset, parsed.full)  # a damaged registry fails here, before any work

    # 1. validate and write, one image at a time, into a temp folder
    droot = home / "datasets"
    tmp = droot / f".tmp-{new_id()}"
    dropped: list[dict] = []
    missing: list[str] = []
    entries: list[dict] = []
    with staging(tmp, droot):
        (tmp / "images").mkdir(parents=True)
        seen_pixels: dict[str, str] = {}
        for i, rel in enumerate(images):
            if progress:
                progress(i, len(images))
            if rel in captions.problems:
                dropped.append({"file": rel, "reason": captions.problems[rel]})
                continue
            try:
                loaded = load_image(src / rel)
            except BadImage as exc:
                dropped.append({"file": rel, "reason": str(exc)})
                continue
            pixel_hash = hashlib.sha256(f"{loaded.width}x{loaded.height}".encode() + loaded.image.tobytes()).hexdigest()
            if pixel_hash in seen_pixels:
                dropped.append({"file": rel, "reason": f"duplicate of {seen_pixels[pixel_hash]}"})
                continue
            seen_pixels[pixel_hash] = rel
            sharpness = laplacian_variance(loaded.image)
            if options.min_sharpness is not None and sharpness < options.min_sharpness:
                dropped.append({"file": rel, "reason": f"blurry: sharpness {sharpness:.1f} < {options.min_sharpness:g}"})
                continue
            text = captions.by_image.get(rel)
            if text is None and captions.source not in ("filename", "template"):
                missing.append(rel)
            stem = rel.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            caption = cap.compose(text or "", prefix=options.prefix, trigger=options.trigger, stem=stem)
            entries.append(_write_image(tmp, len(entries) + 1, src / rel, rel, loaded, caption, sharpness, options))
        if progress:
            progress(len(images), len(images))

        if options.strict:
            problems = [f"{d['file']} ({d['reason']})" for d in dropped if not d["reason"].startswith("blurry")]
            problems += [f"{m} (no caption)" for m in missing]
            problems += [f"{o} (caption without image)" for o in captions.orphans]
            if problems:
                raise InputError(f"--strict: {len(problems)} problem(s) in {src}: {_listing(problems)}; fix them or drop --strict")
        if not entries:
            reasons = _listing(f"{d['file']} ({d['reason']})" for d in dropped)
            raise InputError(f"no usable images in {src}: all {len(images)} were dropped: {reasons}")

        _assign_splits(entries, options.val_split)
        content_hash = entries_hash(entries)
        write_captions(tmp, entries)
        stats = stats_of(entries)
        manifest = {
            "name": parsed.full,
            "source": source_label or str(src.resolve()),
            "content_hash": content_hash,
            "options": asdict(options),
            "caption_from": captions.source,
            "counts": {"found": len(images), "kept": len(entries), "dropped": len(dropped),
                       "train": sum(e["split"] == "train" for e in entries), "val": sum(e["split"] == "val" for e in entries)},
            "images": entries,
            "dropped": dropped,
            "missing_captions": missing,
            "orphan_captions": captions.orphans,
            "stats": stats,
        }
        with open(tmp / "manifest.json", "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, ensure_ascii=False, indent=1)

    # 3. commit: version, rename, record — under the registry lock
    def build(version: int, dest: Path) -> Dataset:
        return Dataset(
            name=parsed.full, version=version, path=dest.relative_to(home).as_posix(),
            content_hash=content_hash, n_images=len(entries),
            n_train=manifest["counts"]["train"], n_val=manifest["counts"]["val"], n_dropped=len(dropped),
            source=manifest["source"], caption_from=captions.source, prefix=options.prefix,
            trigger=options.trigger, options=asdict(options), stats=stats,
        )

    record, same_as = commit_version(reg, parsed.full, tmp, build)
    return ImportReport(record, dropped, missing, captions.orphans, same_as)


@contextmanager
def staging(tmp: Path, droot: Path):
    """Around writing a new version's files into `tmp`: any failure removes the folder, and a disk
    error becomes a WriteError saying nothing was registered."""
    try:
        yield
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteError(f"could not write the dataset under {droot} ({exc.strerror or exc}); nothing was registered") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def commit_version(reg: Registry, name: str, tmp: Path, build: Callable[[int, Path], Dataset]) -> tuple[Dataset, str | None]:
    """Move a finished temp folder into place as the next version of NAME and register it, under the
    registry lock: one rename and one record. `build(version, dest)` makes the record. Returns the
    record and an earlier version with the same content hash, if any. On failure nothing stays."""
    parsed = parse_name(name, allow_version=False)
    droot = reg.home / "datasets"
    same_as = None
    try:
        with reg.locked():
            earlier = reg.versions(Dataset, parsed.full)
            version = max((d.version for d in earlier), default=0) + 1
            dest = droot.joinpath(*parsed.parts, str(version))
            if dest.exists():  # left by a crash between rename and record: prune would remove it
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
            try:
                record = build(version, dest)
                same_as = next((d.label for d in reversed(earlier) if d.content_hash == record.content_hash), None)
                reg.insert(record)
            except BaseException:
                shutil.rmtree(dest, ignore_errors=True)
                _remove_empty_parents(dest.parent, droot)
                raise
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteError(f"could not commit the dataset ({exc.strerror or exc}); nothing was registered") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record, same_as


def entries_hash(entries: list[dict]) -> str:
    """A version's content hash: its images, captions and splits, in order."""
    return hashlib.sha256(
        json.dumps([[e["sha256"], e["text"], e["split"]] for e in entries], ensure_ascii=False).encode()
    ).hexdigest()


def write_captions(folder: Path, entries: list[dict]) -> None:
    """captions.jsonl, what training reads: one {file, text, split} per image."""
    with open(folder / "captions.jsonl", "w", encoding="utf-8") as fh:
        for e in entries:
            fh.write(json.dumps({"file": e["file"], "text": e["text"], "split": e["split"]}, ensure_ascii=False) + "\n")


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def save_image(image, path: Path) -> None:
    """Save a processed image as PNG (also the seam tests use to simulate a failing disk)."""
    image.save(path, format="PNG")


def _write_image(tmp: Path, index: int, path: Path, rel: str, loaded, caption: str, sharpness: float, o: ImportOptions) -> dict:
    within = o.buckets and (not o.size or loaded.width * loaded.height <= o.size * o.size)
    if (not o.size or within) and loaded.unchanged and loaded.format in _KEEP_FORMATS:
        # untouched pixels: keep the user's own bytes (no second lossy encode)
        fname = f"{index:05d}{_KEEP_FORMATS[loaded.format]}"
        shutil.copyfile(path, tmp / "images" / fname)
        w, h = loaded.width, loaded.height
    else:
        fname = f"{index:05d}.png"
        im = fit_within(loaded.image, o.size) if o.buckets else prepare(loaded.image, o.size, o.crop)
        save_image(im, tmp / "images" / fname)
        w, h = im.size
    return {
        "file": fname, "sha256": sha256_file(tmp / "images" / fname), "source": rel, "text": caption,
        "width": w, "height": h, "orig_width": loaded.width, "orig_height": loaded.height,
        "sharpness": round(sharpness, 2), "split": "train",
    }


_KEEP_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}


def _assign_splits(entries: list[dict], val_split: float) -> None:
    """A deterministic held-out split: the images whose content hashes sort first."""
    if val_split <= 0 or len(entries) < 2:
        return
    n_val = min(len(entries) - 1, max(1, round(len(entries) * val_split)))
    for e in sorted(entries, key=lambda e: e["sha256"])[:n_val]:
        e["split"] = "val"


def stats_of(entries: list[dict]) -> dict:
    def summary(values):
        values = sorted(values)
        return {"min": values[0], "median": values[len(values) // 2], "max": values[-1]}

    lengths = [len(e["text"]) for e in entries]
    return {
        "width": summary([e["width"] for e in entries]),
        "height": summary([e["height"] for e in entries]),
        "orig_width": summary([e["orig_width"] for e in entries]),
        "orig_height": summary([e["orig_height"] for e in entries]),
        "sharpness": summary([e["sharpness"] for e in entries]),
        "caption_chars": summary(lengths),
        "empty_captions": sum(1 for n in lengths if n == 0),
        "upscaled": sum(1 for e in entries if e["width"] > e["orig_width"] or e["height"] > e["orig_height"]),
        # aspect ratio changed: a square crop of a non-square image
        "cropped": sum(1 for e in entries
                       if abs(e["width"] * e["orig_height"] - e["height"] * e["orig_width"]) > max(e["orig_width"], e["orig_height"])),
    }
