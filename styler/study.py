"""Studies: one training run per cell of a grid over training options (e.g. lr × lr-text), then the
same prompts and seeds rendered with every cell's adapter into one labelled sheet and one scores
table for the whole grid.

`start_study` checks every cell as `styler train` would and queues them as train jobs (so the
worker trains them with `styler train`'s loop, one per GPU, resumable), then a study job that waits
for them (`Job.after`) and calls `render_study`. The study lives in `studies/<name>/study.json`
under the home, with the sheet (sheet.png) and the table (scores.csv) beside it once rendered.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from registry import Adapter, Dataset, Job, NotFound, Registry, now_iso, parse_name
from registry import jobs as Q

from .errors import StylerError, UsageError
from .files import atomic_write, write_bytes_atomic
from .train.config import FIELDS, build_config

# training options a grid may sweep; the others (dataset, base, logging, processes …) stay fixed
AXES = ("lr", "lr_text", "rank", "alpha", "steps", "epochs", "batch", "accum", "warmup", "scheduler", "targets",
        "text_encoder", "dora", "snr_gamma", "noise_offset", "seed", "resolution", "method", "prior_weight",
        "class_images", "max_grad_norm")
MAX_AXES = 2  # rows × columns of one sheet
DEFAULT_METRICS = "clip_t,style_sim"
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


class StudyNotReady(StylerError):
    """Some cells have not finished training."""


@dataclass(frozen=True)
class Axis:
    """One --grid axis: the TrainConfig field, its values, and the values as typed (for labels)."""

    field: str
    values: tuple
    texts: tuple[str, ...]

    @property
    def option(self) -> str:
        return self.field.replace("_", "-")

    def label(self, i: int) -> str:
        return f"{self.option} {self.texts[i]}"


def _axis_hint() -> str:
    return ", ".join(a.replace("_", "-") for a in AXES)


def _cast(field: str, text: str, where: str):
    kind = str(FIELDS[field].type)
    try:
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
    except ValueError:
        what = "whole numbers" if kind.startswith("int") else "finite numbers"
        raise UsageError(f"{where}: {text!r} is not a number; the values of {field.replace('_', '-')} are {what}") from None
    if kind == "bool":
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise UsageError(f"{where}: {text!r} is not true or false")
    return text


def parse_axis(text: str) -> Axis:
    """`lr=1e-4,3e-4` → Axis("lr", (1e-4, 3e-4), ("1e-4", "3e-4")); a UsageError names what is wrong."""
    name, sep, values = text.partition("=")
    if not sep or not name.strip():
        raise UsageError(f"--grid {text!r}: use OPTION=v1,v2,… (e.g. --grid lr=1e-4,3e-4); OPTION is one of {_axis_hint()}")
    field = name.strip().lstrip("-").replace("-", "_")
    if field not in AXES:
        raise UsageError(f"--grid {text!r}: {name.strip()!r} is not a training option a study can sweep; use one of {_axis_hint()}")
    texts = tuple(v.strip() for v in values.split(",") if v.strip())
    where = f"--grid {field.replace('_', '-')}"
    if not texts:
        raise UsageError(f"{where} has no values; list them after '=', e.g. {field.replace('_', '-')}=1,2")
    parsed = tuple(_cast(field, t, where) for t in texts)
    twice = [t for i, t in enumerate(texts) if parsed[i] in parsed[:i]]
    if twice:
        raise UsageError(f"{where} lists {twice[0]!r} twice; give each value once")
    return Axis(field, parsed, texts)


def parse_axes(texts: list[str], fixed: dict) -> list[Axis]:
    """One or two axes, each a distinct option not also given as a fixed option."""
    if not texts:
        raise UsageError("a study needs at least one --grid OPTION=v1,v2 (e.g. --grid lr=1e-4,3e-4)")
    axes = [parse_axis(t) for t in texts]
    if len(axes) > MAX_AXES:
        raise UsageError(f"a study has one or two --grid axes (the sheet's columns and rows); got {len(axes)}")
    if len(axes) == 2 and axes[0].field == axes[1].field:
        raise UsageError(f"--grid {axes[0].option} is given twice; list all its values in one --grid")
    for a in axes:
        if fixed.get(a.field) is not None:
            raise UsageError(f"--{a.option} and --grid {a.option}: give the option once, fixed or swept")
    return axes


def cells_of(axes: list[Axis]) -> list[tuple[int, ...]]:
    """Value indices of every cell, row by row: (x,) or (x, y) with x the first axis (columns)."""
    if len(axes) == 1:
        return [(x,) for x in range(len(axes[0].values))]
    return [(x, y) for y in range(len(axes[1].values)) for x in range(len(axes[0].values))]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.") or "x"


def _cell_name(study: str, axes: list[Axis], cell: tuple[int, ...], i: int) -> str:
    """The cell's adapter name, `STUDY/lr-1e-4_lr-text-5e-5`, else `STUDY/cell-N` when that is no valid name."""
    tail = "_".join(f"{_slug(a.option)}-{_slug(a.texts[k])}" for a, k in zip(axes, cell))
    for candidate in (f"{study}/{tail}", f"{study}/cell-{i + 1}"):
        try:
            return parse_name(candidate, allow_version=False).full
        except Exception:  # too long, or not a name after all
            continue
    raise UsageError(f"study name {study!r} leaves no room for its cells' adapter names; choose a shorter --name")


