"""The dashboard app: six tabs over the registry, keys to move between them, one error handler.

Start it with `styler tui` (or `run()`). Registry reads happen in thread workers inside the
panes; this module imports no torch, and the first frame is drawn before any data is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from registry import styler_home
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.lazy import Lazy
from textual.widget import Widget
from textual.widgets import Footer, Header, TabbedContent, TabPane, Tabs

from .background import BackgroundWorker
from .messages import JobsChanged, Navigate, WorkerFailed
from .panes.adapters import AdaptersPane
from .panes.base import RegistryPane
from .panes.datasets import DatasetsPane
from .panes.outputs import OutputsPane
from .panes.queue import QueuePane
from .panes.runs import RunsPane
from .panes.scores import ScoresPane

@dataclass(frozen=True)
class Place:
    """Where the user was when they followed a link: the tab and the focused widget."""

    tab: str
    widget: Widget | None


TABS = (
    ("datasets", "Datasets", DatasetsPane),
    ("adapters", "Adapters", AdaptersPane),
    ("runs", "Runs", RunsPane),
    ("outputs", "Outputs", OutputsPane),
    ("scores", "Scores", ScoresPane),
    ("queue", "Queue", QueuePane),
)


class StylerApp(App):
    """styler's dashboard: datasets, adapters, runs, outputs, scores and the job queue."""

    CSS_PATH = "styler.tcss"
    TITLE = "styler"
    ENABLE_COMMAND_PALETTE = False
    AUTO_FOCUS = "RecordTable"  # the first tab's table, so the arrows move it from the start
    BINDINGS = [
        # one footer entry stands for the six tab keys
        *(Binding(str(i), f"show_tab('{tab}')", "tabs" if i == 1 else title, show=i == 1,
                  key_display="1-6" if i == 1 else None) for i, (tab, title, _) in enumerate(TABS, 1)),
        Binding("slash", "focus_filter", "filter", key_display="/"),
        Binding("backspace,b", "back", "back", key_display="b"),
        Binding("r", "refresh", "refresh"),
        Binding("question_mark", "keys", "keys", key_display="?"),
        Binding("q", "quit", "quit"),
    ]
    HISTORY = 50  # places kept for Back

    def __init__(self, home: str | os.PathLike | None = None, *, worker_command: list[str] | None = None):
        super().__init__()
        self.home = Path(home).expanduser().resolve() if home is not None else styler_home()
        self.background = BackgroundWorker(self.home, worker_command)
        self.focus_on_show: str | None = None
        self.restore_focus: Widget | None = None  # Back: the widget to focus when its tab shows
        self.history: list[Place] = []  # where the user was before each followed link
        self.left_running: str = ""  # said on stderr after exit: a worker the user chose to keep
        self.sub_title = str(self.home)

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="tab-datasets", id="tabs"):
            for i, (tab, title, pane_cls) in enumerate(TABS):
                with TabPane(f"{i + 1} {title}", id=f"tab-{tab}"):
                    # the hidden tabs mount just after the first frame, so it comes sooner
                    yield pane_cls(id=tab) if i == 0 else Lazy(pane_cls(id=tab))
        yield Footer()

    def on_mount(self) -> None:
        # The tab bar takes no focus: focused, it took the arrow keys (they switched tabs instead of
        # moving the table); the number keys and the mouse switch tabs.
        self.query_one(TabbedContent).query_one(Tabs).can_focus = False
        self.fit_footer()

    COMPACT_BELOW = 100  # columns: narrower, the footer drops its padding so every key (q quit last) fits

    def on_resize(self) -> None:
        self.fit_footer()

    def fit_footer(self) -> None:
        footer = self.query(Footer).first(None)
        if footer is not None:
            footer.compact = self.size.width < self.COMPACT_BELOW

    # -- tabs ---------------------------------------------------------------------------------------
    @property
    def active_tab(self) -> str:
        return self.query_one(TabbedContent).active.removeprefix("tab-")

    def pane(self, tab: str | None = None) -> RegistryPane | None:
        """A tab's pane; None for a moment after start, while the hidden tabs are still mounting."""
        return self.query(f"#{tab or self.active_tab}").first(None)

    def with_pane(self, tab: str | None, action, tries: int = 20) -> None:
        """Run `action(pane)` now, or once the (lazily mounted) pane exists."""
        pane = self.pane(tab)
        if pane is not None:
            action(pane)
        elif tries:
            self.call_after_refresh(self.with_pane, tab, action, tries - 1)

    def action_show_tab(self, tab: str) -> None:
        tabs = self.query_one(TabbedContent)
        if tabs.active == f"tab-{tab}":
            self.with_pane(tab, lambda pane: pane.focus_main())
        else:
            # Let go of focus first: a focused widget that gets hidden hands focus to the first
            # focusable widget on screen (racing the new pane); the pane takes it once shown.
            self.set_focus(None)
            self.focus_on_show = tab
            tabs.active = f"tab-{tab}"

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # a click on a tab does not go through action_show_tab: the new pane's table takes focus
        self.call_after_refresh(self.ensure_focus)

    def ensure_focus(self) -> None:
        """Focus the active tab's table when nothing in that tab has focus (the arrows move it)."""
        pane = self.pane()
        if pane is None or self.focus_on_show is not None:
            return  # still mounting, or about to take focus in on_show
        focused = self.focused
        if focused is None or not focused.is_attached or pane not in focused.ancestors:
            pane.focus_main()

    def action_focus_filter(self) -> None:
        self.with_pane(None, lambda pane: pane.focus_filter())

    def action_refresh(self) -> None:
        self.with_pane(None, lambda pane: pane.refresh_data())
        self.ensure_focus()

    def action_keys(self) -> None:
        from .keys import KeysScreen

        self.push_screen(KeysScreen())

    async def action_quit(self) -> None:
        """Quit; while a worker started here (`w`) runs, ask first whether to stop it."""
        bg = self.background
        if not bg.running():
            self.exit()
            return
        from .keys import QuitScreen

        def chosen(choice: str | None) -> None:
            if choice == "leave":
                log = bg.log_path
                self.left_running = (f"styler tui: the worker pid {bg.release()} is still running"
                                     + (f"; its log: {log}" if log else ""))
                self.exit()
            elif choice == "stop":
                self.exit()  # on_unmount stops it

        self.push_screen(QuitScreen(bg.pid, bg.log_path), chosen)

    # -- Back ---------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "back":
            return bool(self.history)  # listed only once a link was followed
        return True

    def action_back(self) -> None:
        """Return to the tab and the widget (a link list, a table row) the last link was followed from."""
        if not self.history:
            return
        place = self.history.pop()
        self.refresh_bindings()
        tabs = self.query_one(TabbedContent)
        if tabs.active == f"tab-{place.tab}":
            if place.widget is not None and place.widget.is_attached:
                place.widget.focus()
            return
        self.set_focus(None)  # see action_show_tab
        self.focus_on_show, self.restore_focus = place.tab, place.widget
        tabs.active = f"tab-{place.tab}"

    # -- app-wide messages --------------------------------------------------------------------------
    def on_navigate(self, message: Navigate) -> None:
        self.history = [*self.history, Place(self.active_tab, self.focused)][-self.HISTORY:]
        self.refresh_bindings()
        self.set_focus(None)  # see action_show_tab; select_record focuses the target row
        self.query_one(TabbedContent).active = f"tab-{message.tab}"
        self.with_pane(message.tab, lambda pane: pane.select_record(message.target))
        self.call_after_refresh(self.ensure_focus)  # a target that is gone leaves focus on the table

    def on_jobs_changed(self, message: JobsChanged) -> None:
        self.with_pane("queue", lambda pane: pane.poll_jobs())

    def on_worker_failed(self, message: WorkerFailed) -> None:
        """Every failed background read or write ends up here: one error notification, no crash."""
        self.notify(message.text, title="error", severity="error", timeout=10, markup=False)

    def on_unmount(self) -> None:
        self.background.stop()


def run(home: str | os.PathLike | None = None) -> None:
    """Run the dashboard in this terminal until the user quits.

    The background worker stops with the app: on quit, on a crash, and when the terminal goes
    away (SIGHUP) or the app is told to stop (SIGTERM)."""
    import signal

    app = StylerApp(home)

    def on_signal(signum, frame) -> None:
        app.background.stop()
        app.exit(return_code=128 + signum)

    wanted = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {s: signal.signal(s, on_signal) for s in wanted}
    try:
        app.run()
    finally:
        app.background.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if app.left_running:
        import sys

        print(app.left_running, file=sys.stderr)
