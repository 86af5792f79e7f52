"""What the detail panes show: the chain adapter → run → dataset version → outputs → scores.

Pure registry reads turned into plain view models (no Textual here), so the thread workers
build them and the widgets only draw them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from registry import Adapter, Dataset, NotFound, Output, Record, Registry, Run, Score

from ..eval.table import ORDER as METRIC_ORDER

NEWEST_OUTPUTS = 5


@dataclass(frozen=True)
class Link:
    """A line of the detail pane that leads to a record in another tab."""

    tab: str  # pane id: datasets | adapters | runs | outputs | scores
    target: str  # a record id (a subject name for scores)
    text: str


@dataclass(frozen=True)
class Section:
    title: str
    links: tuple[Link, ...] = ()
    note: str = ""  # shown when there is nothing to link, or a count ("12 outputs, newest 5")


@dataclass(frozen=True)
class Provenance:
    title: str
    facts: tuple[tuple[str, str], ...] = ()
    sections: tuple[Section, ...] = field(default_factory=tuple)

    def text(self) -> str:
        """Everything as plain lines (what tests and the clipboard see)."""
        lines = [self.title, *(f"{k}: {v}" for k, v in self.facts)]
        for s in self.sections:
            lines.append(s.title + (f" — {s.note}" if s.note else ""))
            lines += [f"  {link.text}" for link in s.links]
        return "\n".join(lines)


# -- formatting shared by tables and details ---------------------------------------------------
def short_id(record_id: str | None) -> str:
    return record_id[-8:] if record_id else "-"


def fmt_num(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    try:
        return f"{float(value):.{digits}g}"
    except (TypeError, ValueError):
        return str(value)


def fmt_time(iso: str | None, *, short: bool = False) -> str:
    """`2024-05-01T12:34:56.789+00:00` → `2024-05-01 12:34` (`05-01 12:34` short); UTC as stored,
    no clock reads, so screens are deterministic."""
    if not iso:
        return "-"
    text = iso[:16].replace("T", " ")
    return text[5:] if short else text


def adapters_text(adapters: list) -> str:
    """An output's adapters with weights: `anime@1×0.5 + ink@2×1`, or `base` for none."""
    parts = []
    for a in adapters or []:
        name = a.get("name", "?")
        if a.get("version") is not None:
            name = f"{name}@{a['version']}"
        weight = a.get("weight")
        te = a.get("te_weight")
        w = fmt_num(weight, 3)
        if te is not None and te != weight:
            w += f"/te {fmt_num(te, 3)}"
        parts.append(f"{name}×{w}")
    return " + ".join(parts) or "base"


def output_source(output: Output) -> str:
    """What made an output: its adapters, `run 1a2b3c4d at step 200` for a validation image
    (rendered by a run with its weights of that step; no adapter record exists yet), or `base`."""
    if output.adapters or not output.run_id:
        return adapters_text(output.adapters)
    step = (output.params or {}).get("train_step")
    return f"run {short_id(output.run_id)}" + (f" at step {step}" if step is not None else "")


def run_summary(run: Run) -> str:
    return f"{run.status} · step {run.step}/{run.total_steps} · loss {fmt_num(run.loss)}"


def dataset_summary(d: Dataset) -> str:
    return f"{d.label} · {d.n_images} images (train {d.n_train}, val {d.n_val})"


def _get(reg: Registry, cls: type[Record], record_id: str | None):
    if not record_id:
        return None
    try:
        return reg.get(cls, record_id)
    except NotFound:
        return None


def uses_adapter(output: Output, adapter_id: str) -> bool:
    return any(isinstance(a, dict) and a.get("id") == adapter_id for a in output.adapters or [])


def _score_subject_ids(score: Score) -> set[str]:
    subj = score.subject or {}
    ids = {subj["id"]} if subj.get("id") else set()
    ids |= {a.get("id") for a in subj.get("adapters") or [] if isinstance(a, dict) and a.get("id")}
    return ids


def scores_for_adapter(scores: list[Score], adapter: Adapter) -> list[Score]:
    """The newest score per (subject, metric) whose subject is this adapter or a mix using it."""
    newest: dict[tuple[str, str], Score] = {}
    for s in scores:  # oldest first
        if adapter.id in _score_subject_ids(s) or (s.subject or {}).get("name") == adapter.label:
            newest[((s.subject or {}).get("name", "?"), s.metric)] = s
    rank = {m: i for i, m in enumerate(METRIC_ORDER)}
    return sorted(newest.values(), key=lambda s: ((s.subject or {}).get("name", ""), rank.get(s.metric, len(rank)), s.metric))


