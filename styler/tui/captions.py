"""The caption editor, opened with `e` on the Datasets tab: a dataset version's captions in a table;
edit one, replace text in all, add or remove a leading tag, and save them as the next version of
the dataset (the version opened is never changed). The edits are `styler data captions`' own
(`styler.data.caption_edits.CaptionDraft`); the save runs in a thread worker."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Static
from textual.worker import Worker, WorkerState

from ..data.caption_edits import CaptionDraft
from ..errors import StylerError
from .messages import WorkerFailed
from .widgets import current_key, fill_table, refit

# what the input line is asking for: its title on the border
PROMPTS = {
    "edit": "caption of {image}  (Enter keeps it, Esc drops it)",
    "find": "replace in every caption: the text to find  (Enter: next)",
    "replace": "replace {find!r} with  (Enter replaces; empty deletes)",
    "add-tag": "leading tag to add where a caption lacks it  (Enter adds)",
    "remove-tag": "leading tag to remove where a caption has it  (Enter removes)",
}


def open_by_id(reg, dataset_id: str) -> CaptionDraft:
    """The captions of one dataset version (by record id), read in a worker thread."""
    from registry import Dataset

    from ..data.caption_edits import read_manifest

    d = reg.get(Dataset, dataset_id)
    return CaptionDraft(d, read_manifest(reg, d))


class CaptionTable(DataTable):
    """The captions, one row per image; Enter edits the highlighted one."""

    BINDINGS = [Binding("enter", "select_cursor", "edit", key_display="⏎",
                        tooltip="edit the highlighted caption (Enter keeps, Esc drops)")]

    def on_resize(self) -> None:
        refit(self)


class CaptionEditor(ModalScreen[str | None]):
    """Edits the captions of one dataset version; dismissed with the saved version's id, or None."""

    BINDINGS = [
        Binding("s", "prompt('find')", "replace", tooltip="search and replace text in every caption"),
        Binding("p", "prompt('add-tag')", "add tag", tooltip="add a leading tag to every caption that lacks it"),
        Binding("x", "prompt('remove-tag')", "remove tag",
                tooltip="remove a leading tag from the captions that have it"),
        Binding("u", "revert", "revert", tooltip="put the highlighted caption back as it was"),
        Binding("ctrl+s", "save", "save", key_display="^s",
                tooltip="save the captions as the dataset's next version"),
        Binding("escape", "close", "close", key_display="esc",
                tooltip="close (twice to drop unsaved changes)"),
        Binding("question_mark", "app.keys", "keys", key_display="?"),
    ]
    AUTO_FOCUS = "#captions-table"
    COMPACT_BELOW = 100

    class Saved(Message):
        def __init__(self, saved) -> None:
            super().__init__()
            self.saved = saved

    def __init__(self, draft: CaptionDraft, home) -> None:
        super().__init__()
        self.draft, self.home = draft, home
        self.mode: str | None = None  # what the input line is asking for (None: hidden)
        self.find = ""
        self.closing = False  # Esc was pressed once with unsaved changes

    def compose(self) -> ComposeResult:
        yield Static(id="editor-title", markup=False)
        yield CaptionTable(id="captions-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="caption-full", markup=False)
        yield Input(id="caption-input")
        yield Footer()

    def on_mount(self) -> None:
        self.table.add_columns(" ", "image", "caption")
        self.query_one("#caption-input", Input).display = False
        self.fit_footer()
        self.draw()

    def on_resize(self) -> None:
        self.fit_footer()

    def fit_footer(self) -> None:
        self.query_one(Footer).compact = self.app.size.width < self.COMPACT_BELOW

    @property
    def table(self) -> DataTable:
        return self.query_one("#captions-table", DataTable)

    @property
    def input(self) -> Input:
        return self.query_one("#caption-input", Input)

    def highlighted(self) -> int | None:
        key = current_key(self.table)
        return int(key) if key is not None else None

    # -- drawing -------------------------------------------------------------------------------------
    def draw(self) -> None:
        draft = self.draft
        changed = set(draft.changed)
        fill_table(self.table, [(str(i), ("*" if i in changed else " ", draft.label(i), draft.texts[i]))
                                for i in range(len(draft))], shrink=[1, 2])
        title = Text(f"captions of {draft.dataset.label}", style="bold")
        title.append(f"  {len(draft)} images · ")
        title.append(f"{len(changed)} changed" if changed else "no changes", style="yellow" if changed else "dim")
        title.append("  (^s saves them as a new version)", style="dim")
        self.query_one("#editor-title", Static).update(title)
        self.show_full()

    def show_full(self) -> None:
        i = self.highlighted()
        full = self.query_one("#caption-full", Static)
        if i is None:
            full.update(Text("no images", style="dim"))
            return
        line = Text(f"{self.draft.label(i)}: ", style="bold").append(self.draft.texts[i] or "(empty)")
        if self.draft.texts[i] != self.draft.original[i]:
            line.append("\nwas: ", style="dim").append(self.draft.original[i] or "(empty)", style="dim")
        full.update(line)

    @on(DataTable.RowHighlighted, "#captions-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.show_full()

    # -- the input line ------------------------------------------------------------------------------
    def open_input(self, mode: str, value: str = "") -> None:
        self.mode = mode
        i = self.highlighted()
        self.input.border_title = PROMPTS[mode].format(image=self.draft.label(i) if i is not None else "",
                                                       find=self.find)
        self.input.value = value
        self.input.display = True
        self.input.focus()
        self.input.cursor_position = len(value)
        self.refresh_bindings()

    def close_input(self) -> None:
        self.mode = None
        self.input.display = False
        self.table.focus()
        self.refresh_bindings()

    @on(DataTable.RowSelected, "#captions-table")
    def _edit(self, event: DataTable.RowSelected) -> None:
        event.stop()
        i = self.highlighted()
        if i is not None:
            self.open_input("edit", self.draft.texts[i])

    def action_prompt(self, mode: str) -> None:
        value = ""
        if mode == "remove-tag":  # offer the highlighted caption's first tag
            i = self.highlighted()
            if i is not None:
                value = self.draft.texts[i].split(",")[0].strip()
        self.open_input(mode, value)

    @on(Input.Submitted, "#caption-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        mode, value = self.mode, event.value
        try:
            if mode == "edit":
                i = self.highlighted()
                if i is not None:
                    self.draft.set(i, value)
            elif mode == "find":
                if not value:
                    raise StylerError("the text to find is empty; type what to replace")
                self.find = value
                self.open_input("replace")
                return
            elif mode == "replace":
                n = self.draft.replace(self.find, value)
                self.notify(f"replaced {self.find!r} in {n} caption(s)", markup=False)
            elif mode == "add-tag":
                n = self.draft.add_tag(value)
                self.notify(f"added {value.strip()!r} to {n} caption(s)", markup=False)
            elif mode == "remove-tag":
                n = self.draft.remove_tag(value)
                self.notify(f"removed {value.strip()!r} from {n} caption(s)", markup=False)
        except StylerError as exc:
            self.notify(exc.message, severity="error", markup=False)
            return
        self.closing = False
        self.close_input()
        self.draw()

    # -- keys ----------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in ("prompt", "revert", "save") and self.mode is not None:
            return None  # shown greyed while the input line is open; typing goes to it
        return True

    def action_revert(self) -> None:
        i = self.highlighted()
        if i is not None and self.draft.revert(i):
            self.draw()

    def action_close(self) -> None:
        if self.mode is not None:
            self.close_input()
            return
        n = len(self.draft.changed)
        if n and not self.closing:
            self.closing = True
            self.notify(f"{n} unsaved change(s): ctrl+s saves them as a new version, Esc again drops them",
                        severity="warning", markup=False)
            return
        self.dismiss(None)

    def action_save(self) -> None:
        if not self.draft.changed:
            self.notify("no caption changed; nothing to save", severity="warning")
            return
        self._save()

    @work(thread=True, exclusive=True, exit_on_error=False, group="save", description="saving the captions")
    def _save(self) -> None:
        from registry import Registry

        from ..data.caption_edits import save_draft

        self.post_message(self.Saved(save_draft(self.draft, registry=Registry(self.home))))

    @on(Saved)
    def _saved(self, message: Saved) -> None:
        saved = message.saved
        self.app.notify(f"saved {saved.record.label}: {saved.changed} caption(s) changed; "
                        f"{saved.source.label} is unchanged", markup=False)
        self.dismiss(saved.record.id)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.app.post_message(WorkerFailed("caption editor: saving", event.worker.error))
