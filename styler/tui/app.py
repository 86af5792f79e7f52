"""The dashboard app: six tabs over the registry, keys to move between them, one error handler.

Start it with `styler tui` (or `run()`). Registry reads happen in thread workers inside the
panes; this module imports no torch, and the first frame is drawn before any data is read.
"""

from __future__ import annotations

import os
from pathlib import Path

from registry import styler_home
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.lazy import Lazy
from textual.widgets import Footer, Header, TabbedContent, TabPane

from .background import BackgroundWorker
from .messages import JobsChanged, Navigate, WorkerFailed
from .panes.adapters import AdaptersPane
from .panes.base import RegistryPane
from .panes.datasets import DatasetsPane
from .panes.outputs import OutputsPane
from .panes.queue import QueuePane
from .panes.runs import RunsPane
from .panes.scores import ScoresPane

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
    BINDINGS = [
        *(Binding(str(i), f"show_tab('{tab}')", title, show=False) for i, (tab, title, _) in enumerate(TABS, 1)),
        Binding("slash", "focus_filter", "filter", key_display="/"),
        Binding("r", "refresh", "refresh"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, home: str | os.PathLike | None = None, *, worker_command: list[str] | None = None):
        super().__init__()
        self.home = Path(home).expanduser().resolve() if home is not None else styler_home()
        self.background = BackgroundWorker(self.home, worker_command)
        self.focus_on_show: str | None = None
        self.sub_title = str(self.home)

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="tab-datasets", id="tabs"):
            for i, (tab, title, pane_cls) in enumerate(TABS):
                with TabPane(f"{i + 1} {title}", id=f"tab-{tab}"):
                    # the hidden tabs mount just after the first frame, so it comes sooner
                    yield pane_cls(id=tab) if i == 0 else Lazy(pane_cls(id=tab))
        yield Footer()

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

    def action_focus_filter(self) -> None:
        self.with_pane(None, lambda pane: pane.focus_filter())

    def action_refresh(self) -> None:
        self.with_pane(None, lambda pane: pane.refresh_data())

    # -- app-wide messages --------------------------------------------------------------------------
    def on_navigate(self, message: Navigate) -> None:
        self.set_focus(None)  # see action_show_tab; select_record focuses the target row
        self.query_one(TabbedContent).active = f"tab-{message.tab}"
        self.with_pane(message.tab, lambda pane: pane.select_record(message.target))

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
