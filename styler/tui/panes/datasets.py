"""The Datasets tab: dataset versions, and what was trained on each."""

from __future__ import annotations

from registry import Dataset, Registry
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable

from ..provenance import Provenance, dataset_provenance, fmt_time
from ..widgets import ProvenanceView
from .base import TablePane


class DatasetsPane(TablePane):
    COLUMNS = ("name", "v", "images", "train/val", "trigger", "created")
    FILTER_HINT = "filter by name, trigger or source  (/)"

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(classes="list"):
                yield from self.compose_table()
            yield ProvenanceView(classes="detail")

    def read(self, reg: Registry) -> list[Dataset]:
        return reg.all(Dataset)

    def row(self, d: Dataset) -> tuple:
        return (d.name, d.version, d.n_images, f"{d.n_train}/{d.n_val}", d.trigger or "-", fmt_time(d.created_at))

    def filter_fields(self, d: Dataset) -> tuple:
        return (d.label, d.trigger, d.source, d.prefix)

    def read_detail(self, reg: Registry, key: str) -> Provenance:
        return dataset_provenance(reg, key)

    def show_detail(self, key: str | None, detail: Provenance | None) -> None:
        self.query_one(ProvenanceView).show(detail, "no datasets yet: `styler data add` or `styler data synth`")

    @on(DataTable.RowSelected)
    def _enter(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.query_one(ProvenanceView).enter()