# -- the chains ----------------------------------------------------------------------------------
def adapter_provenance(reg: Registry, adapter_id: str) -> Provenance:
    a = reg.get(Adapter, adapter_id)
    facts = [("id", a.id), ("method", a.method), ("rank / alpha", f"{a.rank if a.rank is not None else '-'} / "
                                                                  f"{fmt_num(a.alpha, 3)}"),
             ("targets", ", ".join(map(str, a.targets)) or "-"), ("trigger", a.trigger or "-"),
             ("base", str((a.base or {}).get("name", "-"))), ("created", fmt_time(a.created_at))]
    sections = []

    run = _get(reg, Run, a.run_id)
    if run is not None:
        sections.append(Section("run", (Link("runs", run.id, f"run {short_id(run.id)} · {run_summary(run)}"),)))
    else:
        sections.append(Section("run", note="missing run " + a.run_id if a.run_id else f"none ({a.method})"))

    dataset_id = a.dataset_id or (run.dataset_id if run else None)
    d = _get(reg, Dataset, dataset_id)
    if d is not None:
        sections.append(Section("dataset", (Link("datasets", d.id, dataset_summary(d)),)))
    else:
        sections.append(Section("dataset", note=f"missing dataset {dataset_id}" if dataset_id else "none recorded"))

    outs = [o for o in reg.all(Output) if uses_adapter(o, a.id)]
    newest = outs[::-1][:NEWEST_OUTPUTS]
    links = tuple(Link("outputs", o.id, f"{short_id(o.id)} seed {o.seed} · {o.prompt}") for o in newest)
    note = f"{len(outs)} made with it" + (f", newest {len(newest)}" if len(outs) > len(newest) else "")
    sections.append(Section("outputs", links, note if outs else "none yet"))

    scores = scores_for_adapter(reg.all(Score), a)
    links = tuple(Link("scores", (s.subject or {}).get("name", "?"),
                       f"{(s.subject or {}).get('name', '?')} · {s.metric} {fmt_num(s.value)}") for s in scores)
    sections.append(Section("scores", links, "" if scores else "none yet"))
    return Provenance(f"adapter {a.label}", tuple(facts), tuple(sections))


def dataset_provenance(reg: Registry, dataset_id: str) -> Provenance:
    d = reg.get(Dataset, dataset_id)
    facts = (("id", d.id), ("images", f"{d.n_images} (train {d.n_train}, val {d.n_val}, dropped {d.n_dropped})"),
             ("source", d.source or "-"), ("captions", d.caption_from or "-"), ("prefix", d.prefix or "-"),
             ("trigger", d.trigger or "-"), ("path", d.path or "-"),
             ("content", d.content_hash[:12] or "-"), ("created", fmt_time(d.created_at)))
    adapters = [a for a in reg.all(Adapter) if a.dataset_id == d.id]
    runs = [r for r in reg.all(Run) if r.dataset_id == d.id]
    derived = (d.options or {}).get("derived_from") or {}
    made_from = ()
    if derived:  # a version made from another by `data caption`/`data captions` or the caption editor
        parent = _get(reg, Dataset, derived.get("id"))
        made_from = (Section("made from", (Link("datasets", parent.id, f"{parent.label} · {derived.get('how', '')}"),)
                             if parent else (), "" if parent else f"{derived.get('label', '?')} (removed)"),)
    sections = made_from + (
        Section("adapters trained on it", tuple(Link("adapters", a.id, f"{a.label} · {a.method}") for a in adapters),
                "" if adapters else "none yet"),
        Section("runs", tuple(Link("runs", r.id, f"run {short_id(r.id)} · {run_summary(r)}") for r in runs),
                "" if runs else "none yet"),
    )
    return Provenance(f"dataset {d.label}", facts, sections)


def run_links(reg: Registry, run: Run) -> tuple[Link, ...]:
    """Where a run came from and what it made."""
    links = []
    d = _get(reg, Dataset, run.dataset_id)
    if d is not None:
        links.append(Link("datasets", d.id, f"dataset {dataset_summary(d)}"))
    a = _get(reg, Adapter, run.adapter_id)
    if a is not None:
        links.append(Link("adapters", a.id, f"adapter {a.label} · {a.method}"))
    return tuple(links)


def matches(needle: str, *fields) -> bool:
    """Case-insensitive substring filter over some fields."""
    needle = needle.strip().lower()
    return not needle or any(needle in str(f).lower() for f in fields if f is not None)
