"""The dashboard's two small dialogs: the key help (`?`), with every key, the ones the footer has
no room for too; and the question `q` asks while a worker started here is running."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

EVERYWHERE = (
    ("1 … 6", "show a tab (Datasets … Queue, as numbered on top)"),
    ("↑ ↓  PgUp PgDn", "move in the focused table or list"),
    ("Tab  Shift+Tab", "focus the next / previous part (it has a solid bar)"),
    ("/", "filter the table (the Queue tab: jump to the form)"),
    ("Esc", "back to the tab's table (from the filter, links or form)"),
    ("r", "read the registry again"),
    ("b  Backspace", "back to where you were before following a link"),
    ("?", "this help"),
    ("q", "quit"),
)

TABLES = (
    ("Enter", "on a row: into its links; on a link: follow it"),
    ("Enter", "in the filter: back to the table"),
)


def pane_keys() -> list[tuple[str, list[tuple[str, str]]]]:
    """The tab-specific keys, read from the panes' own bindings so this list cannot go stale."""
    from .app import TABS

    found = []
    for _tab, title, pane_cls in TABS:
        own = [b for b in pane_cls.BINDINGS if isinstance(b, Binding) and b.show and b.action not in
               ("app.focus_next", "to_table")]
        if own:
            found.append((title, [(b.key_display or b.key, b.tooltip or b.description) for b in own]))
    return found


def editor_keys() -> list[tuple[str, str]]:
    """The caption editor's keys, from its own bindings."""
    from .captions import CaptionEditor, CaptionTable

    own = [b for b in CaptionTable.BINDINGS + CaptionEditor.BINDINGS
           if isinstance(b, Binding) and b.action != "app.keys"]
    return [(b.key_display or b.key, b.tooltip or b.description) for b in own]


def keys_text() -> Text:
    t = Text()

    def section(title: str, rows) -> None:
        t.append(f"{title}\n", style="bold")
        for key, what in rows:
            t.append(f"  {key:<16}", style="bold cyan").append(f"{what}\n")
        t.append("\n")

    section("Everywhere", EVERYWHERE)
    section("Tables", TABLES)
    for title, rows in pane_keys():
        section(f"{title} tab", rows)
    section("Caption editor (e on the Datasets tab)", editor_keys())
    t.append("Esc, ? or q closes this help", style="dim")
    return t


class KeysScreen(ModalScreen[None]):
    """Every key, in a box over the dashboard; Esc (or ? or q) closes it."""

    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "close", key_display="esc")]
    AUTO_FOCUS = "#keys-box"  # the arrows scroll it where it is taller than the terminal

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="keys-box"):
            yield Static(keys_text(), id="keys-text", markup=False)


class QuitScreen(ModalScreen[str]):
    """Asked on `q` while a worker started here runs: stop it and quit, leave it running, or stay.

    Dismissed with "stop", "leave" or "stay"."""

    BINDINGS = [
        Binding("y", "choose('stop')", "stop it and quit"),
        Binding("l", "choose('leave')", "leave it running and quit"),
        Binding("escape,n", "choose('stay')", "stay"),
    ]

    def __init__(self, pid: int | None, log_path) -> None:
        super().__init__()
        self.pid, self.log_path = pid, log_path

    def compose(self) -> ComposeResult:
        t = Text()
        t.append(f"The worker started here (pid {self.pid}) is still running.\n", style="bold")
        t.append("Quitting stops it, and with it any job it is running.\n\n")
        t.append("  y", style="bold cyan").append("    stop it and quit\n")
        t.append("  l", style="bold cyan").append("    leave it running and quit (it keeps taking jobs)\n")
        t.append("  Esc", style="bold cyan").append("  stay")
        if self.log_path is not None:
            t.append(f"\n\nits log: {self.log_path}", style="dim")
        yield Static(t, id="quit-box", markup=False)

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)