# -- the study file ----------------------------------------------------------------------------------
def studies_dir(reg: Registry) -> Path:
    return reg.home / "studies"


def study_path(reg: Registry, name: str) -> Path:
    return studies_dir(reg) / name / "study.json"


def check_name(name: str) -> str:
    parsed = parse_name(name, allow_version=False)
    if parsed.namespace:
        raise UsageError(f"study name {name!r}: use one part without '/', e.g. {parsed.name}")
    return parsed.name


def load_study(reg: Registry, name: str) -> dict:
    path = study_path(reg, name)
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no study named {name!r}; see `styler study ls`") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise StylerError(f"{path} is not readable study JSON ({exc}); start the study again") from None


def list_studies(reg: Registry) -> list[dict]:
    found = []
    for path in sorted(studies_dir(reg).glob("*/study.json")):
        try:
            found.append(json.loads(path.read_text("utf-8")))
        except (OSError, ValueError):
            continue
    return found


def save_study(reg: Registry, study: dict) -> Path:
    data = json.dumps(study, ensure_ascii=False, indent=2).encode("utf-8")
    return write_bytes_atomic(study_path(reg, study["name"]), data)


def axes_of(study: dict) -> list[Axis]:
    return [Axis(a["field"], tuple(a["values"]), tuple(a["texts"])) for a in study["axes"]]


def _free_name(reg: Registry, dataset: str) -> str:
    stem = _slug(parse_name(dataset).name)[:50] + "-study"
    name, k = stem, 1
    while study_path(reg, name).exists():
        k += 1
        name = f"{stem}-{k}"
    return name


