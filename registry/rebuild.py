"""`styler registry rebuild`: restore dataset and adapter records from the files on disk.

Only tables that are damaged (an unreadable or empty file) or missing are rebuilt; a healthy table,
and the healthy segments of a partly damaged one, are never rewritten. A damaged file is moved
aside (`<file>.bad`), never deleted. Sources:

- datasets: each `datasets/<name>/<N>/manifest.json` (written by the importer before the folder is
  committed) gives the record; its id comes from an adapter's provenance when one was trained on it.
- adapters: each blob that is a safetensors file with styler's provenance (`styler.adapter`,
  `styler.method`, `styler.base`, … in its metadata). The header is read by registry.headers: no
  torch here. The id comes from a run (`adapter_id`) or an output that names the adapter.

Other tables cannot be rebuilt from files; `empty=(table, …)` starts such a table empty (its damaged
file is kept aside), which the caller asks for explicitly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .blobs import BlobStore
from .errors import InvalidName, RegistryCorrupt, RegistryError
from .headers import BadSafetensors, read_safetensors_header
from .ids import id_at, iso_at
from .maintenance import Problem, table_problems
from .names import parse_name
from .records import Adapter, Dataset, Output, Record, Run
from .storage import REBUILDABLE, table_of, write_json_atomic
from .store import Registry


def safetensors_header(path: Path) -> dict | None:
    """The checked header of a safetensors file (registry.headers), or None when the file is not one."""
    try:
        return read_safetensors_header(path)
    except BadSafetensors:
        return None


def _json(text, default):
    try:
        value = json.loads(text) if isinstance(text, str) else default
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default


@dataclass
class RebuildPlan:
    problems: list[Problem] = field(default_factory=list)  # what is damaged or missing
    move_aside: list[tuple[str, str]] = field(default_factory=list)  # damaged file -> where it goes
    records: dict[str, list[Record]] = field(default_factory=lambda: {t: [] for t in REBUILDABLE})
    emptied: list[str] = field(default_factory=list)  # tables started empty (asked for)
    left: list[Problem] = field(default_factory=list)  # damaged tables rebuild cannot restore
    notes: list[str] = field(default_factory=list)  # files that could not be used, and why

    @property
    def empty(self) -> bool:
        return not (self.move_aside or any(self.records.values()) or self.emptied)


def _readable_docs(reg: Registry, table: str) -> list[dict]:
    """The records of the readable segments of a table (damaged ones skipped)."""
    docs = []
    for path in reg.segments(table):
        try:
            docs.extend(reg._docs(path, table))
        except RegistryCorrupt:
            continue
    return docs


def _aside(path: Path, taken: set[str]) -> Path:
    target = path.with_name(path.name + ".bad")
    n = 2
    while target.exists() or str(target) in taken:
        target = path.with_name(f"{path.name}.bad{n}")
        n += 1
    return target


def _adapter_blobs(home: Path) -> list[tuple[str, Path, dict, dict]]:
    """(digest, path, metadata, header) of every blob that is an adapter written by styler."""
    found = []
    for digest, path in BlobStore(home).iter_blobs():
        header = safetensors_header(path)
        if header is None:
            continue
        meta = header.get("__metadata__")
        if not isinstance(meta, dict) or "styler.adapter" not in meta:
            continue
        found.append((digest, path, meta, header))
    return found


def _lora_shape(header: dict, meta: dict) -> tuple[int | None, float | None, list[str]]:
    """(rank, alpha, targets) as styler records them, from the metadata and the tensor names."""
    modules: dict[str, tuple[str, int]] = {}
    for key, info in header.items():
        if key == "__metadata__" or not isinstance(info, dict):
            continue
        for suffix in (".lora_A.weight", ".lora_down.weight", ".lora.down.weight", ".lora_linear_layer.down.weight",
                       ".hada_w1_b", ".lokr_w2_b", ".lokr_w1_b"):  # LoHa / LoKr: rank = that factor's rows
            if key.endswith(suffix):
                shape = info.get("shape") or [0]
                stem = key[: -len(suffix)]
                modules[stem] = (key.split(".", 1)[0], max(int(shape[0]), modules.get(stem, ("", 0))[1]))
        if key.endswith((".lokr_w1", ".lokr_w2")):  # a LoKr whose factors are whole has no rank
            modules.setdefault(key.rsplit(".", 1)[0], (key.split(".", 1)[0], 0))
    rank = alpha = None
    if meta.get("ss_network_dim"):
        try:
            rank, alpha = int(meta["ss_network_dim"]), float(meta.get("ss_network_alpha") or meta["ss_network_dim"])
        except ValueError:
            rank = alpha = None
    if rank is None:
        flat = _json(meta.get("lora_adapter_metadata"), {})
        ranks = [v for k, v in flat.items() if k.endswith(".r") and isinstance(v, int)]
        ranks += [v for k, v in flat.items() if k.endswith(".rank_pattern") and isinstance(v, dict) for v in v.values()]
        alphas = [v for k, v in flat.items() if k.endswith(".lora_alpha") and isinstance(v, (int, float))]
        alphas += [v for k, v in flat.items() if k.endswith(".alpha_pattern") and isinstance(v, dict) for v in v.values()]
        if ranks:
            rank = max(ranks)
        elif modules:
            rank = max(r for _, r in modules.values()) or None
        alpha = float(max(alphas)) if alphas else (float(rank) if rank is not None else None)
    targets = set()
    for module, (component, _) in modules.items():
        if component == "unet":
            parts = module.split(".")
            targets.add(".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 2 else parts[-1])
        else:
            targets.add("text_encoder")
    return rank, alpha, sorted(targets - {"text_encoder"}) + (["text_encoder"] if "text_encoder" in targets else [])


def _adapter_record(digest: str, path: Path, meta: dict, header: dict, ids: dict) -> Adapter:
    name = parse_name(meta["styler.adapter"])
    if not isinstance(name.version, int):
        raise InvalidName(f"styler.adapter {meta['styler.adapter']!r} has no version")
    method = meta.get("styler.method") or "lora"
    if method == "textual-inversion":
        tokens = _json(meta.get("styler.ti_tokens"), [])
        rank = alpha = None
        targets: list[str] = []
        trigger = tokens[0] if tokens else next((k for k in header if k != "__metadata__"), "")
    else:
        rank, alpha, targets = _lora_shape(header, meta)
        trigger = meta.get("styler.trigger", "")
    dataset = _json(meta.get("styler.dataset"), {})
    mtime = path.stat().st_mtime
    key = (name.full, name.version)
    return Adapter(
        id=ids.get(key) or id_at(mtime), created_at=iso_at(mtime), name=name.full, version=name.version,
        method=method, blob=digest, base=_json(meta.get("styler.base"), {}), run_id=meta.get("styler.run_id") or None,
        dataset_id=dataset.get("id") or None, rank=rank, alpha=alpha, targets=targets, trigger=trigger,
        metadata={"styler_version": meta.get("styler.version", ""), "commit": meta.get("styler.commit", ""),
                  "rebuilt": "from the blob's safetensors metadata"},
    )


def _dataset_record(home: Path, manifest_path: Path, ids: dict) -> Dataset:
    folder = manifest_path.parent
    rel = folder.relative_to(home / "datasets").parts
    if len(rel) not in (2, 3) or not rel[-1].isdigit() or int(rel[-1]) < 1:
        raise RegistryError(f"{folder} is not a dataset version folder (datasets/NAME/N or datasets/NS/NAME/N)")
    name = parse_name("/".join(rel[:-1]), allow_version=False).full
    try:
        m = json.loads(manifest_path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{manifest_path} cannot be read ({exc})") from None
    if not isinstance(m, dict) or m.get("name") != name:
        raise RegistryError(f"{manifest_path} names {m.get('name') if isinstance(m, dict) else None!r}, not {name!r}")
    version = int(rel[-1])
    counts = m.get("counts") or {}
    options = m.get("options") or {}
    mtime = manifest_path.stat().st_mtime
    return Dataset(
        id=ids.get((name, version)) or id_at(mtime), created_at=iso_at(mtime), name=name, version=version,
        path=folder.relative_to(home).as_posix(), content_hash=m.get("content_hash", ""),
        n_images=int(counts.get("kept", len(m.get("images", [])))), n_train=int(counts.get("train", 0)),
        n_val=int(counts.get("val", 0)), n_dropped=int(counts.get("dropped", len(m.get("dropped", [])))),
        source=m.get("source", ""), caption_from=m.get("caption_from", ""), prefix=options.get("prefix", ""),
        trigger=options.get("trigger", ""), options=options, stats=m.get("stats") or {},
    )


def plan_rebuild(reg: Registry, *, empty: tuple[str, ...] | list[str] = ()) -> RebuildPlan:
    """What rebuild would do; changes nothing. Reads everything it needs under short read locks."""
    plan = RebuildPlan()
    unknown = sorted(set(empty) - set(reg.record_types()))
    if unknown:
        raise InvalidName(f"unknown table {unknown[0]!r}; use one of {', '.join(reg.record_types())}")
    refusing = sorted(set(empty) & set(REBUILDABLE))
    if refusing:
        raise InvalidName(f"{refusing[0]} is rebuilt from the files on disk, not started empty; drop --empty {refusing[0]}")
    plan.problems = table_problems(reg)
    damaged = list(dict.fromkeys(table_of(Path(p.where)) for p in plan.problems))
    taken: set[str] = set()
    for p in plan.problems:
        table = table_of(Path(p.where))
        if table not in REBUILDABLE and table not in empty:
            plan.left.append(p)
            continue
        if p.kind == "corrupt-table":
            target = _aside(Path(p.where), taken)
            taken.add(str(target))
            plan.move_aside.append((p.where, str(target)))
    plan.emptied = [t for t in damaged if t in empty]
    wanted = [t for t in REBUILDABLE if t in damaged]
    if not wanted:
        return plan

    home = reg.home
    blobs = _adapter_blobs(home)  # reads every blob's first bytes: outside the lock (blobs never change)
    with reg.locked(write=False):
        runs = _readable_docs(reg, Run.TABLE)
        outputs = _readable_docs(reg, Output.TABLE)
        kept = {t: _readable_docs(reg, t) for t in wanted}

    if "datasets" in wanted:
        ids: dict = {}
        for _, _, meta, _ in blobs:
            d = _json(meta.get("styler.dataset"), {})
            if d.get("id") and d.get("name") and isinstance(d.get("version"), int):
                ids.setdefault((d["name"], d["version"]), d["id"])
        have = {(d.get("name"), d.get("version")) for d in kept["datasets"]} | {d.get("path") for d in kept["datasets"]}
        have_ids = {d.get("id") for d in kept["datasets"]}
        droot = home / "datasets"
        manifests = sorted(droot.glob("*/*/manifest.json")) + sorted(droot.glob("*/*/*/manifest.json")) if droot.is_dir() else []
        for mp in manifests:
            if any(part.startswith(".") for part in mp.relative_to(droot).parts):
                continue  # an import's temp folder
            try:
                rec = _dataset_record(home, mp, ids)
            except RegistryError as exc:
                plan.notes.append(exc.message)
                continue
            if (rec.name, rec.version) in have or rec.path in have:
                continue
            if rec.id in have_ids:
                rec = rec.replace(id=id_at(mp.stat().st_mtime))
            plan.records["datasets"].append(rec)
        plan.records["datasets"].sort(key=lambda r: r.id)

    if "adapters" in wanted:
        ids = {}
        for o in outputs:
            for a in o.get("adapters") or []:
                if isinstance(a, dict) and a.get("id") and a.get("name") and isinstance(a.get("version"), int):
                    ids.setdefault((a["name"], a["version"]), a["id"])
        by_run = {r.get("id"): r.get("adapter_id") for r in runs if r.get("adapter_id")}
        have = {(a.get("name"), a.get("version")) for a in kept["adapters"]}
        have_blobs = {a.get("blob") for a in kept["adapters"]}
        have_ids = {a.get("id") for a in kept["adapters"]}
        chosen: dict = {}
        for digest, path, meta, header in blobs:
            run_id = meta.get("styler.run_id")
            try:
                name = parse_name(meta["styler.adapter"])
                rec = _adapter_record(digest, path, meta, header, {**ids, **({(name.full, name.version): by_run[run_id]} if run_id in by_run else {})})
            except (RegistryError, OSError, ValueError, TypeError) as exc:
                plan.notes.append(f"blob {digest[:12]}…: not restored ({getattr(exc, 'message', exc)})")
                continue
            key = (rec.name, rec.version)
            if key in have or digest in have_blobs:
                continue
            if rec.id in have_ids:
                rec = rec.replace(id=id_at(path.stat().st_mtime))
            known = rec.id in set(ids.values()) | set(by_run.values())
            other = chosen.get(key)
            if other is not None:
                # two blobs claim one name@version (an adapter removed and its version reused):
                # keep the one the runs/outputs know, else the newer
                other_known = other.id in set(ids.values()) | set(by_run.values())
                keep, drop = (rec, other) if (known, rec.created_at) > (other_known, other.created_at) else (other, rec)
                plan.notes.append(f"blob {drop.blob[:12]}… also says {drop.label}; kept blob {keep.blob[:12]}…")
                chosen[key] = keep
            else:
                chosen[key] = rec
        plan.records["adapters"] = sorted(chosen.values(), key=lambda r: r.id)
    return plan


def execute_rebuild(reg: Registry, plan: RebuildPlan) -> dict[str, int]:
    """Carry out a plan under the lock: move damaged files aside, start asked-for tables empty, and
    add the restored records (skipping any whose name, path, blob or id a record has by now)."""
    added = {t: 0 for t in REBUILDABLE}
    with reg.locked():
        for src, dest in plan.move_aside:
            if Path(src).exists():
                os.replace(src, dest)
        for table in plan.emptied:
            if not reg.table_path(table).exists():
                write_json_atomic(reg.table_path(table), {table: {}})
        for cls in (Dataset, Adapter):
            if cls.TABLE not in plan.records:
                continue
            now = reg.all(cls)  # raises if a table is still damaged: nothing is half-done below
            taken = {r.id for r in now} | {(r.name, r.version) for r in now}
            taken |= {getattr(r, "path", None) or getattr(r, "blob", None) for r in now}
            fresh = [r for r in plan.records[cls.TABLE]
                     if not ({r.id, (r.name, r.version), getattr(r, "path", None) or getattr(r, "blob", None)} & taken)]
            active = reg.table_path(cls.TABLE)
            docs = {cls.TABLE: {str(i + 1): r.to_dict() for i, r in enumerate(fresh)}}
            if not active.exists():
                write_json_atomic(active, docs)
            elif fresh:  # a file of their own: no healthy file is rewritten
                write_json_atomic(reg.dir / f"{cls.TABLE}.{reg.next_segment_number(cls.TABLE):04d}.json", docs)
            added[cls.TABLE] = len(fresh)
    return added
