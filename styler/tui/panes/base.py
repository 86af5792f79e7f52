"""What every tab shares: registry reads in thread workers, a filterable table, error forwarding.

A pane reads the registry only inside `@work(thread=True, …)` workers, which post messages back;
the handlers (on the app's thread) draw. A worker that raises is reported once, by the app.
"""

from __future__ import annotations

from typing import Any

from registry import Registry
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input
from textual.worker import Worker, WorkerState, get_current_worker

from ..messages import WorkerFailed
from ..widgets import RecordTable, current_key, fill_table, move_to_key


class RegistryPane(Vertical):
    """A tab's content. Subclasses implement `refresh_data`; `select_record` shows one record.

    Tab moves focus on (listed in the footer, unlike the screen's own Tab binding); Escape goes
    back to the tab's main table from the filter, the links or a form."""

    BINDINGS = [
        Binding("tab", "app.focus_next", "focus"),
        Binding("escape", "to_table", "table"),
    ]

    def registry(self) -> Registry:
        return Registry(self.app.home)

    def refresh_data(self) -> None:  # pragma: no cover - every pane overrides it
        pass

    def focus_filter(self) -> bool:
        """Focus the filter input; False when this pane has none."""
        return False

    def main_widget(self):
        """What has focus when the tab is shown: its (first) table."""
        return self.query(DataTable).first(None)

    def focus_main(self) -> None:
        widget = self.main_widget()
        if widget is not None:
            widget.focus()

    def action_to_table(self) -> None:
        self.focus_main()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "to_table":  # listed only where Escape would move focus
            return self.app.focused is not self.main_widget()
        return True

    def select_record(self, target: str) -> None:
        pass

    def on_show(self) -> None:
        if getattr(self.app, "focus_on_show", None) == self.id:
            self.app.focus_on_show = None
            # only now: a widget that is not displayed yet cannot take focus
            back_to = getattr(self.app, "restore_focus", None)
            self.app.restore_focus = None
            if back_to is not None and back_to.is_attached and self in back_to.ancestors:
                back_to.focus()
            else:
                self.focus_main()
        self.refresh_data()

    def dataset_labels_or_report(self, reg: Registry) -> dict[str, str]:
        """{dataset id: name@v} for tables that show them; a broken datasets table is reported and
        leaves the labels out instead of hiding this pane's own records."""
        from registry import Dataset, RegistryError

        try:
            return {d.id: d.label for d in reg.all(Dataset)}
        except RegistryError as exc:
            self.post_message(WorkerFailed(f"{self.id}: dataset names", exc))
            return {}

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            what = (event.worker.description or event.worker.name or "background task").split("(")[0]
            self.post_message(WorkerFailed(f"{self.id or 'tui'}: {what}", event.worker.error))


class TablePane(RegistryPane):
    """A filter Input over a DataTable of records; the detail follows the highlighted row."""

    COLUMNS: tuple[str, ...] = ()
    ENTER_LINKS = True  # Enter on a row goes into its provenance links
    SHRINK: tuple[str, ...] = ()  # columns cut (with …) to fit the table's width; the others stay whole
    FILTER_HINT = "filter (/)"

    class Loaded(Message):
        def __init__(self, data: Any) -> None:
            super().__init__()
            self.data = data

    class DetailLoaded(Message):
        def __init__(self, key: str, detail: Any) -> None:
            super().__init__()
            self.key = key
            self.detail = detail

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.records: list = []
        self._pending: str | None = None  # a record to select once loaded (navigation)
        self._shown: str | None = ""  # the key whose detail is on screen ("": nothing drawn yet)

    # -- subclass hooks --------------------------------------------------------------------------
    def read(self, reg: Registry) -> Any:
        """Runs in a thread: everything the table needs."""
        raise NotImplementedError

    def loaded(self, data: Any) -> None:
        """On the app thread: keep what `read` returned (at least set `self.records`)."""
        self.records = data

    def row(self, record) -> tuple:
        raise NotImplementedError

    def filter_fields(self, record) -> tuple:
        return (record.id,)

    def read_detail(self, reg: Registry, key: str) -> Any:
        """Runs in a thread: the detail of one row (None: no detail pane)."""
        return None

    def show_detail(self, key: str | None, detail: Any) -> None:
        pass

    # -- layout ------------------------------------------------------------------------------------
    def compose_table(self) -> ComposeResult:
        yield Input(placeholder=self.FILTER_HINT, id=f"{self.id}-filter", classes="filter")
        yield RecordTable(id=f"{self.id}-table", cursor_type="row", zebra_stripes=True, enter_hint=self.ENTER_LINKS)

    @property
    def table(self) -> DataTable:
        return self.query_one(f"#{self.id}-table", DataTable)

    @property
    def filter_input(self) -> Input:
        return self.query_one(f"#{self.id}-filter", Input)

    def on_mount(self) -> None:
        self.table.add_columns(*self.COLUMNS)

    def focus_filter(self) -> bool:
        self.filter_input.focus()
        return True

    # -- loading ---------------------------------------------------------------------------------
    def refresh_data(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="load", description="reading the registry")
    def _load(self) -> None:
        data = self.read(self.registry())
        if not get_current_worker().is_cancelled:
            self.post_message(self.Loaded(data))

    @on(Loaded)
    def _on_loaded(self, message: Loaded) -> None:
        message.stop()
        self.loaded(message.data)
        self.populate()
        if self._pending is not None:
            target, self._pending = self._pending, None
            if any(r.id == target for r in self.records):
                self._select(target)
            else:
                self.app.notify(f"{target} is no longer in the registry", severity="warning", markup=False)
                self.focus_main()

    def visible(self) -> list:
        needle = self.filter_input.value
        from ..provenance import matches

        return [r for r in self.records if matches(needle, *self.filter_fields(r))]

    def populate(self) -> None:
        fill_table(self.table, [(r.id, self.row(r)) for r in self.visible()],
                   shrink=[self.COLUMNS.index(c) for c in self.SHRINK])
        self._follow_cursor()

    @on(Input.Changed, ".filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.populate()

    @on(Input.Submitted, ".filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.table.focus()

    # -- selection and detail -------------------------------------------------------------------
    def select_record(self, target: str) -> None:
        if not any(r.id == target for r in self.records):
            self._pending = target  # not loaded yet (or new): select after the next load
            self.refresh_data()
            return
        self._select(target)

    def _select(self, target: str) -> None:
        if not move_to_key(self.table, target):
            self.filter_input.value = ""  # the filter hides it
            self.populate()
            move_to_key(self.table, target)
        self.table.focus()
        self._follow_cursor()

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._follow_cursor()

    def _follow_cursor(self) -> None:
        key = current_key(self.table)
        if key != self._shown:
            self._shown = key
            if key is None:
                self.show_detail(None, None)
            else:
                self._load_detail(key)

    @work(thread=True, exclusive=True, exit_on_error=False, group="detail", description="reading the detail")
    def _load_detail(self, key: str) -> None:
        detail = self.read_detail(self.registry(), key)
        if not get_current_worker().is_cancelled:
            self.post_message(self.DetailLoaded(key, detail))

    @on(DetailLoaded)
    def _on_detail_loaded(self, message: DetailLoaded) -> None:
        message.stop()
        if message.key == self._shown:
            self.show_detail(message.key, message.detail)
