"""The Datasets tab: dataset versions, and what was trained on each; `e` opens the highlighted
version's captions in the caption editor."""

from __future__ import annotations

from registry import Dataset, Registry
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable

from ..provenance import Provenance, dataset_provenance, fmt_time
from ..widgets import ProvenanceView, current_key
from .base import TablePane


class DatasetsPane(TablePane):
    COLUMNS = ("name", "v", "images", "train/val", "trigger", "created")
    FILTER_HINT = "filter by name, trigger or source  (/)"
    BINDINGS = [Binding("e", "edit_captions", "captions",
                        tooltip="edit this version's captions, saved as a new version")]

    class DraftOpened(Message):
        def __init__(self, draft) -> None:
            super().__init__()
            self.draft = draft

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

    # -- the caption editor ------------------------------------------------------------------------
    def action_edit_captions(self) -> None:
        key = current_key(self.table)
        if key is not None:
            self._open_draft(key)

    @work(thread=True, exclusive=True, exit_on_error=False, group="captions", description="reading the captions")
    def _open_draft(self, dataset_id: str) -> None:
        from ..captions import open_by_id

        self.post_message(self.DraftOpened(open_by_id(self.registry(), dataset_id)))

    @on(DraftOpened)
    def _draft_opened(self, message: DraftOpened) -> None:
        message.stop()
        from ..captions import CaptionEditor

        def closed(saved_id: str | None) -> None:
            if saved_id:
                self.select_record(saved_id)  # the new version: loaded, then highlighted
            else:
                self.focus_main()

        self.app.push_screen(CaptionEditor(message.draft, self.app.home), closed)
