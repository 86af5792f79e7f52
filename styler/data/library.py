"""Dataset operations behind the CLI: synthesise+import, views, removal, verification."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from registry import Adapter, Dataset, Registry, parse_name
from registry.maintenance import Problem, verify_dataset_files

from ..errors import InputError, UsageError
from .importer import ImportOptions, ImportReport, add_dataset


def synth_dataset(name: str, *, kind: str, n: int = 16, seed: int = 0, size: int = 64, trigger: str = "",
                  val_split: float = 0.0, registry: Registry | None = None) -> ImportReport:
    """Render a synthetic dataset into a temp folder and import it like any user folder."""
    from .synth import synthesize

    parse_name(name, allow_version=False)  # fail on a bad name before rendering anything
    reg = registry or Registry()
    with tempfile.TemporaryDirectory(prefix="styler-synth-") as tmp:
        # a world dataset carries its trigger at the end of each caption; the importer then finds
        # it there and adds none in front
        extra = {"trigger": trigger} if kind.startswith("world-") else {}
        result = synthesize(kind, Path(tmp), n=n, seed=seed, size=size, **extra)
        report = add_dataset(name, tmp, ImportOptions(trigger=trigger, caption_from="txt", val_split=val_split),
                             registry=reg, source_label=f"synth:{kind} n={n} seed={seed} size={size}"
                             + (f" font={Path(result.font_used).name}" if result.font_used else " font=procedural"))
    return report


def dataset_view(text: str, *, samples: int = 8, registry: Registry | None = None) -> dict:
    reg = registry or Registry()
    d = reg.resolve(Dataset, text)
    folder = reg.home / d.path
    try:
        manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"the files of {d.label} are missing or damaged ({exc}); run `styler data verify {d.label}`") from None
    images = manifest["images"]
    step = max(1, len(images) // max(1, samples))
    picked = images[::step][:samples]
    return {
        "dataset": d.to_dict(),
        "folder": str(folder),
        "bytes": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()),
        "dropped": manifest.get("dropped", []),
        "samples": [{"file": i["file"], "source": i["source"], "text": i["text"], "split": i["split"]} for i in picked],
    }


def plan_remove(text: str, *, registry: Registry | None = None) -> list[Dataset]:
    reg = registry or Registry()
    parsed = parse_name(text)
    if parsed.version is None:
        found = reg.versions(Dataset, parsed.full)
        if not found:
            reg.resolve(Dataset, text)  # raises NotFound with the usual message
    else:
        found = [reg.resolve(Dataset, text)]
    ids = {d.id for d in found}
    users = [a for a in reg.all(Adapter) if a.dataset_id in ids]
    if users:
        names = ", ".join(a.label for a in users[:3]) + (f" and {len(users) - 3} more" if len(users) > 3 else "")
        kind = "adapter" if len(users) == 1 else "adapters"
        raise UsageError(f"{kind} {names} {'was' if len(users) == 1 else 'were'} trained on it; remove "
                         f"{'that adapter' if len(users) == 1 else 'those adapters'} first (styler adapters rm NAME)")
    return found


def remove_datasets(plan: list[Dataset], *, registry: Registry | None = None) -> None:
    """Records first, then folders: a crash in between leaves only an orphan folder for prune."""
    reg = registry or Registry()
    with reg.locked():
        for d in plan:
            reg.remove(Dataset, d.id)
    from .importer import _remove_empty_parents

    for d in plan:
        folder = reg.home / d.path
        shutil.rmtree(folder, ignore_errors=True)
        _remove_empty_parents(folder.parent, reg.home / "datasets")


def verify_datasets(text: str | None = None, *, registry: Registry | None = None) -> tuple[list[str], list[Problem]]:
    reg = registry or Registry()
    records = [reg.resolve(Dataset, text)] if text else reg.all(Dataset)
    problems = [p for d in records for p in verify_dataset_files(reg.home, d)]
    return [d.label for d in records], problems
