"""Editing a dataset version's captions — set one, replace text in all, add or remove a leading tag —
and saving the result as the next version of the dataset; the version it came from is never
changed. `styler data captions`, `styler data caption` and the dashboard's caption editor all go
through `CaptionDraft` and `save_draft`."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from registry import Dataset, Registry, new_id

from ..errors import InputError, UsageError
from .captions import mentions


def clean(text: str) -> str:
    """A caption on one line, single-spaced (as `data add` stores them)."""
    return " ".join(str(text).split())


def leading_tag_len(text: str, tag: str) -> int:
    """How many characters of `text` the leading tag `tag` and its separator take (0: not there).
    A tag leads when the caption is the tag or starts with it followed by a comma or a space."""
    if not tag or not text.startswith(tag):
        return 0
    rest = text[len(tag):]
    if rest and rest[0] not in ", ":
        return 0  # "inkwell" does not start with the tag "ink"
    return len(text) - len(rest.lstrip(", "))


class CaptionDraft:
    """The captions of one dataset version, being edited; `texts[i]` belongs to `entries[i]`."""

    def __init__(self, dataset: Dataset, manifest: dict):
        self.dataset = dataset
        self.manifest = manifest
        self.entries: list[dict] = manifest["images"]
        self.original: list[str] = [e["text"] for e in self.entries]
        self.texts: list[str] = list(self.original)
        self.done: list[str] = []  # what was done, for the saved version's note

    def __len__(self) -> int:
        return len(self.entries)

    def label(self, i: int) -> str:
        """The image as the user knows it: its path in the imported folder."""
        return self.entries[i].get("source") or self.entries[i]["file"]

    def index_of(self, name: str) -> int:
        """An image by its stored file name (00001.png) or the path it was imported from."""
        for i, e in enumerate(self.entries):
            if name in (e["file"], e.get("source")):
                return i
        shown = ", ".join(self.label(i) for i in range(min(3, len(self))))
        raise UsageError(f"{self.dataset.label} has no image {name!r}; name one by its imported path or stored "
                         f"file (e.g. {shown}; see `styler data captions {self.dataset.label}`)")

    @property
    def changed(self) -> list[int]:
        return [i for i, (a, b) in enumerate(zip(self.original, self.texts)) if a != b]

    # -- edits: each returns how many captions it changed -----------------------------------------
    def set(self, i: int, text: str) -> int:
        text = clean(text)
        if text == self.texts[i]:
            return 0
        self.texts[i] = text
        self.done.append(f"edited {self.label(i)}")
        return 1

    def revert(self, i: int) -> int:
        if self.texts[i] == self.original[i]:
            return 0
        self.texts[i] = self.original[i]
        return 1

    def replace(self, old: str, new: str) -> int:
        """Replace every occurrence of `old` (case-sensitive text, not a pattern) in every caption."""
        if not old:
            raise UsageError("replace: the text to find is empty; give it as FIND=REPLACEMENT (e.g. 'a cat=a fox')")
        n = 0
        for i, text in enumerate(self.texts):
            if old in text:
                self.texts[i] = clean(text.replace(old, new))
                n += 1
        self.done.append(f"replaced {old!r} with {new!r} in {n}")
        return n

    def add_tag(self, tag: str) -> int:
        """Put `tag, ` in front of every caption that does not already start with it."""
        tag = _check_tag(tag)
        n = 0
        for i, text in enumerate(self.texts):
            if not leading_tag_len(text, tag):
                self.texts[i] = f"{tag}, {text}" if text else tag
                n += 1
        self.done.append(f"added leading tag {tag!r} to {n}")
        return n

    def remove_tag(self, tag: str) -> int:
        """Take the leading tag `tag` (and its comma) off every caption that starts with it."""
        tag = _check_tag(tag)
        n = 0
        for i, text in enumerate(self.texts):
            cut = leading_tag_len(text, tag)
            if cut:
                self.texts[i] = text[cut:]
                n += 1
        self.done.append(f"removed leading tag {tag!r} from {n}")
        return n

    def summary(self) -> str:
        edited = sum(1 for d in self.done if d.startswith("edited "))
        rest = [d for d in self.done if not d.startswith("edited ")]
        return "; ".join(rest + ([f"edited {edited} by hand"] if edited else [])) or "no edits"


def _check_tag(tag: str) -> str:
    tag = clean(tag).strip(", ")
    if not tag:
        raise UsageError("the leading tag is empty; give a word or phrase, e.g. 'anistyle'")
    return tag


def open_draft(text: str, *, registry: Registry | None = None) -> CaptionDraft:
    """The captions of dataset version NAME[@V] (the latest by default), ready to edit."""
    reg = registry or Registry()
    d = reg.resolve(Dataset, text)
    return CaptionDraft(d, read_manifest(reg, d))


def read_manifest(reg: Registry, d: Dataset) -> dict:
    path = reg.home / d.path / "manifest.json"
    try:
        manifest = json.loads(path.read_text("utf-8"))
        if not isinstance(manifest.get("images"), list):
            raise ValueError("it lists no images")
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"the files of {d.label} are missing or damaged ({path}: {exc}); "
                         f"run `styler data verify {d.label}`") from None
    return manifest


@dataclass(frozen=True)
class SavedVersion:
    record: Dataset
    source: Dataset
    changed: int
    same_as: str | None = None  # an earlier version with identical content


def save_draft(draft: CaptionDraft, *, caption_from: str = "edited", prefix: str | None = None,
               trigger: str | None = None, note: str = "", allow_unchanged: bool = False,
               registry: Registry | None = None) -> SavedVersion:
    """Write the draft as the next version of its dataset: the same images (hard links where the
    file system allows, else copies) with the new captions; one rename and one record commit it."""
    from .importer import commit_version, entries_hash, staging, stats_of, write_captions

    changed = len(draft.changed)
    if not changed and not allow_unchanged:
        raise UsageError(f"no caption of {draft.dataset.label} changed; nothing to save")
    reg = registry or Registry()
    src = reg.get(Dataset, draft.dataset.id)  # still registered? (it may have been removed meanwhile)
    src_folder = reg.home / src.path
    droot = reg.home / "datasets"
    tmp = droot / f".tmp-{new_id()}"
    # the record's trigger and prefix say what every caption has: kept only while every caption has it
    if prefix is None:
        prefix = src.prefix if all(src.prefix in t for t in draft.texts) else ""
    if trigger is None:
        trigger = src.trigger if all(mentions(t, src.trigger) for t in draft.texts) else ""
    entries = [{**e, "text": t} for e, t in zip(draft.entries, draft.texts)]
    still_missing = set(draft.manifest.get("missing_captions", []))
    still_missing &= {e.get("source") for e, old, new in zip(draft.entries, draft.original, draft.texts) if old == new}
    how = note or draft.summary()
    options = {**(draft.manifest.get("options") or src.options), "prefix": prefix, "trigger": trigger,
               "derived_from": {"id": src.id, "label": src.label, "how": how}}
    manifest = {**draft.manifest, "name": src.name, "content_hash": entries_hash(entries), "options": options,
                "caption_from": caption_from, "images": entries,
                "missing_captions": [m for m in draft.manifest.get("missing_captions", []) if m in still_missing],
                "stats": stats_of(entries)}
    with staging(tmp, droot):
        (tmp / "images").mkdir(parents=True)
        for e in entries:
            original = src_folder / "images" / e["file"]
            if not original.is_file():
                raise InputError(f"{original} of {src.label} is missing; run `styler data verify {src.label}`; "
                                 "nothing was written")
            _link_or_copy(original, tmp / "images" / e["file"])
        write_captions(tmp, entries)
        with open(tmp / "manifest.json", "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, ensure_ascii=False, indent=1)

    def build(version: int, dest: Path) -> Dataset:
        return Dataset(name=src.name, version=version, path=dest.relative_to(reg.home).as_posix(),
                       content_hash=manifest["content_hash"], n_images=src.n_images, n_train=src.n_train,
                       n_val=src.n_val, n_dropped=src.n_dropped, source=src.source, caption_from=caption_from,
                       prefix=prefix, trigger=trigger, options=options, stats=manifest["stats"])

    record, same_as = commit_version(reg, src.name, tmp, build)
    return SavedVersion(record, src, changed, same_as)


def _link_or_copy(src: Path, dest: Path) -> None:
    """Images are written once and never edited, so versions may share them."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