# -- starting one --------------------------------------------------------------------------------------
def start_study(dataset: str, grid: list[str], train_values: dict, *, name: str | None = None,
                prompts: list[str] | None = None, seeds: list[int] | None = None, render: dict | None = None,
                follow_up: bool = True, registry: Registry | None = None) -> dict:
    """Check every cell, queue one train job per cell and (with `follow_up`) a study job after them,
    and save the study; returns it. A bad axis, option or dataset queues nothing."""
    from .eval.metrics import parse_metrics
    from .train.jobs import check_queueable, train_payload

    reg = registry or Registry()
    fixed = {k: v for k, v in train_values.items() if v is not None}
    axes = parse_axes(grid, fixed)
    for key in ("dataset", "name"):
        fixed.pop(key, None)
    name = check_name(name) if name else _free_name(reg, dataset)
    if study_path(reg, name).exists():
        raise UsageError(f"a study named {name!r} exists; choose another --name, or see `styler study show {name}`")
    render = dict(render or {})
    render.setdefault("steps", 20)
    render.setdefault("guidance", 7.5)
    render["metrics"] = ",".join(parse_metrics(render.get("metrics") or DEFAULT_METRICS))
    if render["steps"] < 1:
        raise UsageError(f"--render-steps {render['steps']} must be >= 1")
    cells, payloads = [], []
    for i, cell in enumerate(cells_of(axes)):
        values = {**fixed, **{a.field: a.values[k] for a, k in zip(axes, cell)}}
        where = ", ".join(f"{a.option}={a.texts[k]}" for a, k in zip(axes, cell))
        try:
            cfg = build_config(values, dataset=dataset, name=_cell_name(name, axes, cell, i))
            check_queueable(cfg)
            payloads.append(train_payload(cfg, reg))  # the dataset, base and options, as `styler train` checks them
        except UsageError as exc:
            raise UsageError(f"study cell {where}: {exc.message}") from None
        cells.append({"index": list(cell), "values": {a.field: a.values[k] for a, k in zip(axes, cell)},
                      "adapter_name": cfg.name})
    pinned = payloads[0]["config"]["dataset"]
    plist = list(prompts or []) or _dataset_prompts(reg, pinned)
    study = {"name": name, "created_at": now_iso(), "dataset": pinned,
             "axes": [{"field": a.field, "values": list(a.values), "texts": list(a.texts)} for a in axes],
             "train": {k: v for k, v in payloads[0]["config"].items() if k not in {a.field for a in axes} | {"name"}},
             "render": {**render, "prompts": plist, "seeds": list(seeds or [0])}, "cells": cells, "render_job": None}
    for cell, payload in zip(cells, payloads):
        cell["job_id"] = Q.enqueue(reg, "train", payload).id
    save_study(reg, study)
    if follow_up:
        study["render_job"] = Q.enqueue(reg, "study", {"study": name}, after=[c["job_id"] for c in cells]).id
        save_study(reg, study)
    return study


def _dataset_prompts(reg: Registry, label: str, n: int = 2) -> list[str]:
    """The dataset's first distinct captions (its style words and trigger), as `styler eval` uses."""
    d = reg.resolve(Dataset, label)
    rows = [json.loads(x) for x in (reg.home / d.path / "captions.jsonl").read_text("utf-8").splitlines() if x.strip()]
    found = list(dict.fromkeys(r["text"] for r in rows if r.get("text")))[:n]
    return found or [f"a picture in the style of {d.name}"]


# -- where it stands ---------------------------------------------------------------------------------------
@dataclass
class CellState:
    cell: dict
    job: Job | None
    adapter: Adapter | None

    @property
    def status(self) -> str:
        if self.adapter is not None:
            return "trained"
        return self.job.status if self.job is not None else "gone"


def cell_states(reg: Registry, study: dict) -> list[CellState]:
    jobs = {j.id: j for j in reg.all(Job)}
    states = []
    for cell in study["cells"]:
        job = jobs.get(cell.get("job_id"))
        adapter = None
        if job is not None and job.status == "done" and job.result.get("adapter_id"):
            try:
                adapter = reg.get(Adapter, job.result["adapter_id"])
            except NotFound:
                adapter = None
        states.append(CellState(cell, job, adapter))
    return states


@dataclass(frozen=True)
class Rendered:
    sheet: Path
    table: Path
    rows: list[dict]


