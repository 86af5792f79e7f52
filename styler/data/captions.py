"""Where captions come from: sidecar .txt/.caption files, metadata.jsonl, a CSV, file names, or a
template; and how prefix and trigger word are put in front."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, UsageError

SOURCES = ("auto", "txt", "caption", "jsonl", "csv", "filename", "template")
JSONL_NAMES = ("metadata.jsonl", "captions.jsonl")
CSV_NAMES = ("metadata.csv", "captions.csv")
# column/key names people use for the file and the text (HF imagefolder, kohya, misc tools)
FILE_KEYS = ("file_name", "file", "image", "filename", "path")
TEXT_KEYS = ("text", "caption", "prompt", "tags")


@dataclass
class CaptionSet:
    """Captions keyed by image path relative to SRC (posix form)."""

    source: str
    by_image: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # image rel path -> why its caption is unusable
    orphans: list[str] = field(default_factory=list)  # captions naming images that do not exist


def read_utf8(path: Path, shown: str) -> str:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{shown} is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            f"re-save it as UTF-8 (e.g. `iconv -f GB18030 -t UTF-8`)"
        ) from None
    return text


def _clean(text: str) -> str:
    return " ".join(text.split())


def detect_source(src: Path, rel_images: list[str], all_files: set[str]) -> str:
    stems = {r.rsplit(".", 1)[0] for r in rel_images}
    if any(f"{s}.txt" in all_files for s in stems):
        return "txt"
    if any(f"{s}.caption" in all_files for s in stems):
        return "caption"
    if any((src / n).is_file() for n in JSONL_NAMES):
        return "jsonl"
    if any((src / n).is_file() for n in CSV_NAMES):
        return "csv"
    return "filename"


def _pick(keys, row: dict, what: str, where: str) -> str:
    for k in keys:
        if k in row and row[k] is not None:
            return str(row[k])
    raise InputError(f"{where}: no {what} column/key (expected one of {', '.join(keys)})")


def _from_table(src: Path, names: tuple[str, ...], fmt: str, images: set[str]) -> CaptionSet:
    path = next((src / n for n in names if (src / n).is_file()), None)
    if path is None:
        raise UsageError(f"--caption-from {fmt}: no {' or '.join(names)} in {src}")
    text = read_utf8(path, str(path))
    cs = CaptionSet(fmt)
    if fmt == "jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path} line {n} is not valid JSON ({exc.msg}); fix that line") from None
            if not isinstance(row, dict):
                raise InputError(f"{path} line {n} is not a JSON object")
            rows.append((f"line {n}", row))
    else:
        reader = csv.DictReader(io.StringIO(text))
        rows = [(f"row {n}", row) for n, row in enumerate(reader, 2)]
    for where, row in rows:
        rel = _pick(FILE_KEYS, row, "file name", f"{path} {where}").replace("\\", "/").lstrip("./")
        caption = _clean(_pick(TEXT_KEYS, row, "caption text", f"{path} {where}"))
        if rel in images:
            cs.by_image[rel] = caption
        else:
            cs.orphans.append(f"{path.name}: {rel}")
    return cs


def collect(src: Path, rel_images: list[str], all_files: set[str], how: str, template: str = "") -> CaptionSet:
    """Read captions for the images with the given method (`auto` detects)."""
    if how not in SOURCES:
        raise UsageError(f"unknown caption source {how!r}; use one of {', '.join(SOURCES)}")
    if how == "auto":
        how = detect_source(src, rel_images, all_files)
    images = set(rel_images)
    if how in ("txt", "caption"):
        cs = CaptionSet(how)
        stems = {r.rsplit(".", 1)[0]: r for r in rel_images}
        for f in sorted(all_files):
            if not f.endswith("." + how) or f.rsplit("/", 1)[-1] in JSONL_NAMES + CSV_NAMES:
                continue
            stem = f.rsplit(".", 1)[0]
            if stem not in stems:
                cs.orphans.append(f)
                continue
            try:
                cs.by_image[stems[stem]] = _clean(read_utf8(src / f, f))
            except InputError as exc:
                cs.problems[stems[stem]] = exc.message
        return cs
    if how == "jsonl":
        return _from_table(src, JSONL_NAMES, "jsonl", images)
    if how == "csv":
        return _from_table(src, CSV_NAMES, "csv", images)
    if how == "filename":
        cs = CaptionSet("filename")
        for r in rel_images:
            stem = r.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            cs.by_image[r] = _clean(stem.replace("_", " ").replace("-", " "))
        return cs
    # template: the same caption for every image, with {name} and {trigger} filled in later
    if not template:
        raise UsageError("--caption-from template needs --template TEXT (e.g. 'an image in {trigger} style')")
    return CaptionSet("template", {r: template for r in rel_images})


def mentions(text: str, word: str) -> bool:
    """Whether `word` is in `text` as a word of its own: not inside a longer Latin word ("pix" is not
    in "pixel art"); next to CJK characters it counts ("米芾" is in "米芾书法", which has no spaces)."""
    return bool(word) and re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", text) is not None


def compose(caption: str, *, prefix: str = "", trigger: str = "", stem: str = "") -> str:
    """trigger, then prefix, then the caption: `mifu, 书法 永`. Template fields are filled here."""
    caption = caption.replace("{trigger}", trigger).replace("{name}", stem)
    body = " ".join(p for p in (prefix.strip(), caption.strip()) if p)
    if trigger and not mentions(body, trigger):
        return f"{trigger}, {body}" if body else trigger
    return body
