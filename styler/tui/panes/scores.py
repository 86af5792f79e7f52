"""The Scores tab: subjects × metrics (best per column highlighted) and bars of one metric."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text
from registry import Registry
from textual import on, work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from ...eval.table import best, columns, latest_scores, lower_is_better, ordered_subjects
from ..provenance import fmt_num
from ..widgets import bar_chart, current_key, move_to_key, plain, set_widths
from .base import RegistryPane

BAR_WIDTH = 50


@dataclass(frozen=True)
class ScoreTable:
    subjects: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    values: dict = field(default_factory=dict)  # {subject: {metric: value}}
    winners: dict = field(default_factory=dict)  # {metric: subject}
    toy_clip: str = ""  # the note for scores of the built-in world's tiny CLIP or a random-weight CLIP
    clip_names: tuple[str, ...] = ()
    baselines: tuple[str, ...] = ()  # subjects that are a baseline (kind "baseline")


def read_scores(reg: Registry) -> ScoreTable:
    rows = latest_scores(reg)
    metrics = columns(rows)
    baselines = {n for n, r in rows.items()
                 if n == "baseline" or any((s.subject or {}).get("kind") == "baseline" for s in r.values())}
    subjects = sorted(ordered_subjects(rows), key=lambda n: n in baselines)  # baselines last
    winners = {}
    for m in metrics:
        # like `styler scores`: a baseline is the reference; it only "wins" when nothing else has the metric
        others = {n: r for n, r in rows.items() if n not in baselines}
        w = best(others, m) if any(m in r for r in others.values()) else best(rows, m)
        if w is not None:
            winners[m] = w
    scores = [s for r in rows.values() for s in r.values()]
    from ...eval.features import clip_note

    toy = clip_note(s.protocol for s in scores)
    names = tuple(sorted({str(((s.protocol or {}).get("clip") or {}).get("name")) for s in scores
                          if ((s.protocol or {}).get("clip") or {}).get("name")}))
    return ScoreTable(subjects, metrics, {n: {m: s.value for m, s in r.items()} for n, r in rows.items()},
                      winners, toy, names, tuple(sorted(baselines)))


class ScoresPane(RegistryPane):
    class Loaded(Message):
        def __init__(self, table: ScoreTable) -> None:
            super().__init__()
            self.table = table

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data = ScoreTable()
        self.metric: str | None = None
        self._pending: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="scores-note", markup=False)
        yield DataTable(id="scores-table", cursor_type="cell", zebra_stripes=True)
        with VerticalScroll(id="bars-box"):
            yield Static(id="bars", markup=False)

    @property
    def table(self) -> DataTable:
        return self.query_one("#scores-table", DataTable)

    def refresh_data(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="load", description="reading scores")
    def _load(self) -> None:
        data = read_scores(self.registry())
        if not get_current_worker().is_cancelled:
            self.post_message(self.Loaded(data))

    @on(Loaded)
    def _on_loaded(self, message: Loaded) -> None:
        message.stop()
        if message.table == self.data and self.table.columns:
            return
        self.data = d = message.table
        keep = current_key(self.table)
        column = self.table.cursor_column
        self.table.clear(columns=True)
        rows = []
        for s in d.subjects:
            cells = [plain(s, "italic" if s in d.baselines else "bold")]
            for m in d.metrics:
                v = d.values[s].get(m)
                cells.append(Text(fmt_num(v), style="bold green" if d.winners.get(m) == s else "",
                                  justify="right") if m in d.values[s] else Text("-", justify="right"))
            rows.append((s, tuple(cells)))
        self.table.add_column("subject", key="subject")
        for m in d.metrics:
            self.table.add_column(f"{m} {'↓' if lower_is_better(m) else '↑'}", key=m)
        set_widths(self.table, [cells for _, cells in rows])  # see fill_table
        for s, cells in rows:
            self.table.add_row(*cells, key=s)
        if keep:
            move_to_key(self.table, keep)
        if column:
            self.table.move_cursor(column=min(column, len(d.metrics)))
        note = Text()
        if not d.subjects:
            note.append("no scores yet: `styler eval run ADAPTER` (or queue an eval job in the Queue tab)", style="dim")
        else:
            note.append("best per metric in green (the baseline is the reference)  ·  "
                        "move across columns to chart a metric", style="dim")
        if d.toy_clip:
            note.append(f"\nnote: {d.toy_clip}", style="yellow")
        self.query_one("#scores-note", Static).update(note)
        if self._pending:
            target, self._pending = self._pending, None
            if target in d.subjects:
                self.select_record(target)
        self._chart()

    @on(DataTable.CellHighlighted)
    def _cell(self, event: DataTable.CellHighlighted) -> None:
        event.stop()
        self._chart()

    def _chart(self) -> None:
        d = self.data
        bars = self.query_one("#bars", Static)
        if not d.metrics:
            bars.update("")
            return
        column = self.table.cursor_column
        self.metric = d.metrics[min(max(column - 1, 0), len(d.metrics) - 1)]
        values = [(s, d.values[s].get(self.metric)) for s in d.subjects]
        title = Text(f"{self.metric}\n", style="bold")
        bars.update(title + bar_chart(values, width=BAR_WIDTH, best=d.winners.get(self.metric),
                                      lower_is_better=lower_is_better(self.metric)))

    def select_record(self, target: str) -> None:
        if target not in self.data.subjects:
            self._pending = target
            self.refresh_data()
            return
        move_to_key(self.table, target)
        self.table.focus()
