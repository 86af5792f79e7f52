"""The Adapters tab: adapter versions and their provenance chain."""

from __future__ import annotations

from registry import Adapter, Registry
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable

from ..provenance import Provenance, adapter_provenance, fmt_time
from ..widgets import ProvenanceView
from .base import TablePane


class AdaptersPane(TablePane):
    COLUMNS = ("name", "v", "method", "rank", "trigger", "dataset", "created")
    SHRINK = ("method", "trigger", "dataset")  # the name and the date stay whole (the date may sit past the edge)
    FILTER_HINT = "filter by name, method or trigger  (/)"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dataset_labels: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(classes="list"):
                yield from self.compose_table()
            yield ProvenanceView(classes="detail")

    def read(self, reg: Registry) -> tuple[list[Adapter], dict[str, str]]:
        return reg.all(Adapter), self.dataset_labels_or_report(reg)

    def loaded(self, data) -> None:
        self.records, self.dataset_labels = data

    def row(self, a: Adapter) -> tuple:
        dataset = self.dataset_labels.get(a.dataset_id or "", "-")
        return (a.name, a.version, a.method, a.rank if a.rank is not None else "-", a.trigger or "-", dataset,
                fmt_time(a.created_at))

    def filter_fields(self, a: Adapter) -> tuple:
        return (a.label, a.method, a.trigger)

    def read_detail(self, reg: Registry, key: str) -> Provenance:
        return adapter_provenance(reg, key)

    def show_detail(self, key: str | None, detail: Provenance | None) -> None:
        self.query_one(ProvenanceView).show(detail, "no adapters yet: `styler train DATASET`")

    @on(DataTable.RowSelected)
    def _enter(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.query_one(ProvenanceView).enter()