def render_study(name: str, *, registry: Registry | None = None, placement=None, warn=None,
                 partial: bool = False) -> Rendered:
    """Render the study's prompts × seeds with every trained cell's adapter, score them with
    `styler eval`'s code against the study's dataset, and write sheet.png and scores.csv (each whole
    or not at all); cells that failed show as empty, labelled cells. Refuses while cells are still
    queued or training, unless `partial`."""
    from PIL import Image

    from .eval.run import evaluate, output_images
    from .generate.grid import make_grid

    reg = registry or Registry()
    said: set[str] = set()

    def say(message: str) -> None:  # each cell's eval repeats the same notes: once each
        if message not in said:
            said.add(message)
            (warn or (lambda m: None))(message)

    study = load_study(reg, name)
    states = cell_states(reg, study)
    waiting = [s for s in states if s.status in ("queued", "running")]
    if waiting and not partial:
        raise StudyNotReady(f"study {name}: {len(waiting)} of {len(states)} cells are still queued or training; "
                            f"run `styler worker` and render when they are done (`styler study show {name}`), "
                            "or add --partial")
    if not any(s.adapter for s in states):
        raise StudyNotReady(f"study {name}: no cell has a trained adapter yet ({_counts(states)}); "
                            "run `styler worker`, see `styler jobs ls`")
    r = study["render"]
    plist = [p for p in r["prompts"] for _ in r["seeds"]]
    slist = [s for _ in r["prompts"] for s in r["seeds"]]
    axes = axes_of(study)
    rows, images, baseline = [], {}, None
    for s in states:
        row = {**{a.option: a.texts[k] for a, k in zip(axes, s.cell["index"])}, "status": s.status,
               "adapter": s.adapter.label if s.adapter else "", "run": s.adapter.run_id if s.adapter else ""}
        if s.adapter is not None:
            got = evaluate(s.adapter.label, prompts=plist, seeds=slist, metrics=r["metrics"], against=study["dataset"],
                           clip=r.get("clip"), steps=r["steps"], guidance=r["guidance"], size=r.get("size"),
                           base=study["train"].get("base"), registry=reg, warn=say, placement=placement)
            row.update({m: got["scores"][s.adapter.label].get(m) for m in r["metrics"].split(",")})
            images[tuple(s.cell["index"])] = output_images([_output(reg, i) for i in got["outputs"][s.adapter.label]], reg)
            base_name = next(k for k in got["scores"] if k != s.adapter.label)
            baseline = baseline or {"name": base_name, **got["scores"][base_name]}
        rows.append(row)
    first = next(iter(images.values()))
    w, h = first[0].size
    scale = max(1.0, 128 / min(w, h))  # cells at least 128 px, so labels fit under small images
    w, h = round(w * scale), round(h * scale)

    def cell_image(index):
        found = images.get(tuple(index))
        if found is None:
            return None
        strip = Image.new("RGB", (len(found) * w + (len(found) - 1) * 2, h), (255, 255, 255))
        for k, im in enumerate(found):
            strip.paste(im.resize((w, h), Image.NEAREST), (k * (w + 2), 0))
        return strip

    n_img = len(plist)
    cell_size = (n_img * w + (n_img - 1) * 2, h)
    x = axes[0]
    if len(axes) == 1:
        grid = [[cell_image((i,)) for i in range(len(x.values))]]
        row_labels, y_name = None, ""
    else:
        y = axes[1]
        grid = [[cell_image((i, j)) for i in range(len(x.values))] for j in range(len(y.values))]
        row_labels, y_name = [y.label(j) for j in range(len(y.values))], y.option
    failed = [s for s in states if s.adapter is None]
    title = f"study {name}: {study['dataset']}" + (f" ({len(failed)} cell(s) not trained: {_counts(failed)})" if failed else "")
    sheet = make_grid(grid, row_labels=row_labels, col_labels=[x.label(i) for i in range(len(x.values))],
                      title=title, x_name=x.option, y_name=y_name, cell_size=cell_size)
    folder = study_path(reg, name).parent
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    sheet_path = write_bytes_atomic(folder / "sheet.png", buf.getvalue())
    table_path = atomic_write(folder / "scores.csv", lambda tmp: _write_csv(tmp, rows))
    study = load_study(reg, name)  # the file as it is now (show may have read it meanwhile; nothing else writes it)
    study["rendered"] = {"at": now_iso(), "sheet": str(sheet_path), "table": str(table_path), "rows": rows,
                         "baseline": baseline, "prompts": r["prompts"], "seeds": r["seeds"]}
    save_study(reg, study)
    return Rendered(sheet_path, table_path, rows)


def _output(reg: Registry, output_id: str):
    from registry import Output

    return reg.get(Output, output_id)


def _write_csv(path: str, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})


def _counts(states: list[CellState]) -> str:
    counts: dict[str, int] = {}
    for s in states:
        counts[s.status] = counts.get(s.status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in counts.items())

